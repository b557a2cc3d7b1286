"""The one exception lowdim raises for bad input.

The command line turns a `LowdimError` into a single line on stderr and exit status 2, so its
message must name the bad value and say what would be valid, in one line.
"""

import math


class LowdimError(ValueError):
    """Bad input from the user: a value, a file or a folder that lowdim cannot use."""


class BadArgument(LowdimError):
    """A bad value of a named Python argument: "lr must be positive and finite, got -1".

    The library speaks its Python argument names; the command line, which knows its own flags,
    prints `as_flag()` instead ("--lr must be positive and finite, got -1").
    """

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument} {problem}")
        self.argument = argument
        self.problem = problem

    def as_flag(self) -> str:
        """The message with the argument written as the command line's flag."""
        return f"--{self.argument.replace('_', '-')} {self.problem}"


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
