"""The options of a subspace run (DLDR's P-SGD and P-BFGS, TWA) and their defaults.

Job layer: `SubspaceConfig` is what `lowdim train-psgd`, `train-pbfgs` and `twa` parse into and
what `lowdim.jobs.subspace.train_in_subspace` reads; `resolved` fills each None with the
method's default and checks every value before anything runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import BadArgument, check_finite, check_seed
from ..optim.optimizer import check_rates
from ..train.builders import SCHEDULES

METHODS = ("psgd", "pbfgs", "twa")
# The papers' settings on CIFAR: P-SGD lr 1, batch 128, 40 epochs, lr x0.1 at 75%;
# P-BFGS batch 1024, 20 epochs, first trial step 1; TWA lr 2, batch 128, 10 epochs, weight
# decay 1e-5, lr x0.1 at 50% and 75%.
DEFAULTS = {
    "psgd": {"lr": 1.0, "batch_size": 128, "epochs": 40, "weight_decay": 0.0},
    "pbfgs": {"lr": 1.0, "batch_size": 1024, "epochs": 20, "weight_decay": 0.0},
    "twa": {"lr": 2.0, "batch_size": 128, "epochs": 10, "weight_decay": 1e-5},
}
MILESTONES = {"psgd": (0.75,), "pbfgs": (), "twa": (0.5, 0.75)}  # fractions of the epochs
VARIANTS = ("iclr", "journal")  # TWA's: orthonormal span + P-SGD, or per-layer + AdamW
JOURNAL_LR = 0.01


@dataclass
class SubspaceConfig:
    """Options of a subspace run; None means the method's default (see `resolved`).

    Window: snapshots params_start, params_start + params_stride, ... < params_end (default:
    to the end of the trajectory). P-BFGS's batch size defaults to 1024, capped at an eighth of
    the training set so that an epoch has at least eight steps on small data. `n_components`
    is PCA's (TWA spans every checkpoint of the window). `schedule`: "multistep" (lr x0.1 at
    `lr_milestones`, default at 75% of the epochs for P-SGD, 50% and 75% for TWA), "cosine",
    "linear" (to 0 at the end) or "constant"; default multistep, or cosine with 20% warm-up
    for TWA's `variant` "journal" (per-layer coefficients on the checkpoints' deviations from
    their mean, trained by projected AdamW; default lr 0.01). `shard_basis`: under several
    processes, each extracts and holds only its 1/R slice of the basis along the parameters
    (see `lowdim.bases.sharded`); the basis file is then not written. `fit_on`: "train"
    (default: the examples the train-sgd run trained on) or "holdout" (the ones its
    `holdout` set aside: TWA-v). sigma, shrink, max_tries, reset_every_epoch and residual_*
    are P-BFGS's (see `lowdim.optim.PBFGS`); `bn_recompute` recomputes BatchNorm statistics
    at the start point and at the end (default True).
    """

    method: str = "pbfgs"
    params_start: int = 0
    params_end: int | None = None
    params_stride: int = 1
    n_components: int = 40
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str | None = None
    variant: str = "iclr"
    fit_on: str = "train"
    lr_milestones: list[int] | None = None
    sigma: float = 0.4
    shrink: float = 0.4
    max_tries: int = 20
    reset_every_epoch: bool = False
    residual_alpha: float = 0.0
    residual_gamma: float = 0.9
    accumulate: int = 1
    bn_recompute: bool = True
    shard_basis: bool = False
    seed: int = 0
    device: str | None = None
    autocast: str | None = None  # bf16 or fp16: the forward passes under autocast

    @property
    def journal(self) -> bool:
        """TWA's journal variant (per-layer deviations, projected AdamW)."""
        return self.method == "twa" and self.variant == "journal"

    def resolved(self, num_train: int) -> SubspaceConfig:
        """A copy with every None replaced by the method's default, every value checked."""
        self._check_names()
        d = DEFAULTS[self.method]
        out = SubspaceConfig(**asdict(self))
        out.epochs = d["epochs"] if self.epochs is None else self.epochs
        out.lr = (JOURNAL_LR if self.journal else d["lr"]) if self.lr is None else self.lr
        if self.schedule is None:
            out.schedule = "cosine" if self.journal else "multistep"
        out.weight_decay = d["weight_decay"] if self.weight_decay is None else self.weight_decay
        if self.batch_size is None:
            out.batch_size = d["batch_size"]
            if self.method == "pbfgs":
                out.batch_size = max(1, min(d["batch_size"], num_train // 8))
        if out.schedule != "multistep":
            out.lr_milestones = []
        elif self.lr_milestones is None:
            marks = {round(f * out.epochs) for f in MILESTONES[self.method]}
            out.lr_milestones = sorted(m for m in marks if 0 < m < out.epochs)
        out._check_values()
        return out

    def _check_names(self) -> None:
        if self.method not in METHODS:
            raise BadArgument("method", f"{self.method!r} is unknown; choose one of {METHODS}")
        if self.variant not in VARIANTS:
            raise BadArgument(
                "variant", f"{self.variant!r} is unknown; choose one of: {', '.join(VARIANTS)}"
            )
        if self.fit_on not in ("train", "holdout"):
            raise BadArgument("fit_on", f"{self.fit_on!r} is unknown; choose train or holdout")
        if self.journal and self.shard_basis:
            raise BadArgument("shard_basis", "works with PCA and TWA's iclr variant, not journal")

    def _check_values(self) -> None:
        check_rates(self.lr, self.weight_decay)
        check_finite(
            momentum=self.momentum,
            sigma=self.sigma,
            shrink=self.shrink,
            residual_alpha=self.residual_alpha,
            residual_gamma=self.residual_gamma,
        )
        check_seed(self.seed)
        for option in ("sigma", "shrink"):
            if not 0 < getattr(self, option) < 1:
                raise BadArgument(option, f"must lie in (0, 1), got {getattr(self, option)}")
        for option in ("max_tries", "epochs", "batch_size", "accumulate"):
            if getattr(self, option) < 1:
                raise BadArgument(option, f"must be >= 1, got {getattr(self, option)}")
        if not 0 <= self.momentum < 1:
            raise BadArgument("momentum", f"must be in [0, 1), got {self.momentum}")
        if self.schedule not in SCHEDULES:
            raise BadArgument(
                "schedule", f"{self.schedule!r} is unknown; choose one of: {', '.join(SCHEDULES)}"
            )
