"""What every `lowdim` subcommand shares: one-line errors, list options, data and run options."""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

from ..data import DATASETS
from ..errors import Spelling, flag
from ..models import available_archs


class HelpFormatter(argparse.HelpFormatter):
    """Every option that takes a value shows its default: " (default: 0.05)" is appended to its
    help unless the help already says "(default: ...)" (as an option whose default is None, or
    computed, must, in words), or the option is required. Flags are off unless given, and show
    nothing. A list default shows as "10,15", an empty one as "none"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if (
            not text
            or "(default: " in text
            or not action.option_strings
            or action.required
            or action.nargs == 0
            or action.default is None
            or action.default is argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: {_shown(action.default)})"


def _shown(value: object) -> str:
    """A default as the command line spells it, %-escaped for argparse."""
    if isinstance(value, (list, tuple)):
        text = ",".join(map(str, value)) or "none"
    else:
        text = str(value)
    return text.replace("%", "%%")


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr and exit status 2 (no usage dump),
    and whose help shows every option's default (`HelpFormatter`); its subcommands' parsers are
    `Parser`s too."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def int_list(text: str) -> list[int]:
    """`"10,15"` -> [10, 15]; an empty string is an empty list."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def finite_float(text: str) -> float:
    """A float option: a finite number (argparse's `float` takes "nan" and "inf")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def flag_spelling(parser: argparse.ArgumentParser) -> Spelling:
    """How `parser`'s command writes an argument an error names (`lowdim.errors.arg`): as its
    option for that destination ("--no-bn-recompute" for bn_recompute, a switch that sets
    False), else as the name with dashes."""
    # argparse lists a parser's actions only in its private _actions
    options = {a.dest: a for a in parser._actions if a.option_strings}

    def spell(name: str, *value: object) -> str:
        action = options.get(name)
        if action is None:
            return flag(name, *value)
        on = action.const if action.nargs == 0 else True
        return flag(name, *value, option=action.option_strings[0], on=on)

    return spell


def normalise_option_names(argv: list[str]) -> list[str]:
    """Accept `--params_start` for `--params-start` (the spelling of the papers' scripts)."""
    out = []
    for arg in argv:
        if arg.startswith("--") and "_" in arg.split("=", 1)[0]:
            name, sep, value = arg.partition("=")
            arg = name.replace("_", "-") + sep + value
        out.append(arg)
    return out


# The help of the options several commands define, each with its own default.
DATASET_HELP = f"one of: {', '.join(DATASETS)}"
DATA_DIR_HELP = (
    "folder searched first for the dataset files (default: none; then $LOWDIM_DATA, the "
    "system's copies and ~/.cache/lowdim)"
)
HIDDEN_HELP = "hidden widths of --arch mlp (default: 200,200)"


def arch_help() -> str:
    return f"one of: {', '.join(available_archs())}"


def add_data_options(
    p: argparse.ArgumentParser, *, dataset: str = "digits", labels: bool = True
) -> None:
    """--dataset (default `dataset`), --data-dir and, with `labels`, --download and --corrupt."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=dataset, metavar="NAME", help=DATASET_HELP)
    g.add_argument("--data-dir", default=None, metavar="DIR", help=DATA_DIR_HELP)
    if not labels:
        return
    g.add_argument(
        "--download",
        action="store_true",
        help="download the canonical files if they are not found (needs internet)",
    )
    g.add_argument(
        "--corrupt",
        type=finite_float,
        default=0.0,
        metavar="C",
        help="fraction of training labels replaced by uniform draws, in [0, 1]",
    )


def add_model_options(p: argparse.ArgumentParser, *, arch: str = "mlp") -> None:
    """--arch (default `arch`) and --hidden."""
    g = p.add_argument_group("model")
    g.add_argument("--arch", default=arch, metavar="NAME", help=arch_help())
    g.add_argument("--hidden", type=int_list, default=None, metavar="W1,W2", help=HIDDEN_HELP)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """--seed, --save-dir, --tensorboard, and the session options."""
    g = p.add_argument_group("run")
    g.add_argument(
        "--seed", type=int, default=0, help="seed of the weights, data order and label noise"
    )
    g.add_argument("--save-dir", required=True, metavar="DIR", help="folder for this run's files")
    g.add_argument("--tensorboard", action="store_true", help="also log to <save-dir>/tensorboard")
    add_session_options(g)


def add_session_options(g) -> None:
    """--resume, --device, --autocast, --quiet, --checkpoint-every: how a run is carried out
    (a resumed run must keep its --autocast: it changes the rounding)."""
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its last checkpoint (starts it if there is none)",
    )
    g.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)"
    )
    g.add_argument(
        "--autocast",
        choices=("bf16", "fp16"),
        default=None,
        help="run the forward passes in bfloat16, or in float16 with a dynamic loss scale; "
        "the weights and every subspace product stay float32 (default: off)",
    )
    g.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bars")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="also checkpoint every N optimiser steps inside an epoch, for large datasets "
        "(default: 0, only at the end of each epoch)",
    )


def print_result(summary: dict, save_dir: str) -> None:
    """The closing line of a run: the result and where the files are (rank 0 only)."""
    from .. import distributed

    if not distributed.is_main():
        return
    print(
        f"{summary['method']}: {summary['arch']} on {summary['dataset']}: "
        f"test_acc {summary['test_acc']:.4f}  test_loss {summary['test_loss']:.4f}  "
        f"dim {summary['subspace_dim']}/{summary['num_params']}  "
        f"{summary['wall_seconds']:.1f}s  -> {save_dir}",
        file=sys.stdout,
    )
