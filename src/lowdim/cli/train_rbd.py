"""`lowdim rbd`: random bases descent (a fresh random subspace every step)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..jobs.random_bases import COMPARTMENT_RULES, SPLITS, RBDConfig, train_rbd
from ..optim.rbd import DISTRIBUTIONS, MODES, NORMALISATIONS
from .options import (
    add_data_options,
    add_model_options,
    add_session_options,
    finite_float,
    print_result,
)

HELP = "train with random bases descent: d fresh random directions every step"


def add_parser(sub) -> None:
    d = RBDConfig()
    p = sub.add_parser("rbd", help=HELP, description=HELP)
    add_data_options(p, dataset=d.dataset, labels=False)
    add_model_options(p, arch=d.arch)
    p.add_argument("--dim", type=int, default=d.dim, help="directions per step")
    p.add_argument(
        "--compartments",
        default=d.compartments,
        help=f"independent bases per block: {', '.join(COMPARTMENT_RULES)} (default: none)",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=d.chunk_size,
        help="parameters per block with --compartments chunk",
    )
    p.add_argument(
        "--split",
        default=d.split,
        help=f"d over the blocks, one of: {', '.join(SPLITS)} (default: size, in proportion to "
        "their sizes; each: d per block)",
    )
    p.add_argument(
        "--distribution",
        default=d.distribution,
        help=f"one of: {', '.join(DISTRIBUTIONS)} (default: hadamard, structured directions at "
        "the cost of two transforms per step; gaussian: the paper's, drawn entry by entry)",
    )
    p.add_argument(
        "--normalise",
        default=d.normalise,
        help=f"one of: {', '.join(NORMALISATIONS)} (default: sqrt, i.e. / sqrt(D))",
    )
    p.add_argument(
        "--fixed-basis",
        action="store_true",
        help="draw the basis once: the fixed random projection baseline",
    )
    p.add_argument(
        "--mode",
        default=d.mode,
        help=f"under torchrun, one of: {', '.join(MODES)}: own directions per worker, or one "
        "basis shared by all",
    )
    p.add_argument(
        "--keep-directions",
        action="store_true",
        help="hold a step's directions in memory (d x D floats) instead of regenerating them "
        "(chunked distributions: gaussian, uniform, rademacher)",
    )
    p.add_argument(
        "--shift",
        type=int,
        default=d.shift,
        metavar="PIXELS",
        help="augment the training images with random shifts of up to PIXELS (default 0: none)",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training data")
    p.add_argument("--lr", type=finite_float, default=d.lr, help="learning rate")
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help="examples per step, per process"
    )
    p.add_argument(
        "--seed", type=int, default=d.seed, help="seed of the weights, data order and directions"
    )
    p.add_argument("--save-dir", required=True, metavar="DIR", help="folder for this run's files")
    add_session_options(p.add_argument_group("run"))
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    given = {f.name: getattr(args, f.name) for f in fields(RBDConfig) if hasattr(args, f.name)}
    summary = train_rbd(
        RBDConfig(**given),
        args.save_dir,
        resume=args.resume,
        progress=not args.quiet,
        checkpoint_every=args.checkpoint_every,
    )
    print_result(summary, args.save_dir)
