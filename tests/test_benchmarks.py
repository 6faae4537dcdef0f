"""The benchmark scripts still run (tiny settings, no CSV): a smoke test, not a timing."""

import os
import sys

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
