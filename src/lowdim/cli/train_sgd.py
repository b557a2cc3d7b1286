"""`lowdim train-sgd`: ordinary training that records the parameter trajectory."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..jobs.sampling import SGDConfig, train_sgd
from ..train import OPTIMIZERS, SCHEDULES
from .options import (
    add_data_options,
    add_model_options,
    add_run_options,
    finite_float,
    int_list,
    print_result,
)

HELP = "train with SGD while recording parameter snapshots (DLDR stage 1)"


def add_parser(sub) -> None:
    d = SGDConfig()
    p = sub.add_parser("train-sgd", help=HELP, description=HELP)
    add_data_options(p)
    add_model_options(p)
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training data")
    g.add_argument("--lr", type=finite_float, default=d.lr, help="learning rate")
    g.add_argument(
        "--momentum", type=finite_float, default=d.momentum, help="heavy-ball momentum of sgd"
    )
    g.add_argument(
        "--weight-decay",
        type=finite_float,
        default=d.weight_decay,
        help="L2 coefficient, decoupled for adamw",
    )
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer, help="the optimiser")
    g.add_argument(
        "--schedule", choices=SCHEDULES, default=d.schedule, help="lr schedule, per epoch"
    )
    g.add_argument(
        "--lr-milestones",
        type=int_list,
        default=[],
        metavar="E1,E2",
        help="epochs after which the lr is multiplied by --lr-gamma (default: none)",
    )
    g.add_argument(
        "--lr-gamma",
        type=finite_float,
        default=d.lr_gamma,
        help="factor on the lr at each of --lr-milestones",
    )
    g.add_argument(
        "--samples-per-epoch",
        type=int,
        default=d.samples_per_epoch,
        help="snapshots per epoch, besides the one at initialisation",
    )
    g.add_argument("--beta2", type=finite_float, default=d.beta2, help="beta2 of adam and adamw")
    g.add_argument(
        "--init-from",
        default=None,
        metavar="FILE",
        help="start from these weights (a model.safetensors or a run folder), to improve a "
        "trained model (default: none, a fresh initialisation)",
    )
    g.add_argument(
        "--holdout",
        type=finite_float,
        default=d.holdout,
        metavar="F",
        help="set aside this fraction of the training data, for `twa --fit-on holdout`",
    )
    add_run_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    cfg = SGDConfig(**{f.name: getattr(args, f.name) for f in fields(SGDConfig)})
    summary = train_sgd(
        cfg,
        args.save_dir,
        resume=args.resume,
        progress=not args.quiet,
        checkpoint_every=args.checkpoint_every,
    )
    print_result(summary, args.save_dir)
