"""The library names its Python arguments in errors; the command line names its flags."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowdim.bases import DenseBasis
from lowdim.cli import main
from lowdim.errors import BadArgument, LowdimError
from lowdim.jobs.common import resolve_device
from lowdim.jobs.dldr import SubspaceConfig
from lowdim.jobs.rundir import RunDir
from lowdim.jobs.sampling import SGDConfig, check_config
from lowdim.optim import PBFGS, PSGD
from lowdim.optim.base import check_rates
from lowdim.params import FlatParams
from lowdim.train import build_optimizer


def flat_and_basis():
    torch.manual_seed(0)
    flat = FlatParams(nn.Linear(4, 2))
    q, _ = torch.linalg.qr(torch.randn(flat.numel, 3))
    return flat, DenseBasis(q.t().contiguous())


def raised(call) -> BadArgument:
    with pytest.raises(BadArgument) as e:
        call()
    return e.value


def test_bad_argument_message_and_flag():
    e = BadArgument("max_tries", "must be >= 1, got 0")
    assert isinstance(e, LowdimError) and isinstance(e, ValueError)
    assert str(e) == "max_tries must be >= 1, got 0"
    assert e.as_flag() == "--max-tries must be >= 1, got 0"


def test_psgd_names_its_lr_argument():
    flat, basis = flat_and_basis()
    e = raised(lambda: PSGD(flat, basis, lr=-1))
    assert str(e).startswith("lr must") and "--" not in str(e)
    assert e.argument == "lr" and e.as_flag() == "--lr must be positive and finite, got -1"


@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda f, b: PSGD(f, b, momentum=1.0), "momentum"),
        (lambda f, b: PSGD(f, b, weight_decay=-0.1), "weight_decay"),
        (lambda f, b: PBFGS(f, b, sigma=2.0), "sigma"),
        (lambda f, b: PBFGS(f, b, shrink=0.0), "shrink"),
        (lambda f, b: PBFGS(f, b, max_tries=0), "max_tries"),
    ],
)
def test_optimisers_name_their_arguments(make, argument):
    flat, basis = flat_and_basis()
    e = raised(lambda: make(flat, basis))
    assert e.argument == argument and str(e).startswith(f"{argument} ") and "--" not in str(e)


@pytest.mark.parametrize(
    "call, start",
    [
        (lambda: check_config(SGDConfig(momentum=2)), "momentum 2 is outside"),
        (lambda: check_config(SGDConfig(batch_size=0)), "batch_size must be"),
        (lambda: check_config(SGDConfig(samples_per_epoch=0)), "samples_per_epoch must be"),
        (lambda: SubspaceConfig(sigma=2.0).resolved(100), "sigma must lie in (0, 1)"),
        (lambda: SubspaceConfig(shrink=1.0).resolved(100), "shrink must lie in (0, 1)"),
        (lambda: SubspaceConfig(method="twa", variant="x").resolved(100), "variant 'x'"),
        (lambda: check_rates(0.0, lr_name="baseline_lr"), "baseline_lr must be positive"),
        (lambda: check_rates(1e-3, -1.0, weight_decay_name="l2"), "l2 must be >= 0"),
        (lambda: build_optimizer("sgd", [nn.Parameter(torch.ones(1))], lr=0.1, momentum=1), "mom"),
        (lambda: resolve_device("not-a-device"), "device 'not-a-device' is not a device"),
    ],
)
def test_jobs_and_builders_speak_python_names(call, start):
    e = raised(call)
    assert str(e).startswith(start) and "--" not in str(e), str(e)


def test_run_folder_errors_name_save_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    e = raised(lambda: RunDir(tmp_path / "file", {}))
    assert str(e) == f"save_dir {tmp_path / 'file'} is a file, not a folder"
    assert e.as_flag().startswith("--save-dir ")


def test_the_command_line_still_prints_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LOWDIM_DEBUG", raising=False)
    run = tmp_path / "run"
    assert main(["train-sgd", "--quiet", "--momentum", "2", "--save-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == "lowdim train-sgd: error: --momentum 2.0 is outside the valid range [0, 1)\n"
    assert not run.exists()
