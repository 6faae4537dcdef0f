"""The CUDA emulator (memops._emu, backend "cuda_emu"): the emulator's own semantics and fault
reports, and every op's CUDA kernels on the shapes that reach each launch path, against the
reference in four dtypes, with outputs and gradients bitwise identical under every schedule and
worker count (the kernels claim fixed-order reductions). The per-op files run their faces on the
cuda_emu-cpu target too (tests/conftest.py)."""

import re

import pytest
import torch

from helpers import (check_against_reference, forward_backward, make_inputs, random_grad, require_backend, seed_of,
                     to)
from memops.testing import EMULATOR_CASES

ALL_SCHEDULES = [("round_robin", 0, 1), ("lowest_first", 0, 1), ("highest_first", 0, 1), ("random", 7, 2)]


@pytest.fixture
def emu():
    require_backend("cuda_emu", "cpu")
    from memops import _emu

    yield _emu
    _emu.configure()  # round robin, one worker


# ------------------------------------------------------------------------------------------------
# the emulator itself


def _segment_source(lane, width, src):
    return (lane & ~(width - 1)) + src


@pytest.mark.parametrize("width", [32, 16, 8, 4, 1])
@pytest.mark.parametrize("schedule", [s[0] for s in ALL_SCHEDULES])
def test_shuffle_semantics(emu, width, schedule):
    """__shfl_xor/down/up/_sync with a width, as the CUDA programming guide defines them."""
    emu.configure(schedule, seed=3)
    out = emu._cuda_emu.selftest("shuffles", 64, width)
    for t in range(64):
        lane, base = t % 32, t - t % 32
        seg_lo = lane & ~(width - 1)
        seg_hi = seg_lo + width - 1
        xor = lane ^ 3
        expect_xor = xor if seg_lo <= xor <= seg_hi else lane
        expect_down = lane + 5 if lane + 5 <= seg_hi else lane
        expect_up = lane - 5 if lane - 5 >= seg_lo else lane
        expect_idx = _segment_source(lane, width, (t * 7 + 1) % width)
        assert out[4 * t: 4 * t + 4] == [base + expect_xor, base + expect_down, base + expect_up, base + expect_idx], t


@pytest.mark.parametrize("name,threads,message", [
    ("divergent_barrier", 64, r"different barriers: .*selftest\.cpp:\d+.*selftest\.cpp:\d+"),
    ("exit_before_barrier", 64, r"deadlock: thread 5 .* exited while .*__syncthreads \(.*selftest\.cpp:\d+\)"),
    ("partial_warp_shuffle", 48, r"__shfl_\*_sync \(.*selftest\.cpp:\d+, mask 0xffffffff\): with mask 0xffffffff "
                                 r"in a partial warp of 16 lanes"),
    ("smem_overrun", 64, r"wrote past the 128 bytes of dynamic shared memory"),
])
def test_faults_are_errors_with_the_source_line(emu, name, threads, message):
    for schedule, seed, workers in ALL_SCHEDULES:
        emu.configure(schedule, seed, workers)
        with pytest.raises(RuntimeError, match=message):
            emu._cuda_emu.selftest(name, threads)


def test_a_race_shows_as_outputs_that_differ_between_schedules(emu):
    """A missing barrier: round-robin happens to give every thread its neighbour's index; under
    lowest-first warp 0 reads warp 1's slots before warp 1 wrote them (NaN), under highest-first the
    other way round."""
    outs = {}
    for schedule, seed, workers in ALL_SCHEDULES[:3]:
        emu.configure(schedule, seed, workers)
        outs[schedule] = torch.tensor(emu._cuda_emu.selftest("race", 64)[:64])
    right = (torch.arange(64) + 32) % 64
    assert torch.equal(outs["round_robin"], right.float())
    assert outs["lowest_first"][:32].isnan().all() and torch.equal(outs["lowest_first"][32:], right[32:].float())
    assert outs["highest_first"][32:].isnan().all() and torch.equal(outs["highest_first"][:32], right[:32].float())


def test_a_race_hidden_by_a_shuffle_gives_the_same_outputs_under_every_schedule(emu):
    """Why tools/emu_tsan.py exists: lane 0's write and the other lanes' reads are separated only by a
    shuffle (which orders no memory on a GPU), and every schedule runs the write first. The same
    exchange with __syncwarp / __syncthreads (`ordered`, two blocks) is right, and TSan must stay
    quiet on it."""
    for schedule, seed, workers in ALL_SCHEDULES:
        emu.configure(schedule, seed, workers)
        hidden = torch.tensor(emu._cuda_emu.selftest("race_hidden_by_shuffle", 64)[:64])
        ordered = torch.tensor(emu._cuda_emu.selftest("ordered", 64)[:128])  # two blocks of 64
        assert torch.equal(hidden, torch.full((64,), 2.0)) and torch.equal(ordered, torch.full((128,), 2.0))


def test_unwritten_dynamic_shared_memory_reads_nan(emu):
    out = torch.tensor(emu._cuda_emu.selftest("unwritten_shared", 32)[:32])
    assert out.isnan().all()


def test_launch_limits_are_checked(emu):
    with pytest.raises(RuntimeError, match="block of 2048 threads"):
        emu._cuda_emu.selftest("shuffles", 2048)


# ------------------------------------------------------------------------------------------------
# every op, every launch path, every schedule: against the reference, and bitwise the same


PARAMS = [pytest.param(op, case, id=f"{op}-B{case[0]}H{case[1]}N{case[2]}W{case[3]}S{case[4]}"
                       + "".join(f"-{v}" for v in case[5].values()))
          for op, cases in EMULATOR_CASES.items() for case in cases]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op,case", PARAMS)
def test_every_path_every_schedule(emu, op, case, dtype):
    require_backend("cuda_emu", "cpu", op)
    B, H, N, W, S, variant = case
    seed = seed_of("emu", op, *case[:5])
    tensors, kwargs = make_inputs(op, B=B, H=H, N=N, W=W, S=S, seed=seed, **variant)
    # float32 under every schedule and two worker counts; the other dtypes under the two opposite orders
    schedules = ALL_SCHEDULES if dtype == torch.float32 else ALL_SCHEDULES[1:3]
    runs = []
    for i, (schedule, sched_seed, workers) in enumerate(schedules):
        emu.configure(schedule, sched_seed, workers)
        if i == 0:
            out, grads = check_against_reference(op, tensors, kwargs, dtype, "cpu", "cuda_emu", seed=seed)
        else:
            cast = {k: to(v, dtype) for k, v in tensors.items()}
            grad_out = random_grad(out.shape, seed, dtype)
            out, grads = forward_backward(op, cast, kwargs, "cuda_emu", grad_out)
        runs.append([out] + [grads[k] for k in sorted(grads)])
    for (schedule, _, workers), run in zip(schedules[1:], runs[1:]):
        for a, b in zip(runs[0], run):
            assert torch.equal(a, b), f"{op}: {schedule} ({workers} workers) differs from {schedules[0][0]}"


# ------------------------------------------------------------------------------------------------
# the backend: selectable like the others, never chosen by "auto", checked by `memops check`


def test_selected_by_name_and_by_context_never_by_auto(emu):
    import memops
    from memops import _backend

    memory, weights = torch.randn(2, 5, 3), torch.softmax(torch.randn(2, 4, 5), -1)
    expected = torch.ops.memops_cuda_emu.read(memory, weights)
    launches = emu.stats()["launches"]
    assert torch.equal(memops.read(memory, weights, backend="cuda_emu"), expected)
    with memops.backend("cuda_emu"):
        assert memops.get_backend() == "cuda_emu"
        assert torch.equal(memops.read(memory, weights), expected)
    assert emu.stats()["launches"] == launches + 2  # both ran the emulated kernel
    assert _backend.select("auto", memory) != "cuda_emu"
    assert "cuda_emu" not in memops.available_backends("cpu")


def test_memops_check_backend_cuda_emu(emu, capsys):
    import argparse

    from memops import check

    parser = argparse.ArgumentParser()
    check.add_arguments(parser)
    assert check.run(parser.parse_args(["--backend", "cuda_emu", "--dtype", "float32", "--no-gradcheck"])) == 0
    assert "cuda_emu" in capsys.readouterr().out
