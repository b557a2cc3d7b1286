"""`lowdim report`: the table and figure comparing a train-sgd run with its subspace runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..jobs.comparison import collect_runs, format_table, plot_comparison

HELP = "compare a train-sgd run with the subspace runs made from it (table and figure)"


def add_parser(sub) -> None:
    p = sub.add_parser("report", help=HELP, description=HELP)
    p.add_argument("--save-dir", required=True, metavar="DIR", help="the train-sgd run")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    runs = collect_runs(args.save_dir)
    print(format_table(runs))
    figure = Path(args.save_dir) / "comparison.png"
    plot_comparison(runs, figure)
    print(f"figure: {figure}")
