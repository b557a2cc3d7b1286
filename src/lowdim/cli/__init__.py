"""The `lowdim` command. Thin: it parses options and calls the library.

Bad input (a `LowdimError`) becomes one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys

from .. import distributed
from ..errors import LowdimError
from . import intrinsic, rbd, report, train_sgd, train_subspace
from .common import Parser, normalise_option_names

COMMANDS = (train_sgd, train_subspace, report, intrinsic, rbd)


def build_parser() -> Parser:
    parser = Parser(prog="lowdim", description="Train neural networks in tiny subspaces.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = normalise_option_names(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
        distributed.teardown()
    except LowdimError as e:
        # Every process makes the same checks: one of them says so.
        if distributed.is_main():
            print(f"lowdim {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lowdim {args.command}: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


def _version() -> str:
    from ..rundir import version

    return f"lowdim {version()}"
