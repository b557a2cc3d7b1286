"""The `lowdim` command. Thin: it parses options and calls the library.

Bad input (a `LowdimError`, or an OSError naming a file) becomes one line on stderr and exit
status 2, never a traceback. Anything else is a bug in lowdim: one line naming the command and
the exception, status 1, and the traceback with `--debug` or LOWDIM_DEBUG=1 (which the test
suite sets, so tests still see real bugs in full).
"""

from __future__ import annotations

import os
import sys
import warnings

from .. import distributed
from ..errors import LowdimError
from . import finetune, intrinsic_dim, report, train_rbd, train_sgd, train_subspace, verify
from .options import Parser, flag_spelling, normalise_option_names

COMMANDS = (train_sgd, train_subspace, report, intrinsic_dim, train_rbd, finetune, verify)


def build_parser() -> Parser:
    parser = Parser(prog="lowdim", description="Train neural networks in tiny subspaces.")
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of an unexpected error (or set LOWDIM_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    # an error names arguments as the command's own options (`lowdim.errors.arg`)
    for command_parser in sub.choices.values():
        command_parser.set_defaults(spell_flag=flag_spelling(command_parser))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = normalise_option_names(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)

    def one_line_warning(message, *_args, **_kwargs) -> None:
        if distributed.is_main():
            print(f"lowdim {args.command}: warning: {message}", file=sys.stderr)

    try:
        # a library warning (e.g. a batch larger than the training set) is one line, as an
        # error is
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            args.run(args)
        distributed.teardown()
    except LowdimError as e:
        # Every process makes the same checks: one of them says so.
        if distributed.is_main():
            message = e.for_cli(args.spell_flag)
            print(f"lowdim {args.command}: error: {_one_line(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lowdim {args.command}: interrupted; continue with --resume", file=sys.stderr)
        return 130
    except OSError as e:  # a file or folder the system refused: bad input, not a bug
        where = f"{e.filename}: " if e.filename else ""
        print(f"lowdim {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:
        if debug_wanted(args):
            raise
        print(
            f"lowdim {args.command}: internal error: {type(e).__name__}: {_one_line(e)} "
            "(a bug in lowdim; run again with --debug or LOWDIM_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


def debug_wanted(args) -> bool:
    """--debug, or LOWDIM_DEBUG set to anything but "" or "0"."""
    return args.debug or os.environ.get("LOWDIM_DEBUG", "0") not in ("", "0")


def _one_line(message: BaseException | str) -> str:
    """The message (an exception's, or a text) on one line: a message that spans lines is
    joined, and cut if long."""
    text = " ".join(str(message).split())
    return text if len(text) <= 400 else text[:397] + "..."


def _version() -> str:
    from ..jobs.rundir import version

    return f"lowdim {version()}"
