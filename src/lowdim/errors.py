"""The one exception lowdim raises for bad input.

The command line turns a `LowdimError` into a single line on stderr and exit status 2, so its
message must name the bad value and say what would be valid, in one line.

A message names other arguments through `arg`: "pass {arg('data_dir')}, or
{arg('download', True)}" reads "pass data_dir, or download=True" from the library (`str(e)`)
and "pass --data-dir, or --download" from the command line (`e.for_cli()`, which is given the
command's own flags). `arg` marks the reference with control characters, which no value's
repr() holds (repr escapes them), so a message may quote any value next to its references.
"""

import json
import math
import re
from collections.abc import Callable

_OPEN, _CLOSE = "\x02", "\x03"  # around a reference: "\x02name\x03" or "\x02name=<json>\x03"
_REFERENCE = re.compile("\x02([A-Za-z_][A-Za-z0-9_]*)(?:=([^\x02\x03]*))?\x03")

# How a reference is written: spell(name) or spell(name, value).
Spelling = Callable[..., str]


def arg(name: str, *value: object) -> str:
    """A reference to argument `name` (set to `value`, if given) inside a message, written as
    `name` or `name=value` by the library and as the option by the command line."""
    if not value:
        return f"{_OPEN}{name}{_CLOSE}"
    (v,) = value  # JSON escapes control characters, so the marks stay unambiguous
    return f"{_OPEN}{name}={json.dumps(v, default=str)}{_CLOSE}"


def python_name(name: str, *value: object) -> str:
    """A reference as the library writes it: "data_dir", "download=True"."""
    return f"{name}={value[0]!r}" if value else name


def flag(name: str, *value: object, option: str | None = None, on: object = True) -> str:
    """A reference as the command line writes it: "--data-dir", "--arch mlp", and for a switch
    (a bool) "--download", or "without --download" for its other value. `option` (default: the name
    with dashes) and `on` (the value the switch sets) are the command's own, where they differ."""
    option = option or "--" + name.replace("_", "-")
    if not value:
        return option
    (v,) = value
    if isinstance(v, bool) or v is None:
        return option if v == on else f"without {option}"
    if isinstance(v, (list, tuple)):
        return f"{option} {','.join(map(str, v)) or repr('')}"
    return f"{option} {v}"


def render(message: str, spell: Spelling) -> str:
    """`message` with each `arg` reference written by `spell`."""

    def one(m: re.Match) -> str:
        return spell(m[1]) if m[2] is None else spell(m[1], json.loads(m[2]))

    return _REFERENCE.sub(one, message)


class LowdimError(ValueError):
    """Bad input from the user: a value, a file or a folder that lowdim cannot use.

    `str(e)` names arguments as Python does; `e.for_cli()` as the command line does (see `arg`).
    """

    def __init__(self, message: str = "") -> None:
        message = str(message)
        super().__init__(render(message, python_name))
        self.marked = message

    def for_cli(self, spell: Spelling = flag) -> str:
        """The message with every argument written as the command line's option."""
        return render(self.marked, spell)


class BadArgument(LowdimError):
    """A bad value of a named Python argument: "lr must be positive and finite, got -1".

    The library speaks its Python argument names; the command line, which knows its own flags,
    prints `as_flag()` instead ("--lr must be positive and finite, got -1").
    """

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{arg(argument)} {problem}")
        self.argument = argument
        self.problem = render(problem, python_name)

    def as_flag(self) -> str:
        """The message with the argument written as the command line's flag."""
        return self.for_cli()


def check_finite(**options: float | None) -> None:
    """One-line errors for options that are NaN or infinite (None means "the default")."""
    for name, value in options.items():
        if value is not None and not math.isfinite(value):
            raise BadArgument(name, f"must be a finite number, got {value}")


def check_seed(seed: int, name: str = "seed") -> None:
    """Seeds are integers in [0, 2^63): torch maps a negative seed onto a large positive one,
    so -1 and 2^64 - 1 would silently give the same run."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise BadArgument(name, f"must be an integer in [0, 2^63), got {seed}")


def is_int(value: object, low: int | None = None) -> bool:
    """An integer as JSON gives it back (not a bool), and >= `low` if given."""
    return isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low)


def is_number(value: object) -> bool:
    """An int or a float as JSON gives it back (not a bool; NaN and inf included)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
