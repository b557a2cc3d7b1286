"""What the jobs share: the device, the model and the training examples of a run.

Job layer: these helpers read a run's options (`SGDConfig`); the library below knows nothing
of them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import distributed
from ..data import DATASETS, Data, Split, load_dataset
from ..errors import BadArgument, LowdimError
from ..io import first_nonfinite, load_tensors
from ..models import available_archs, build_model
from ..seeding import generator

if TYPE_CHECKING:
    from .sampling import SGDConfig


def resolve_device(name: str | None) -> torch.device:
    """The device this process trains on: `name`, or CUDA when available and the CPU
    otherwise; a clear error for a bad name. Under torchrun it also joins the process group
    (see `lowdim.distributed.setup`; CUDA processes take cuda:LOCAL_RANK)."""
    if name is None:
        return distributed.setup(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadArgument("device", f"{name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadArgument("device", f"{name} asked for CUDA, but no CUDA device is available")
    return distributed.setup(device)


def holdout_split(train, fraction: float, seed: int):
    """(the examples SGD trains on, the held-out ones): a fraction `fraction` of the training
    split set aside by a permutation drawn from generator("holdout", seed), the same for the
    train-sgd run and for the subspace runs built on it (TWA-v fits its coefficients on the
    held-out part). Both are the whole split, and an empty one, when `fraction` is 0."""
    if fraction == 0:
        return train, None
    if not isinstance(train, Split):
        raise BadArgument("holdout", "needs a dataset held in memory (not a streamed one)")
    order = torch.randperm(len(train), generator=generator("holdout", seed))
    held = max(1, round(fraction * len(train)))
    if held >= len(train):
        raise BadArgument("holdout", f"{fraction} leaves no training examples")
    keep, out = order[:-held].sort().values, order[-held:].sort().values
    return train.subset(keep), train.subset(out)


def model_for(cfg: SGDConfig, data: Data, device: torch.device) -> torch.nn.Module:
    """The run's model, initialised from `cfg.seed` (or loaded from `cfg.init_from`), on
    `device`."""
    options = {"hidden": tuple(cfg.hidden)} if cfg.hidden else {}
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, data.input_shape, data.num_classes, **options)
    if cfg.init_from:
        load_weights(model, cfg.init_from)
    return model.to(device)


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a `model.safetensors` (or the one in a run folder) into `model`, strictly."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise BadArgument("init_from", f"{path}: no such file (give a model.safetensors or a run)")
    try:
        state = load_tensors(path)
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise BadArgument("init_from", f"{path} is not a safetensors file ({e})") from None
    if (name := first_nonfinite(state)) is not None:
        raise BadArgument(
            "init_from",
            f"{path}: tensor {name!r} holds NaN or inf values (saved from a "
            "diverged run?); start from other weights",
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise BadArgument("init_from", f"{path} does not fit the architecture: {first}") from None


def labels_digest(labels: torch.Tensor) -> str:
    """sha256 of the training labels, so later stages can check they see the same noisy ones."""
    return hashlib.sha256(labels.cpu().numpy().tobytes()).hexdigest()


def arch_of(model: torch.nn.Module | None, zoo_arch: str) -> str:
    """The arch a run records: the zoo's name `zoo_arch`, a Hugging Face model's name or folder
    (its `name_or_path`), or else a user module's class name."""
    if model is None:
        return zoo_arch
    name = getattr(model, "name_or_path", None)
    return name if isinstance(name, str) and name else type(model).__name__


def data_for(cfg: SGDConfig, data: Data | None, sgd_dir: Path) -> Data:
    """The data a later stage trains on: `data` as given, else the train-sgd run's dataset
    reloaded by name (a run on a user's own data needs it given again)."""
    if data is not None:
        return data
    if cfg.dataset not in DATASETS:
        raise LowdimError(
            f"the run in {sgd_dir} trained on your own data {cfg.dataset!r}: pass it again (data=)"
        )
    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, corrupt=cfg.corrupt, seed=cfg.seed)


def module_for(cfg: SGDConfig, data: Data, device: torch.device, model: torch.nn.Module | None):
    """The network a later stage trains: `model` (a freshly built user module), else the zoo's
    arch rebuilt as the train-sgd run built it."""
    if model is not None:
        return model.to(device)
    if cfg.arch not in available_archs():
        raise LowdimError(
            f"the run trained your own module {cfg.arch!r}: pass a fresh one (model=)"
        )
    return model_for(cfg, data, device)
