"""tools/triton_aot.py, CI's ahead-of-time compile of the Triton kernels for sm_90 (no GPU needed): one
kernel through the real command, and a compile error failing it. In subprocesses, outside Triton's
interpreter (tests/conftest.py turns that on without a GPU; the tool must compile for real)."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "triton_aot.py")
ONE = ["--sizes", "paper", "--dtypes", "float32", "--kernels", "shift._shift_gather_kernel", "--jobs", "1"]


def run(*args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def test_compiles_a_kernel_for_sm90_at_the_launchers_constexprs():
    r = run(TOOL, *ONE)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith("shift._shift_gather_kernel ")]
    # shift's forward (SIGN=1) and its backward to the weights (SIGN=-1), BLOCK_N from the launcher (N = 128)
    assert sorted(row[3] for row in rows) == ["SIGN=-1", "SIGN=1"], r.stdout
    for row in rows:
        assert row[1:3] == ["float32", "paper"] and row[4] == "BLOCK_N=128" and row[5] == "ACC=fp32", row
        regs, spills = int(row[6]), row[7]
        assert 0 < regs <= 255 and "/" in spills, row
    assert "2 compiles of 1 kernels for sm_90, 0 failed" in r.stdout


def test_a_compile_error_fails_the_run(tmp_path):
    # shift's forward kernel replaced by one Triton rejects (an arange of 3: not a power of two)
    script = tmp_path / "broken.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(TOOL)!r})
        import triton_aot
        import triton
        import triton.language as tl
        from memops.triton import shift

        def _shift_gather_kernel(src_ptr, k_ptr, out_ptr, N, S, SIGN: tl.constexpr, BLOCK_N: tl.constexpr,
                                 ACC: tl.constexpr):
            i = tl.program_id(0) * BLOCK_N + tl.arange(0, 3)
            tl.store(out_ptr + i, tl.load(src_ptr + i))

        _shift_gather_kernel.__module__ = shift.__name__
        shift._shift_gather_kernel = triton.jit(_shift_gather_kernel)
        sys.exit(triton_aot.main({ONE!r}))
    """))
    r = run(str(script))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED" in r.stdout and "FAILED: shift._shift_gather_kernel float32 paper" in r.stderr, r.stderr
    assert "arange" in r.stderr


def test_every_op_launches_at_every_size_and_every_kernel_is_reached():
    """Recording alone (no compile, cheap): every op of memops.spec among the calls, every call's launches
    at every size (a new op whose dims the tool does not know fails here, not only in CI's full run), and
    every kernel of memops/triton reached by some launch."""
    code = textwrap.dedent("""
        import sys, torch
        sys.argv = ["triton_aot"]
        import triton_aot as t
        from memops.spec import SPECS
        missing = set(SPECS) - {call.op for call in t.CALLS.values()}
        assert not missing, f"ops the tool does not call: {sorted(missing)}"
        reached = set()
        for size, dims in t.GPU_SIZES.items():
            for name, call in t.CALLS.items():
                launches = t.record_launches(call, dims, torch.float32)
                assert launches, (size, name)
                reached |= {launch.name for launch in launches}
        assert reached == t.all_kernels(), sorted(t.all_kernels() - reached)
        print("ok", len(reached))
    """)
    r = run("-c", f"import sys; sys.path.insert(0, {os.path.join(REPO, 'tools')!r})\n" + code)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stdout + r.stderr
