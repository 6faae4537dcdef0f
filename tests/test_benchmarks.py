"""The benchmark scripts still run (tiny settings, no CSV): a smoke test, not a timing."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))


def test_bench_models_runs(capsys, cpp):
    import bench_models

    assert bench_models.main(["--batch", "1", "--length", "2", "--min-run-time", "0.01", "--threads", "1",
                              "--no-csv"]) == 0
    out = capsys.readouterr().out
    for model in ("ntm", "nse", "lstm"):
        assert f"\n{model} " in out


def test_bench_ops_runs(capsys, cpp):
    import bench_ops

    assert bench_ops.main(["--ops", "read", "--sizes", "2,1,5,4,3", "--no-compile", "--min-run-time", "0.01",
                           "--no-csv"]) == 0
    assert "read" in capsys.readouterr().out


BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
REPO = os.path.dirname(BENCHMARKS)


def test_bench_ops_byte_model_counts_every_tensor_once():
    import bench_ops

    for name, op in bench_ops.OPS.items():
        for dims in (bench_ops.GPU_SIZES["paper"], dict(B=2, H=3, N=5, W=4, S=3)):
            tensors, extra, grad = bench_ops.make_inputs(op, dims, torch.float32, "cpu", 0)
            inputs = sum(t.numel() * t.element_size() for t in tensors.values())
            mask = sum(t.numel() * t.element_size() for t in extra.values())
            output = grad.numel() * grad.element_size()  # the output gradient has the output's shape
            assert bench_ops.traffic_bytes(name, dims, "fwd", 4) == inputs + mask + output, name
            assert bench_ops.traffic_bytes(name, dims, "fwd+bwd", 4) == 2 * (inputs + output) + mask, name
    assert bench_ops.traffic_bytes("write", bench_ops.GPU_SIZES["large"], "fwd", 4) == 539_033_600


def test_bench_ops_sizes_and_targets():
    import bench_ops

    assert bench_ops.sizes_for("cuda")["large"] == dict(B=64, H=1, N=8192, W=128, S=3)
    assert bench_ops.sizes_for("cpu")["large"] == dict(B=16, H=1, N=4096, W=64, S=3)
    medians = {"cpp": 10.0, "triton": 20.0, "eager": 150.0, "compiled": 40.0}
    check = bench_ops.check_target
    assert check("cuda", "paper", "fwd+bwd", "cpp", medians, None)[1] is True       # 15x eager, 4x compiled
    assert check("cuda", "paper", "fwd+bwd", "triton", medians, None)[1] is False   # 7.5x eager
    assert check("cuda", "paper", "fwd+bwd", "cpp", {"cpp": 1.0, "eager": 20.0}, None)[1] is None  # no compiled
    assert check("cuda", "paper", "fwd", "cpp", medians, None) is None
    assert check("cuda", "large", "fwd", "cpp", medians, 0.9)[1] is True
    assert check("cuda", "large", "fwd+bwd", "cpp", medians, 0.5)[1] is False
    assert check("cpu", "paper", "fwd+bwd", "cpp", {"cpp": 10.0, "eager": 25.0}, None)[1] is False  # 2.5x < 3x
    assert check("cpu", "large", "fwd+bwd", "cpp", medians, None) is None


def test_bench_ops_bandwidth_json_and_no_interpreter(tmp_path, capsys, cpp, monkeypatch):
    import bench_ops
    import memops

    # as with TRITON_INTERPRET=1: triton listed for CPU tensors, but never timed unless asked for
    monkeypatch.setattr(memops, "available_backends", lambda device="cpu": ["cpp", "triton", "reference"])
    path = tmp_path / "ops.json"
    assert bench_ops.main(["--ops", "read", "write_noerase", "--sizes", "2,1,5,4,3", "--no-compile",
                           "--min-run-time", "0.01", "--bandwidth", "--copy-mib", "4", "--json", str(path),
                           "--no-csv"]) == 0
    doc = json.loads(path.read_text())
    assert doc["complete"] and doc["backends"] == ["cpp"] and doc["copy"]["gbps"] > 0
    assert len(doc["rows"]) == 4 and all(r["status"] == "ok" for r in doc["rows"])
    for r in doc["rows"]:
        assert set(r["medians_us"]) == {"cpp", "eager"}
        assert r["gbps"]["cpp"] == pytest.approx(r["bytes"] / r["medians_us"]["cpp"] / 1e3)
        assert r["bandwidth_fraction"]["cpp"] == pytest.approx(r["gbps"]["cpp"] / doc["copy"]["gbps"])
    assert "GB/s cpp" in doc["table"]["header"] and "cpp" in capsys.readouterr().out


def test_bench_ops_time_budget_skips_rows(tmp_path, cpp):
    import bench_ops

    path = tmp_path / "ops.json"
    assert bench_ops.main(["--ops", "read", "--sizes", "2,1,5,4,3", "--no-compile", "--min-run-time", "0.01",
                           "--time-budget", "0", "--json", str(path), "--no-csv"]) == 0
    doc = json.loads(path.read_text())
    assert [r["status"] for r in doc["rows"]] == ["SKIPPED", "SKIPPED"] and "budget" in doc["summary"][-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without a GPU gets")
def test_gpu_suite_without_gpu_exits_2(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "gpu_suite.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "no CUDA GPU" in run.stderr and not out.exists()


def test_gpu_suite_junit_and_results_file(tmp_path):
    import gpu_suite

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
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([BENCHMARKS, os.environ.get("PYTHONPATH", "")]),
               MEMOPS_SUITE_PROGRESS=str(progress))
    subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_sample.py"), "-q", "-p", "_suite_progress",
                    "-p", "no:cacheprovider", "-o", "junit_family=xunit1", f"--junitxml={junit}"],
                   cwd=tmp_path, env=env, capture_output=True, timeout=120)
    for parsed in (gpu_suite.parse_junit(junit), gpu_suite.parse_progress(progress)):
        outcomes = {t["id"].split("::")[-1]: t["outcome"] for t in parsed["tests"]}
        assert outcomes == {"test_ok": "passed", "test_bad": "failed", "test_error": "error", "test_skipped": "skipped"}
        messages = {t["id"].split("::")[-1]: t["message"] for t in parsed["tests"]}
        assert "one is not two" in messages["test_bad"] and "fixture broke" in messages["test_error"]
        assert parsed["counts"]["total"] == 4 and parsed["counts"]["failed"] == 1
    tests = gpu_suite.parse_junit(junit)
    result = {"suite": {"started_utc": "2026-01-01 00:00:00 UTC", "finished_utc": "2026-01-01 00:01:00 UTC"},
              "environment": {"device_name": "NVIDIA H100 80GB HBM3", "capability": "9.0"}, "commit": "abc1234-dirty",
              "stages": {"build": {"status": "failed", "seconds": 1, "compiler_errors": ["a.cu(3): error: x"]}},
              "errors": ["build: exit code 1"], "tests": dict(tests, command="python -m pytest"), "bench": None}
    stem = gpu_suite.results_stem(str(tmp_path), "2026-01-01", "NVIDIA H100 80GB HBM3", "abc1234-dirty", "0" * 12)
    assert stem == "2026-01-01-nvidia-h100-80gb-hbm3-abc1234-dirty"
    md_path, json_path = sorted(gpu_suite.write_results(result, str(tmp_path), stem), key=lambda p: p.endswith(".json"))
    md = open(md_path).read()
    assert "NVIDIA H100 80GB HBM3" in md and "abc1234-dirty" in md and "a.cu(3): error: x" in md
    assert "one is not two" in md and "FAIL  " in md and "build: exit code 1" in md
    assert json.load(open(json_path))["tests"]["counts"]["error"] == 1
