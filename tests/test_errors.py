"""The library names its Python arguments in errors; the command line names its flags."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lowdim.bases import DenseBasis
from lowdim.cli import main
from lowdim.errors import BadArgument, LowdimError
from lowdim.jobs import SubspaceConfig
from lowdim.jobs.common import resolve_device
from lowdim.jobs.rundir import RunDir
from lowdim.jobs.sampling import SGDConfig, check_config
from lowdim.optim import PBFGS, PSGD
from lowdim.optim.optimizer import check_rates
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


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(compartments="neurons"), "compartments must be one of none, layer, param, chunk"),
        (dict(split="random"), "split must be one of size, equal, each, got 'random'"),
        (dict(compartments="chunk"), "chunk_size must be >= 1 (parameters per chunk) with compa"),
        (dict(distribution="cauchy"), "distribution must be one of gaussian, uniform, rademacher"),
        (dict(epochs=0), "epochs must be a positive integer, got 0"),
        (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
        (dict(lr=-1.0), "lr must be positive and finite, got -1.0"),
    ],
)
def test_the_rbd_job_names_one_python_argument_per_error(options, message):
    from lowdim.jobs.random_bases import RBDConfig
    from lowdim.jobs.random_bases import check_config as check_rbd

    e = raised(lambda: check_rbd(RBDConfig(**options)))
    assert str(e).startswith(message) and "--" not in str(e), str(e)
    assert e.as_flag() == f"--{e.argument.replace('_', '-')} {e.problem}"


def test_the_rbd_dim_is_checked_against_the_model_and_the_command_line_prints_flags(
    tmp_path, capsys, monkeypatch
):
    from lowdim.jobs.random_bases import RBDConfig, rbd_compartments

    e = raised(lambda: rbd_compartments(RBDConfig(dim=0), FlatParams(nn.Linear(4, 2))))
    assert str(e) == "dim 0 must be between 1 and D = 10"
    monkeypatch.delenv("LOWDIM_DEBUG", raising=False)
    run = tmp_path / "run"
    assert main(["rbd", "--quiet", "--batch-size", "0", "--save-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == "lowdim rbd: error: --batch-size must be a positive integer, got 0\n"
    assert not run.exists()


# --- messages that name other arguments: Python names from the library, flags from the CLI ---


def test_a_reference_reads_as_the_python_name_or_as_the_flag():
    from lowdim.errors import arg

    marks = chr(2) + "lr" + chr(3)  # a value's repr escapes the marks: never read as a reference
    e = LowdimError(
        f"got {{'a': 1}} and {marks!r}; pass {arg('data_dir')}, {arg('download', True)}, "
        f"{arg('arch', 'mlp')}, {arg('lr_milestones', [3, 4])} or {arg('hidden', None)}"
    )
    assert str(e) == (
        "got {'a': 1} and '\\x02lr\\x03'; pass data_dir, download=True, arch='mlp', "
        "lr_milestones=[3, 4] or hidden=None"
    )
    assert e.for_cli() == (
        "got {'a': 1} and '\\x02lr\\x03'; pass --data-dir, --download, --arch mlp, "
        "--lr-milestones 3,4 or without --hidden"
    )
    bad = BadArgument("corrupt", f"needs {arg('download', True)}")
    assert (str(bad), bad.problem) == ("corrupt needs download=True", "needs download=True")
    assert bad.as_flag() == "--corrupt needs --download"


def test_the_data_dir_hint_names_the_argument_or_the_flags(tmp_path, capsys, monkeypatch):
    from lowdim.data import load_dataset

    # short paths: the command line cuts a line at 400 characters, and the hint comes last
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "home")
    monkeypatch.delenv("LOWDIM_DATA", raising=False)
    monkeypatch.delenv("LOWDIM_DEBUG", raising=False)
    with pytest.raises(LowdimError) as e:
        load_dataset("mnist", data_dir="nope")
    assert str(e.value).endswith("; pass data_dir, set LOWDIM_DATA, or download=True")
    assert "--" not in str(e.value)
    argv = ["train-sgd", "--quiet", "--dataset", "mnist", "--data-dir", "nope", "--save-dir", "run"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lowdim train-sgd: error: no MNIST files in nope, ")
    assert err.endswith("; pass --data-dir, set LOWDIM_DATA, or --download\n")


def test_the_arch_hints_name_the_argument_or_the_flag(tmp_path, capsys, monkeypatch):
    from lowdim.models import build_model

    for args, hint in [
        (("lenet", (1, 8, 8), 10), "; use arch='mlp' or arch='fc'"),
        (("lenet", (64,), 10), "; use arch='mlp' for flat features"),
        (("vgg11", (3, 8, 8), 10), ", or use arch='resnet20'"),
    ]:
        with pytest.raises(LowdimError) as e:
            build_model(*args)
        assert str(e.value).endswith(hint) and "--" not in str(e.value), str(e.value)
    monkeypatch.delenv("LOWDIM_DEBUG", raising=False)
    run = tmp_path / "run"
    assert main(["train-sgd", "--quiet", "--arch", "lenet", "--save-dir", str(run)]) == 2
    assert capsys.readouterr().err == (
        "lowdim train-sgd: error: lenet needs inputs of at least 16x16 pixels, got 8x8; "
        "use --arch mlp or --arch fc\n"
    )


def test_a_resume_check_spells_a_switch_as_the_command_does(tmp_path):
    from lowdim.cli import build_parser

    RunDir(tmp_path, {"bn_recompute": False, "lr": 0.1}).start()
    e = raised(lambda: RunDir(tmp_path, {"bn_recompute": True, "lr": 0.1}, resume=True))
    where = f"differs from the run in {tmp_path}"
    assert e.argument == "bn_recompute" and str(e) == (
        f"bn_recompute {where} (begun with bn_recompute=False, now bn_recompute=True); "
        "resume with the same options"
    )
    # train-psgd's switch is --no-bn-recompute (it sets bn_recompute=False)
    spell = build_parser().parse_args(["train-psgd", "--save-dir", "x"]).spell_flag
    assert e.for_cli(spell) == (
        f"--no-bn-recompute {where} (begun with --no-bn-recompute, now without --no-bn-recompute); "
        "resume with the same options"
    )
    e = raised(lambda: RunDir(tmp_path, {"bn_recompute": False, "lr": 0.2}, resume=True))
    assert e.for_cli(spell).startswith(f"--lr {where} (begun with --lr 0.1, now --lr 0.2); ")


def test_a_sharded_basis_says_why_no_file_can_hold_it(tmp_path):
    from lowdim.bases import basis_from_state, load_basis
    from lowdim.bases.sharded import shard_pca_basis
    from lowdim.compress import save_subspace
    from lowdim.io import save_tensors
    from lowdim.subspace_model import SubspaceModel

    torch.manual_seed(0)
    basis = shard_pca_basis(torch.randn(6, 10), 3, 0, 10, 10, (0, 6, 1))  # one process, all of D
    why = "has no basis kind, so no file can hold it: a sharded basis holds only one process's rows"
    with pytest.raises(LowdimError) as e:
        basis_from_state(basis.state_dict())
    assert str(e.value).startswith(f"the basis state {why}")
    # a model on it is refused before a file is written that no loader could read
    with pytest.raises(LowdimError) as e:
        save_subspace(tmp_path / "model", SubspaceModel(nn.Linear(4, 2), basis))
    assert str(e.value).startswith(f"the model's basis (a ShardedBasis) {why}")
    assert not (tmp_path / "model").exists()
    # a file with an empty kind (as save_subspace wrote one before it refused)
    path = tmp_path / "basis.safetensors"
    save_tensors(path, basis.tensors(), metadata={"kind": "", "numbers": "{}"})
    with pytest.raises(LowdimError) as e:
        load_basis(path)
    assert str(e.value).startswith(f"the basis file {path}: the basis state {why}")
    assert "unknown basis kind" not in str(e.value) and "\n" not in str(e.value)
