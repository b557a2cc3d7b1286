"""`lowdim verify`: check a run folder's files and say which are damaged."""

from __future__ import annotations

import argparse

from ..errors import LowdimError
from ..jobs.integrity import verify_run

HELP = "check every file of a run folder (and the runs inside it) and name what is damaged"


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help=HELP, description=HELP)
    p.add_argument("--save-dir", required=True, metavar="DIR", help="the run folder to check")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    findings = verify_run(args.save_dir)
    for f in findings:
        problem = f.error.for_cli(args.spell_flag) if f.error else f.problem
        print(f"{'ok     ' if f.ok else 'DAMAGED'}  {f.path}" + ("" if f.ok else f": {problem}"))
    damaged = [f for f in findings if not f.ok]
    if damaged:
        raise LowdimError(
            f"{len(damaged)} of {len(findings)} files in {args.save_dir} are damaged "
            f"(first: {damaged[0].path})"
        )
    print(f"all {len(findings)} files in {args.save_dir} are sound")
