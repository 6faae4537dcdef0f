"""`torchrun -m memops train`: DistributedDataParallel over 2 CPU processes (gloo)."""

import subprocess
import sys

import pytest
import torch

from memops.app.checkpoints import load_checkpoint
from memops.app.progress import read_metrics

SMALL = ["--controller-size", "8", "--memory-slots", "8", "--memory-width", "4", "--threads", "1", "--no-progress",
         "--task-option", "max_length=3", "--eval-every", "3", "--log-every", "1", "--eval-sequences", "8"]


def run(out, *extra, procs=2, batch=2, steps=6):
    """`memops train copy` on `procs` processes (torchrun) or on one (procs=None): (code, stderr)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] \
        if procs else [sys.executable]
    cmd = [*launcher, "-m", "memops", "train", "copy", "--out", str(out), "--steps", str(steps),
           "--batch-size", str(batch), *SMALL, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    two = run(base / "two", procs=2, batch=2)
    one = run(base / "one", procs=None, batch=4)
    return base, two, one


def test_two_processes_train_as_one_with_the_global_batch(runs):
    base, (code2, err2), (code1, err1) = runs
    assert code2 == 0, err2
    assert code1 == 0, err1
    a, b = load_checkpoint(base / "two" / "checkpoint.pt"), load_checkpoint(base / "one" / "checkpoint.pt")
    assert a["config"]["world_size"] == 2 and b["config"]["world_size"] == 1
    assert a["sequences"] == b["sequences"] == 6 * 4
    for key in b["model"]:  # the same data, the gradients averaged over the ranks: the same training
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-6, msg=key)
    rows_a, rows_b = read_metrics(base / "two" / "metrics.csv"), read_metrics(base / "one" / "metrics.csv")
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(rows_a, rows_b):
        assert ra["train_bits"] == pytest.approx(rb["train_bits"], rel=1e-4)
        if rb["eval_bits"] is not None:  # evaluation reduced over the ranks: the whole set, once
            assert ra["eval_bits"] == pytest.approx(rb["eval_bits"], rel=1e-4)


def test_the_ranks_parameters_are_identical(runs):
    base, _, _ = runs
    ckpt = load_checkpoint(base / "two" / "checkpoint.pt")
    assert len(ckpt["replicas"]) == 2 and ckpt["replicas"][0] == ckpt["replicas"][1]
    assert len(ckpt["torch_rng"]) == 2


def test_resume_with_the_same_number_of_processes(runs):
    base, _, _ = runs
    out = base / "two"
    code, err = run(out, "--resume", procs=3, steps=9)
    assert code != 0 and "trained by 2 processes" in err
    code, err = run(out, "--resume", procs=2, steps=9)
    assert code == 0, err
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 9 and ckpt["replicas"][0] == ckpt["replicas"][1]


def test_restarts_on_two_processes(tmp_path):
    """--restarts under torchrun: every restart trains on both ranks, rank 0 picks and copies the best."""
    import json

    code, err = run(tmp_path / "r", "--restarts", "2", procs=2, steps=3)
    assert code == 0, err
    summary = json.loads((tmp_path / "r" / "restarts.json").read_text())
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    for seed in (0, 1):
        ckpt = load_checkpoint(tmp_path / "r" / f"seed{seed}" / "checkpoint.pt")
        assert ckpt["config"]["world_size"] == 2 and ckpt["step"] == 3 and ckpt["replicas"][0] == ckpt["replicas"][1]
    chosen = tmp_path / "r" / f"seed{summary['best_seed']}" / "best.pt"
    assert (tmp_path / "r" / "best.pt").read_bytes() == chosen.read_bytes()
