"""`lowdim intrinsic-dim`, `lowdim compress` and `lowdim evaluate`."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import fields
from pathlib import Path

from ..bases.random import RANDOM_KINDS
from ..compress import read_subspace
from ..compress_zoo import load_subspace_model
from ..data import load_dataset
from ..errors import LowdimError
from ..jobs.finetune import task_data
from ..jobs.intrinsic import IntrinsicConfig, measure_intrinsic_dim
from ..train import evaluate
from .finetune import add_text_task_options
from .options import (
    DATA_DIR_HELP,
    add_data_options,
    add_model_options,
    add_session_options,
    finite_float,
    int_list,
)

HELP = "measure the intrinsic dimension: the smallest random subspace reaching 90% accuracy"


def add_parser(sub) -> None:
    """`intrinsic-dim`, `compress` and `evaluate`."""
    _add_sweep_parser(sub)
    _add_compress_parser(sub)
    _add_evaluate_parser(sub)


def _add_sweep_parser(sub) -> None:
    d = IntrinsicConfig()
    # argparse reads a help text as a %-format: the one % is doubled there, not in the description
    p = sub.add_parser("intrinsic-dim", help=HELP.replace("%", "%%"), description=HELP)
    add_data_options(p, dataset=d.dataset, labels=False)
    add_model_options(p, arch=d.arch)
    add_text_task_options(p, model_required=False)
    _add_subspace_options(p, d)
    _add_protocol_options(p, d)
    p.add_argument("--save-dir", required=True, metavar="DIR", help="folder for the sweep's files")
    add_session_options(p.add_argument_group("run"))
    p.set_defaults(run=run)


def _add_subspace_options(p: argparse.ArgumentParser, d: IntrinsicConfig) -> None:
    """Which subspaces the sweep trains: the projection, the dims or the search, the seeds."""
    p.add_argument("--projection", default=d.projection, help=f"one of: {', '.join(RANDOM_KINDS)}")
    p.add_argument(
        "--per-layer",
        action="store_true",
        help="one projection per layer, d split in proportion to layer sizes",
    )
    p.add_argument(
        "--dims", type=int_list, default=[], metavar="D1,D2", help="subspace dimensions to train"
    )
    p.add_argument(
        "--search",
        action="store_true",
        help="find d_int90 by doubling from --search-min, then bisection",
    )
    p.add_argument(
        "--search-min", type=int, default=d.search_min, help="the first d that --search tries"
    )
    p.add_argument(
        "--search-max",
        type=int,
        default=None,
        help="the largest d that --search tries (default: D, the number of parameters)",
    )
    p.add_argument(
        "--layer-scales",
        choices=("param", "layer"),
        default=None,
        help="SAID: a learned scale per parameter tensor or per layer, counted in d "
        "(default: none, DID)",
    )
    p.add_argument(
        "--direct",
        nargs="*",
        default=[],
        metavar="PATTERN",
        help="parameters (glob patterns of names) trained directly beside the subspace "
        "(default: none)",
    )
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds per d")
    p.add_argument("--seed", type=int, default=d.seed, help="first seed")


def _add_protocol_options(p: argparse.ArgumentParser, d: IntrinsicConfig) -> None:
    """How every run of the sweep trains: epochs, Adam's rates, L2, batch size."""
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help="passes over the training data, per run"
    )
    p.add_argument(
        "--lr",
        type=finite_float,
        default=None,
        help="Adam's lr for the subspace runs (default: 1e-3, or 0.1 on training sets "
        "under 10,000 examples)",
    )
    p.add_argument(
        "--baseline-lr",
        type=finite_float,
        default=d.baseline_lr,
        help="Adam's lr for the direct baseline",
    )
    p.add_argument("--beta2", type=finite_float, default=d.beta2, help="Adam's beta2")
    p.add_argument(
        "--l2",
        type=finite_float,
        default=d.l2,
        help="L2 on the full weights, 0.5 * l2 * ||theta||^2",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")


def _add_compress_parser(sub) -> None:
    p = sub.add_parser(
        "compress",
        help="write one trained point of an intrinsic-dim run as (architecture, seeds, d numbers)",
    )
    p.add_argument("--save-dir", required=True, help="the intrinsic-dim run")
    p.add_argument("--dim", type=int, required=True, help="the subspace dimension d of the point")
    p.add_argument("--seed", type=int, default=0, help="the seed of the point")
    p.add_argument("--out", required=True, help="the compressed file to write")
    p.set_defaults(run=run_compress)


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="rebuild a compressed model and evaluate it")
    p.add_argument("file", help="a compressed model written by `lowdim compress`")
    p.add_argument("--data-dir", default=None, metavar="DIR", help=DATA_DIR_HELP)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.set_defaults(run=run_evaluate)


def run(args: argparse.Namespace) -> None:
    given = {
        f.name: getattr(args, f.name) for f in fields(IntrinsicConfig) if hasattr(args, f.name)
    }
    model = data = None
    if args.model is not None:  # a pretrained model fine-tuned on a text task
        model, data = task_data(
            args.model, args.task, train=args.train, test=args.test,
            validation=args.validation, max_length=args.max_length, seed=args.seed,
        )  # fmt: skip
    summary = measure_intrinsic_dim(
        IntrinsicConfig(**given),
        args.save_dir,
        resume=args.resume,
        progress=not args.quiet,
        checkpoint_every=args.checkpoint_every,
        data=data,
        model=model,
    )
    print(
        f"intrinsic-dim: {summary['arch']} on {summary['dataset']}, "
        f"{summary['protocol']['projection']}: baseline {summary['baseline_acc']:.4f}, "
        f"d_int90 = {summary['d_int90']}  -> {args.save_dir}"
    )


def run_compress(args: argparse.Namespace) -> None:
    src = Path(args.save_dir) / "points" / f"d{args.dim}-s{args.seed}" / "subspace.safetensors"
    if not src.exists():
        raise LowdimError(f"no trained point d={args.dim}, seed={args.seed} in {args.save_dir}")
    read_subspace(src)
    shutil.copyfile(src, args.out)
    full = (Path(args.save_dir) / "baseline" / "model.safetensors").stat().st_size
    size = Path(args.out).stat().st_size
    print(
        f"compressed: {size:,} bytes against {full:,} bytes for the full model.safetensors "
        f"({full / size:.0f}x smaller) -> {args.out}"
    )


def run_evaluate(args: argparse.Namespace) -> None:
    model, meta = load_subspace_model(args.file, device=args.device)
    data = load_dataset(meta["dataset"], data_dir=args.data_dir)
    loss, acc = evaluate(model, data.test.to(args.device), device=args.device)
    print(
        f"evaluate: {meta['arch']} on {meta['dataset']}: test_acc {acc:.4f}  "
        f"test_loss {loss:.4f}  (when saved: {meta['test_acc']})"
    )
