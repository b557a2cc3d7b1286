"""`lowdim train-psgd`, `lowdim train-pbfgs` (DLDR) and `lowdim twa` (trainable weight
averaging): subspace training on a train-sgd run."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..jobs.subspace import train_in_subspace
from ..jobs.subspace_config import DEFAULTS, SubspaceConfig
from ..train.builders import SCHEDULES
from .options import add_session_options, finite_float, int_list, print_result

HELP = {
    "psgd": "train in the PCA subspace of a train-sgd run's trajectory with projected SGD",
    "pbfgs": "train in the PCA subspace of a train-sgd run's trajectory with projected BFGS",
    "twa": "trainable weight averaging: train in the span of a train-sgd run's checkpoints, "
    "starting from their average (reports the SWA baseline too)",
}


def add_parser(sub) -> None:
    for method in ("psgd", "pbfgs", "twa"):
        _add(sub, method)


def _add(sub, method: str) -> None:
    d, m = SubspaceConfig(), DEFAULTS[method]
    command = "twa" if method == "twa" else f"train-{method}"
    p = sub.add_parser(command, help=HELP[method], description=HELP[method])
    p.add_argument(
        "--save-dir",
        required=True,
        metavar="DIR",
        help=f"the train-sgd run; results go to DIR/{method}/ (or DIR/NAME/)",
    )
    p.add_argument("--name", default=None, help=f"this run's folder inside DIR (default: {method})")
    g = p.add_argument_group("subspace")
    g.add_argument(
        "--params-start",
        type=int,
        default=d.params_start,
        help="first snapshot of the window"
        + (" (default: 0)" if method == "twa" else ", and the starting point (default: 0)"),
    )
    g.add_argument(
        "--params-end",
        type=int,
        default=None,
        help="end of the window, exclusive (default: all snapshots)",
    )
    g.add_argument(
        "--params-stride",
        type=int,
        default=d.params_stride,
        metavar="N",
        help="use every N-th snapshot of the window",
    )
    if method != "twa":
        g.add_argument(
            "--n-components",
            type=int,
            default=d.n_components,
            help=f"subspace dimension d (default: {d.n_components})",
        )
    g = p.add_argument_group("training")
    g.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"passes over the training data (default: {m['epochs']})",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"examples per step (default: {m['batch_size']}"
        + (", at most an eighth of the training set)" if method == "pbfgs" else ")"),
    )
    g.add_argument(
        "--accumulate",
        type=int,
        default=1,
        help="accumulate gradients over this many batches per step",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the minibatch order")
    g.add_argument(
        "--fit-on",
        default=d.fit_on,
        help="train (the examples the train-sgd run trained on) or holdout (those its "
        "--holdout set aside; TWA-v)",
    )
    g.add_argument(
        "--no-bn-recompute",
        dest="bn_recompute",
        action="store_false",
        help="keep BatchNorm statistics as training left them (default: recompute "
        "them over the training data at the start and the end)",
    )
    if method in ("psgd", "twa"):
        g.add_argument(
            "--lr", type=finite_float, default=None, help=f"learning rate (default: {m['lr']})"
        )
        g.add_argument(
            "--momentum",
            type=finite_float,
            default=d.momentum,
            help="heavy-ball momentum in the subspace",
        )
        g.add_argument(
            "--weight-decay",
            type=finite_float,
            default=None,
            help=f"L2 on the weights, projected into the subspace (default: {m['weight_decay']:g})",
        )
        g.add_argument(
            "--schedule",
            default=None,
            help=f"lr schedule per epoch, one of: {', '.join(SCHEDULES)} (default: multistep"
            + ("; cosine with 20%% warm-up for --variant journal)" if method == "twa" else ")"),
        )
        if method == "twa":
            g.add_argument(
                "--variant",
                default=d.variant,
                help="iclr (orthonormal span, projected SGD) or journal (per-layer "
                "coefficients on the deviations from the mean, projected AdamW, lr 0.01)",
            )
        marks = "50%% and 75%%" if method == "twa" else "75%%"
        g.add_argument(
            "--lr-milestones",
            type=int_list,
            default=None,
            metavar="E1,E2",
            help=f"multistep: epochs after which lr x0.1 (default: at {marks} of --epochs)",
        )
    else:
        g.add_argument(
            "--lr",
            type=finite_float,
            default=None,
            help=f"first trial step of the line search (default: {m['lr']})",
        )
        g.add_argument("--sigma", type=finite_float, default=d.sigma, help="Armijo constant")
        g.add_argument(
            "--shrink",
            type=finite_float,
            default=d.shrink,
            help="step factor between trials",
        )
        g.add_argument(
            "--max-tries", type=int, default=d.max_tries, help="line-search trials per step"
        )
        g.add_argument(
            "--reset-every-epoch",
            action="store_true",
            help="reset the inverse Hessian to the identity at each epoch",
        )
        g.add_argument(
            "--residual-alpha",
            type=finite_float,
            default=d.residual_alpha,
            help="residual momentum step on the out-of-subspace gradient, 0 for none",
        )
        g.add_argument(
            "--residual-gamma",
            type=finite_float,
            default=d.residual_gamma,
            help="residual momentum decay",
        )
    g = p.add_argument_group("run")
    g.add_argument(
        "--shard-basis",
        action="store_true",
        help="under torchrun, each process holds only its 1/R slice of the basis (along the "
        "parameters); no basis file is written",
    )
    add_session_options(g)
    p.set_defaults(run=run, method=method)


def run(args: argparse.Namespace) -> None:
    given = {f.name: getattr(args, f.name) for f in fields(SubspaceConfig) if hasattr(args, f.name)}
    summary = train_in_subspace(
        args.save_dir,
        SubspaceConfig(**given),
        resume=args.resume,
        progress=not args.quiet,
        name=args.name,
        checkpoint_every=args.checkpoint_every,
    )
    print_result(summary, f"{args.save_dir}/{args.name or args.method}")
