"""The benchmark scripts still run (tiny settings, no CSV: a smoke test, not a timing), bench_ops'
byte model and targets, and the GPU suite's offline parts (its message without a GPU, its test
selection, the junit / progress parsers, the results file)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")
TOOLS = os.path.join(REPO, "tools")
sys.path[:0] = [BENCHMARKS, TOOLS]

import _ops_run  # noqa: E402
import _ops_sizes  # noqa: E402
import bench_models  # noqa: E402
import bench_ops  # noqa: E402
from gpu_suite import pytest_run, report  # noqa: E402

TINY = ["--sizes", "2,1,5,4,3", "--no-compile", "--min-run-time", "0.01", "--no-csv"]


def test_bench_models_runs(capsys, cpp):
    assert bench_models.main(["--batch", "1", "--length", "2", "--min-run-time", "0.01", "--threads", "1",
                              "--no-csv"]) == 0
    out = capsys.readouterr().out
    for model in ("ntm", "nse", "lstm"):
        assert f"\n{model} " in out


def test_bench_models_memory(capsys, cpp):
    """--memory: the peak memory of a training step, fused and step by step, both above zero."""
    assert bench_models.main(["--models", "ntm", "--batch", "2", "--length", "2", "--min-run-time", "0.01",
                              "--threads", "1", "--memory", "--no-csv"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("ntm ") and len(line.split()) == 6]
    assert {r[3] for r in rows} == {"fused", "cpp"}, out
    assert all(float(r[4]) > 0 and float(r[5]) > 0 for r in rows), out


def test_bench_models_compile(capsys, cpp):
    """--compile adds torch.compile of the stepwise NTM (~40 s of compiling at this tiny size)."""
    assert bench_models.main(["--models", "ntm", "--batch", "1", "--length", "1", "--min-run-time", "0.01",
                              "--threads", "1", "--compile", "--no-csv"]) == 0
    out = capsys.readouterr().out
    assert "torch.compile of the stepwise NTM (batch 1, 3 steps): forward" in out
    assert "\nntm        1      3  compiled   fwd+bwd" in out


def test_bench_ops_runs(capsys, cpp):
    assert bench_ops.main(["--ops", "read", *TINY]) == 0
    assert "read" in capsys.readouterr().out


def test_bench_ops_byte_model_counts_every_tensor_once():
    for name, op in _ops_sizes.OPS.items():
        for dims in (_ops_sizes.GPU_SIZES["paper"], dict(B=2, H=3, N=5, W=4, S=3)):
            tensors, extra, grad = _ops_run.make_inputs(op, dims, torch.float32, "cpu", 0)
            assert tuple(tensors) == op.inputs, name
            inputs = sum(t.numel() * t.element_size() for t in tensors.values())
            mask = sum(t.numel() * t.element_size() for t in extra.values() if isinstance(t, torch.Tensor))
            output = grad.numel() * grad.element_size()  # the output gradient has the output's shape
            assert _ops_sizes.traffic_bytes(name, dims, "fwd", 4) == inputs + mask + output, name
            assert _ops_sizes.traffic_bytes(name, dims, "fwd+bwd", 4) == 2 * (inputs + output) + mask, name
    assert _ops_sizes.traffic_bytes("write", _ops_sizes.GPU_SIZES["large"], "fwd", 4) == 539_033_600
    _, extra, _ = _ops_run.make_inputs(_ops_sizes.OPS["write_noerase"], dict(B=2, H=1, N=5, W=4, S=3),
                                       torch.float32, "cpu", 0)
    assert extra == {"erase": None}


def test_bench_ops_check_uses_the_tolerance_table():
    x = torch.randn(64, 128, dtype=torch.float64)
    assert _ops_run.close(x.float() * (1 + 1e-6), x.float(), torch.float32)
    assert not _ops_run.close(x.float() + 1e-2, x.float(), torch.float32)
    assert not _ops_run.close(x + 1e-7, x, torch.float64)
    assert not _ops_run.close((x, x), (x,), torch.float64)


def test_bench_ops_sizes_and_targets():
    assert _ops_sizes.sizes_for("cuda")["large"] == dict(B=64, H=1, N=8192, W=128, S=3)
    assert _ops_sizes.sizes_for("cpu")["large"] == dict(B=16, H=1, N=4096, W=64, S=3)
    medians = {"cpp": 10.0, "triton": 20.0, "eager": 150.0, "compiled": 40.0}
    check = _ops_sizes.check_target
    assert check("cuda", "paper", "fwd+bwd", "cpp", medians, None)[1] is True       # 15x eager, 4x compiled
    assert check("cuda", "paper", "fwd+bwd", "triton", medians, None)[1] is False   # 7.5x eager
    assert check("cuda", "paper", "fwd+bwd", "cpp", {"cpp": 1.0, "eager": 20.0}, None)[1] is None  # no compiled
    assert check("cuda", "paper", "fwd", "cpp", medians, None) is None
    assert check("cuda", "large", "fwd", "cpp", medians, 0.9)[1] is True
    assert check("cuda", "large", "fwd+bwd", "cpp", medians, 0.5)[1] is False
    assert check("cpu", "paper", "fwd+bwd", "cpp", {"cpp": 10.0, "eager": 25.0}, None)[1] is False  # 2.5x < 3x
    assert check("cpu", "large", "fwd+bwd", "cpp", medians, None) is None


def test_bench_ops_bandwidth_json_and_no_interpreter(tmp_path, capsys, cpp, monkeypatch):
    import memops

    # as with TRITON_INTERPRET=1: triton listed for CPU tensors, but never timed unless asked for
    monkeypatch.setattr(memops, "available_backends", lambda device="cpu": ["cpp", "triton", "reference"])
    path = tmp_path / "ops.json"
    assert bench_ops.main(["--ops", "read", "write_noerase", "content_address_dot_mask", *TINY, "--bandwidth",
                           "--copy-mib", "4", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["complete"] and doc["backends"] == ["cpp"] and doc["copy"]["gbps"] > 0
    assert len(doc["rows"]) == 6 and all(r["status"] == "ok" for r in doc["rows"])
    for r in doc["rows"]:
        assert set(r["medians_us"]) == {"cpp", "eager"}
        assert r["gbps"]["cpp"] == pytest.approx(r["bytes"] / r["medians_us"]["cpp"] / 1e3)
        assert r["bandwidth_fraction"]["cpp"] == pytest.approx(r["gbps"]["cpp"] / doc["copy"]["gbps"])
    assert "GB/s cpp" in doc["table"]["header"] and "cpp" in capsys.readouterr().out


def test_bench_ops_time_budget_skips_rows(tmp_path, cpp):
    path = tmp_path / "ops.json"
    assert bench_ops.main(["--ops", "read", *TINY, "--time-budget", "0", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert [r["status"] for r in doc["rows"]] == ["SKIPPED", "SKIPPED"] and "budget" in doc["summary"][-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without a GPU gets")
def test_gpu_suite_without_gpu_exits_2(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, os.path.join(TOOLS, "gpu_suite"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "no CUDA GPU" in run.stderr and not out.exists()


def test_gpu_suite_selects_the_cuda_tests():
    """The suite's selection (tests/ops tests/nn, -k cuda) collects GPU tests, and only those."""
    selection = pytest_run.GPU_TESTS
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          *selection["paths"], "-k", selection["k"]], cwd=REPO, capture_output=True, text=True,
                         timeout=600)
    ids = [line for line in run.stdout.splitlines() if "::" in line]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert ids and all("cuda" in i for i in ids)


def test_gpu_suite_junit_and_results_file(tmp_path):
    (tmp_path / "test_sample.py").write_text(textwrap.dedent("""
        import pytest

        def test_ok():
            pass

        def test_bad():
            assert 1 == 2, "one is not two"

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture broke")

        def test_error(broken):
            pass

        def test_skipped():
            pytest.skip("no GPU here")
    """))
    junit, progress = tmp_path / "j.xml", tmp_path / "p.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TOOLS, os.environ.get("PYTHONPATH", "")]),
               MEMOPS_SUITE_PROGRESS=str(progress))
    subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_sample.py"), "-q", "-p",
                    "gpu_suite.progress_plugin", "-p", "no:cacheprovider", "-o", "junit_family=xunit1",
                    f"--junitxml={junit}"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    for parsed in (pytest_run.parse_junit(junit), pytest_run.parse_progress(progress)):
        outcomes = {t["id"].split("::")[-1]: t["outcome"] for t in parsed["tests"]}
        assert outcomes == {"test_ok": "passed", "test_bad": "failed", "test_error": "error", "test_skipped": "skipped"}
        messages = {t["id"].split("::")[-1]: t["message"] for t in parsed["tests"]}
        assert "one is not two" in messages["test_bad"] and "fixture broke" in messages["test_error"]
        assert parsed["counts"]["total"] == 4 and parsed["counts"]["failed"] == 1
    tests = pytest_run.parse_junit(junit)
    result = {"suite": {"started_utc": "2026-01-01 00:00:00 UTC", "finished_utc": "2026-01-01 00:01:00 UTC"},
              "environment": {"device_name": "NVIDIA H100 80GB HBM3", "capability": "9.0"}, "commit": "abc1234-dirty",
              "stages": {"build": {"status": "failed", "seconds": 1, "compiler_errors": ["a.cu(3): error: x"]}},
              "errors": ["build: exit code 1"], "tests": dict(tests, command="python -m pytest"), "bench": None}
    stem = report.results_stem(str(tmp_path), "2026-01-01", "NVIDIA H100 80GB HBM3", "abc1234-dirty", "0" * 12)
    assert stem == "2026-01-01-nvidia-h100-80gb-hbm3-abc1234-dirty"
    md_path, json_path = sorted(report.write_results(result, str(tmp_path), stem), key=lambda p: p.endswith(".json"))
    md = open(md_path).read()
    assert "NVIDIA H100 80GB HBM3" in md and "abc1234-dirty" in md and "a.cu(3): error: x" in md
    assert "one is not two" in md and "FAIL  " in md and "build: exit code 1" in md
    assert json.load(open(json_path))["tests"]["counts"]["error"] == 1
