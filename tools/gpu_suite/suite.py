"""The suite's options and its order: probe, build, build check, tests, bench, each within what is left
of --budget, each recording its errors and going on; the results file after every stage."""

import argparse
import json
import os
import shlex
import signal
import sys
import time

from .bench import stage_bench
from .probe_build import checkout_commit, no_gpu_reason, probe, stage_build, stage_build_check
from .proc import DEFAULT_OUT, Interrupted, elapsed, last_error_line, log, utc_now
from .pytest_run import GPU_TESTS, OUTCOMES, parse_progress, stage_tests
from .report import SHORT, results_stem, tree_fingerprint, write_results

USAGE = """One command for a GPU machine: build memops with its CUDA kernels, run the GPU tests, time the ops,
and write everything down in one results file (details: benchmarks/README.md, "The GPU suite").

    python tools/gpu_suite                       # all stages, within --budget (540 s)
    python tools/gpu_suite --quick --out "$OUT"  # shorter tests budget and bench_ops --quick
    python tools/gpu_suite --skip-build --skip-tests

Exit code 0 when every stage ran, no test failed or errored and every benchmark row checked out;
1 otherwise; 2 when there is no CUDA GPU; 130 when interrupted.
"""


def build_parser():
    p = argparse.ArgumentParser(prog="python tools/gpu_suite", description=USAGE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-build", action="store_true", help="use the extension as built (still checks build_info)")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="bench_ops --quick (0.1 s per measurement, torch.compile at paper size only) and a "
                        "shorter tests timeout")
    p.add_argument("--all-tests", action="store_true", help="the whole test suite (tests/), not only the GPU tests")
    p.add_argument("--tests-k", default=GPU_TESTS["k"], metavar="EXPR",
                   help=f"pytest -k expression of the GPU tests (default {GPU_TESTS['k']!r})")
    p.add_argument("--test-paths", nargs="+", default=None, metavar="PATH",
                   help=f"what pytest runs (default {' '.join(GPU_TESTS['paths'])}; --all-tests: tests)")
    p.add_argument("--test-restarts", type=int, default=5, metavar="N",
                   help="start pytest again (without the tests done) at most N times after it crashes or stops on "
                        "a CUDA error that ruins the context (default 5)")
    p.add_argument("--no-require-extension", dest="require_extension", action="store_false",
                   help="do not set MEMOPS_REQUIRE_EXTENSION=1 for the tests (a missing extension then skips)")
    p.add_argument("--bench-ops", nargs="+", metavar="OP", help="bench_ops.py --ops (default: its default ops)")
    p.add_argument("--min-run-time", type=float, default=None,
                   help="bench seconds per measurement (default 0.2; --quick 0.1)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"where the results go (default {os.path.relpath(DEFAULT_OUT)})")
    p.add_argument("--budget", type=float, default=540, metavar="SECONDS",
                   help="the whole suite's time; stage timeouts are cut to fit (default 540)")
    p.add_argument("--build-timeout", type=float, default=330, metavar="SECONDS")
    p.add_argument("--test-timeout", type=float, default=None, metavar="SECONDS",
                   help="at most this for the tests (default 300, --quick 150), less if the budget is short")
    p.add_argument("--bench-reserve", type=float, default=None, metavar="SECONDS",
                   help="time kept for the bench when giving the tests theirs (default 180, --quick 100)")
    p.add_argument("--archs", default=None, help="MEMOPS_CUDA_ARCHS (default: the GPU's compute capability, e.g. 9.0)")
    p.add_argument("--jobs", type=int, default=None, help="MAX_JOBS for the build (default: the CPU count)")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run without a GPU (tests as selected, bench_ops on the CPU, no CSV): to try this script, "
                        "not to measure anything")
    return p


def run_stage(name, fn, *args):
    """fn(*args) -> (stage, data, errors); an exception other than an interrupt fails the stage."""
    try:
        return fn(*args)
    except Interrupted:
        raise
    except Exception as e:
        return {"status": "error", "seconds": 0}, None, [f"{name}: the stage raised {type(e).__name__}: {e}"]


def skipped(note=None):
    return {"status": "skipped", "seconds": 0, **({"note": note} if note else {})}


def main(argv=None):
    args = build_parser().parse_args(argv)
    started = utc_now()
    deadline = time.monotonic() + args.budget

    def remaining():
        return deadline - time.monotonic()

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)

    # --- probe -------------------------------------------------------------------------------------
    log("probe: torch, the GPU, the toolchain")
    probe_log = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"memops_gpu_suite_probe_{os.getpid()}.log")
    info, probe_run = probe(probe_log)
    if info is None:
        print(f"gpu_suite: could not inspect the machine (python -c 'import torch ...' failed: "
              f"{probe_run['error'] or last_error_line(probe_run['tail'])}; log {probe_log})", file=sys.stderr)
        return 2
    gpu = bool(info.get("cuda_available"))
    if not gpu:
        message = (f"gpu_suite: no CUDA GPU here: {no_gpu_reason(info)}.\nThis suite builds the CUDA kernels, runs the "
                   "GPU tests and times the ops on a GPU: run it on a machine with an NVIDIA GPU and a CUDA build of "
                   "torch. On a CPU: python -m pytest tests; python benchmarks/bench_ops.py --quick.")
        if not args.allow_cpu:
            _remove(probe_log)
            print(message, file=sys.stderr)
            return 2
        log(message.splitlines()[0] + " -- going on anyway (--allow-cpu): nothing here measures a GPU")
    device = "cuda" if gpu else "cpu"
    commit, fingerprint = checkout_commit(probe_log), tree_fingerprint()
    _remove(probe_log)  # what it found is in `info`; the log is kept only when the probe failed
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    stem = results_stem(out_dir, started.strftime("%Y-%m-%d"), info.get("device_name") or "cpu", commit, fingerprint)
    paths = {k: os.path.join(out_dir, f"{stem}.{suffix}") for k, suffix in (
        ("build_log", "build.log"), ("tests_log", "tests.log"), ("junit", "junit.xml"), ("progress", "tests-progress.jsonl"),
        ("bench_log", "bench.log"), ("bench_json", "bench.json"))}
    log(f"{info.get('device_name', 'no GPU')} (compute capability {info.get('capability', '-')}), torch {info.get('torch')} "
        f"(CUDA {info.get('torch_cuda')}), triton {info.get('triton', '-')}, nvcc {info.get('nvcc', '-')}, "
        f"driver {info.get('driver', '-')}; commit {commit}; results {os.path.join(out_dir, stem)}.md")

    argv_list = sys.argv[1:] if argv is None else list(argv)
    result = {
        "suite": {"version": 1, "argv": argv_list, "argv_text": shlex.join(argv_list) or "(defaults)",
                  "started_utc": started.strftime("%Y-%m-%d %H:%M:%S UTC"), "finished_utc": None, "elapsed_s": None,
                  "budget_s": args.budget, "out_dir": out_dir, "stem": stem, "options": vars(args), "files": paths,
                  "exit_code": None},
        "environment": info, "commit": commit, "tree_sha1": fingerprint,
        "stages": {"probe": {"status": "ok", "seconds": probe_run["seconds"], "note": f"device {device}"}},
        "build_info": None, "backends_cuda": None, "tests": None, "bench": None, "bench_command": None, "errors": [],
    }
    if not gpu:
        result["errors"].append("probe: no CUDA GPU (run with --allow-cpu): these results measure nothing")

    def save():
        result["suite"]["elapsed_s"] = round(elapsed(), 1)
        try:
            return write_results(result, out_dir, stem)
        except Exception as e:
            log(f"error: could not write the results: {type(e).__name__}: {e}")
            return []

    save()
    exit_code = 0
    try:
        run_stages(args, result, info, paths, gpu, device, remaining, save)
    except (Interrupted, KeyboardInterrupt) as e:
        result["errors"].append(f"suite: interrupted ({e or 'SIGINT'}); the stages after it did not run")
        log(f"interrupted ({e or 'SIGINT'}): writing what there is")
        exit_code = 130
        recover_interrupted(result, paths)

    # --- write -------------------------------------------------------------------------------------
    tests = result.get("tests") or {}
    c = tests.get("counts") or {}
    bench = result.get("bench") or {}
    if exit_code == 0 and (result["errors"] or c.get("failed") or c.get("error") or c.get("xpassed")
                           or (bench and bench.get("exit_code") not in (0, None))):
        exit_code = 1
    result["suite"]["finished_utc"] = utc_now().strftime("%Y-%m-%d %H:%M:%S UTC")
    result["suite"]["exit_code"] = exit_code
    written = save()
    print()
    log("summary")
    if c:
        print("  tests: " + ", ".join(f"{c.get(o, 0)} {o}" for o in OUTCOMES if c.get(o)) + f" of {c.get('total', 0)}")
    for line in bench.get("summary") or []:
        print(f"  bench: {line}")
    for e in result["errors"]:
        print(f"  error: {e}")
    for path in written:
        print(f"  wrote {path}")
    print(f"  exit code {exit_code}")
    return exit_code


def run_stages(args, result, info, paths, gpu, device, remaining, save):
    """build, build check, tests, bench into `result`, each timeout cut to what the budget has left;
    save() after each."""
    stages, errors = result["stages"], result["errors"]

    # --- build -------------------------------------------------------------------------------------
    if args.skip_build:
        stages["build"] = skipped()
    elif remaining() - 60 < 30:
        stages["build"] = skipped("no time left in the budget")
        errors.append("build: skipped, no time left in the budget")
    else:
        stage, _, errs = run_stage("build", stage_build, args, info, paths, min(args.build_timeout, remaining() - 60))
        stages["build"] = stage
        errors += errs
        log(f"build: {stage['status']} ({stage.get('seconds', 0):.0f} s)" + (f": {errs[0]}" if errs else ""))
    stage, checked, errs = run_stage("build check", stage_build_check, paths, gpu)
    checked = checked or {}
    stages["build check"] = stage
    result["build_info"], result["backends_cuda"] = checked.get("build_info"), checked.get("backends_cuda")
    errors += errs
    log(f"build check: {stage['status']}: {checked.get('build_info')}; backends on cuda: {checked.get('backends_cuda')}"
        + "".join(f"\n    {e}" for e in errs))
    save()

    # --- tests -------------------------------------------------------------------------------------
    if args.skip_tests:
        stages["tests"] = skipped()
    else:
        reserve = 0 if args.skip_bench else args.bench_reserve if args.bench_reserve is not None else (100 if args.quick else 180)
        cap = args.test_timeout if args.test_timeout is not None else (150 if args.quick else 300)
        if remaining() - reserve - 20 < 30:
            stages["tests"] = skipped("no time left in the budget")
            errors.append(f"tests: skipped, {remaining():.0f} s left of the budget and {reserve:.0f} s kept for the bench")
        else:
            timeout = min(cap, remaining() - reserve - 20)
            stage, tests, errs = run_stage("tests", stage_tests, args, paths, timeout, gpu)
            stages["tests"], result["tests"] = stage, tests
            errors += errs
            c = (tests or {}).get("counts") or {}
            log(f"tests: {stage['status']}: " + ", ".join(f"{c.get(o, 0)} {o}" for o in OUTCOMES if c.get(o))
                + "".join(f"\n    {e}" for e in errs))
            bad = [t for t in (tests or {}).get("tests", []) if t["outcome"] in ("failed", "error")]
            for t in bad[:25]:
                print(f"    {SHORT[t['outcome']]} {t['id']}: {t['message'].splitlines()[0][:160] if t['message'] else ''}")
            if len(bad) > 25:
                print(f"    ... and {len(bad) - 25} more: every one is in the results file")
        save()

    # --- bench -------------------------------------------------------------------------------------
    if args.skip_bench:
        stages["bench"] = skipped()
    elif remaining() - 20 < 60:
        stages["bench"] = skipped("no time left in the budget")
        errors.append(f"bench: skipped, {remaining():.0f} s left of the budget")
    else:
        stage, doc, errs = run_stage("bench", stage_bench, args, paths, remaining() - 20, device)
        stages["bench"], result["bench"], result["bench_command"] = stage, doc, stage.get("command")
        errors += errs
        log(f"bench: {stage['status']} ({stage.get('seconds', 0):.0f} s)" + "".join(f"\n    {e}" for e in errs))
    save()


def recover_interrupted(result, paths):
    """What the stage that was running when the suite was interrupted had done: the tests' progress
    file, the bench's JSON."""
    try:
        if result["tests"] is None and os.path.exists(paths["progress"]):
            progress = parse_progress(paths["progress"])
            result["tests"] = dict(progress, source="progress file (the suite was interrupted)",
                                   command="pytest (interrupted)")
        if result["bench"] is None and os.path.exists(paths["bench_json"]):
            with open(paths["bench_json"]) as f:
                result["bench"] = json.load(f)
    except Exception as e:
        result["errors"].append(f"suite: reading the interrupted stage's results: {type(e).__name__}: {e}")


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
