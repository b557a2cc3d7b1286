"""`make gpu-suite`'s smoke mode: the GPU suite's code at tiny sizes on the CPU, end to end (its
tests part, every benchmark row, the four trainings as processes recorded per epoch, the JSON
and the markdown), so that the suite still runs when a session finally has a GPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SUITE = [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py")]


def test_the_smoke_run_measures_every_row_and_records_every_epoch(tmp_path):
    # a generous budget: the run takes about 40 s on 2 cores, and only a budget spent would
    # shorten it (rows skipped, epochs cut), which this test would then report
    done = subprocess.run(
        [
            *SUITE,
            "--smoke",
            "--out",
            str(tmp_path),
            "--runs",
            str(tmp_path / "runs"),
            "--budget",
            "900",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-suite.json").read_text())
    assert report["smoke"] and report["tests"]["status"] == "green"
    assert report["tests"]["files"] >= 5 and report["tests"]["tests"] >= 20
    rows = report["benchmarks"]
    assert [r["name"] for r in rows] == [
        "resnet20-step",
        "resnet20-step",
        "resnet20-step",
        "fastfood-step",
        "rbd-step",
        "rbd-step",
        "pca",
    ]
    assert all(r["ms"] > 0 and r["ratio"] > 0 for r in rows)
    runs = report["reproductions"]
    assert len(runs) == 4
    for name, run in runs.items():
        assert run["returncode"] == 0, (name, run.get("stderr"))
        assert [e["epoch"] for e in run["epochs"]] == [1, 2], name
        assert all(0 <= e["test_acc"] <= 1 for e in run["epochs"])
    assert 0 < runs["intrinsic-lenet-290"]["of_baseline"]
    assert (tmp_path / "gpu-suite-curves.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "gpu-suite.md").read_text()
    assert "smoke" in table and table.count("\n| ") == 2 * 2 + len(rows) + len(runs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no GPU")
def test_without_a_gpu_the_full_suite_is_refused_in_one_line(tmp_path):
    done = subprocess.run(
        [*SUITE, "--out", str(tmp_path), "--runs", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "gpu_suite: no CUDA device here; run it on a GPU, or with --smoke"
    ]
    assert not (tmp_path / "gpu-suite.json").exists()
