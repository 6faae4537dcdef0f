"""The bench stage: benchmarks/bench_ops.py on the GPU (--json into the results folder, a time budget
that fits the stage's timeout); its rows are appended to benchmarks/results/ops_gpu.csv."""

import json
import os
import shutil
import sys

from .proc import BENCH_OPS, GPU_CSV, REPO, last_error_line, log, run_command, subprocess_env


def stage_bench(args, paths, timeout, device):
    """bench_ops.py --json: (stage, the JSON it wrote or None, errors). On CUDA ops_gpu.csv is then
    copied into the results folder (when that is elsewhere)."""
    min_run_time = args.min_run_time or (0.1 if args.quick else 0.2)
    # bench_ops starts no row past its --time-budget; the rest of the timeout is its start (imports,
    # the copy bandwidth) and the last row
    budget = max(10.0, timeout - 45)
    cmd = [sys.executable, BENCH_OPS, "--device", device, "--min-run-time", f"{min_run_time:g}",
           "--json", paths["bench_json"], "--time-budget", f"{budget:.0f}"]
    if args.quick:
        cmd.append("--quick")
    if args.bench_ops:
        cmd += ["--ops", *args.bench_ops]
    if device != "cuda":
        cmd.append("--no-csv")  # (--allow-cpu) the CPU's ops.csv is not this suite's to append to
    if os.path.exists(paths["bench_json"]):
        os.remove(paths["bench_json"])
    shown = " ".join(["python", os.path.relpath(cmd[1], REPO)] + cmd[2:])
    log(f"bench: {shown} (timeout {timeout:.0f} s, log {os.path.relpath(paths['bench_log'])})")
    run = run_command(cmd, timeout=timeout, log_path=paths["bench_log"], env=subprocess_env(gpu=device == "cuda"),
                      echo=lambda line: "  " + line, grace=15)
    stage = {"status": "ok", "seconds": run["seconds"], "command": shown, "returncode": run["returncode"]}
    errors, doc = [], None
    if os.path.exists(paths["bench_json"]):
        try:
            with open(paths["bench_json"]) as f:
                doc = json.load(f)
        except Exception as e:
            errors.append(f"bench: could not read {paths['bench_json']}: {type(e).__name__}: {e}")
    if run["returncode"] is None:
        errors.append(f"bench: bench_ops.py did not run: {run['error']}")
    elif run["timed_out"]:
        errors.append(f"bench: stopped at the timeout ({timeout:.0f} s); the rows it finished are below")
    elif run["returncode"] == 2:
        errors.append(f"bench: bench_ops.py refused to run: {last_error_line(run['tail'])}")
    elif run["returncode"] != 0 and doc is None:
        errors.append(f"bench: bench_ops.py exit code {run['returncode']}: {last_error_line(run['tail'])}")
    if doc is not None:
        bad = [r for r in doc.get("rows", []) if r.get("status") in ("ERROR", "MISMATCH")]
        if bad:
            errors.append(f"bench: {len(bad)} row(s) with errors or mismatches: "
                          + "; ".join(f"{r['op']} {r['size']} {r['pass']} {r['status']}" for r in bad[:12]))
        errors += [f"bench: {e}" for e in doc.get("errors", [])]
    elif run["returncode"] is not None and not errors:
        errors.append("bench: bench_ops.py wrote no JSON")
    stage["status"] = "timeout" if run["timed_out"] else "error" if errors else "ok"
    if errors:
        stage["tail"] = run["tail"][-30:]
    if doc is not None:
        skipped = sum(r.get("status") == "SKIPPED" for r in doc.get("rows", []))
        stage["note"] = f"{len(doc.get('rows', [])) - skipped} rows timed" + (f", {skipped} skipped" if skipped else "")
    out_dir = os.path.dirname(paths["bench_json"])
    if device == "cuda" and os.path.exists(GPU_CSV) and os.path.dirname(GPU_CSV) != out_dir:
        try:
            shutil.copy(GPU_CSV, os.path.join(out_dir, "ops_gpu.csv"))
        except OSError as e:
            errors.append(f"bench: could not copy {GPU_CSV} to {out_dir}: {e}")
    return stage, doc, errors

