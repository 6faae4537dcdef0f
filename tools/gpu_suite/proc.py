"""Running one command of the suite: its own process group, output to a log, a timeout that
interrupts before it kills; the paths and the environment every stage shares."""

import collections
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TOOLS)
RESULTS = os.path.join(REPO, "benchmarks", "results")
DEFAULT_OUT = os.path.join(RESULTS, "gpu")
GPU_CSV = os.path.join(RESULTS, "ops_gpu.csv")
BENCH_OPS = os.path.join(REPO, "benchmarks", "bench_ops.py")

# pytest's exit code when progress_plugin stops a session after a CUDA error that ruins the context
EXIT_STICKY = 75

_T0 = time.monotonic()


def elapsed():
    return time.monotonic() - _T0


def log(message):
    seconds = int(elapsed())
    print(f"[gpu_suite {seconds // 60:02d}:{seconds % 60:02d}] {message}", flush=True)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


class Interrupted(Exception):
    """SIGTERM (or SIGINT) reached the suite: write what there is and stop."""


def subprocess_env(extra=None, gpu=True):
    """The environment of every stage's subprocess: the checkout (memops) and tools/ (the pytest
    plugin) on PYTHONPATH, unbuffered output, no backend or debug override from the caller."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, TOOLS] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("MEMOPS_BACKEND", "MEMOPS_DEBUG") + (("TRITON_INTERPRET",) if gpu else ()):
        env.pop(name, None)
    env.update(extra or {})
    return env


def _kill_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def run_command(cmd, *, timeout, log_path, env=None, cwd=REPO, echo=None, heartbeat=60, grace=30):
    """Run `cmd` (its own process group), its output (stdout and stderr together) into `log_path`.

    `echo(line)` returns the text to print for a line of output, or None. Past `timeout` seconds the
    group gets SIGINT (pytest and Python write what they have), then SIGTERM and SIGKILL `grace`
    seconds apart. Returns {"command", "returncode" (None if it could not start), "timed_out",
    "seconds", "tail" (the last 60 lines), "error", "log"}.
    """
    result = {"command": " ".join(cmd), "returncode": None, "timed_out": False, "seconds": 0.0, "tail": [],
              "error": None, "log": log_path}
    tail = collections.deque(maxlen=60)
    start = time.monotonic()
    last_output = [start]
    try:
        logf = open(log_path, "a", encoding="utf-8", errors="replace")
    except OSError as e:
        result["error"] = f"cannot open the log {log_path}: {e}"
        return result
    with logf:
        logf.write(f"$ {result['command']}\n(cwd {cwd}, timeout {timeout:.0f} s, started {utc_now():%Y-%m-%d %H:%M:%S} UTC)\n")
        logf.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            result["error"] = f"could not start: {e}"
            logf.write(result["error"] + "\n")
            return result

        def reader():
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                logf.write(line + "\n")
                tail.append(line)
                if echo is not None:
                    try:
                        shown = echo(line)
                    except Exception:
                        shown = None
                    if shown is not None:
                        print(shown, flush=True)
                        last_output[0] = time.monotonic()
            logf.flush()

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            signals = [(timeout, signal.SIGINT), (timeout + grace, signal.SIGTERM), (timeout + 2 * grace, signal.SIGKILL)]
            while proc.poll() is None:
                running = time.monotonic() - start
                while signals and running >= signals[0][0]:
                    _, sig = signals.pop(0)
                    result["timed_out"] = True
                    log(f"  timeout after {running:.0f} s: sending {sig.name} to {cmd[0]} ...")
                    _kill_group(proc, sig)
                if time.monotonic() - last_output[0] >= heartbeat:
                    log(f"  ... still running ({running:.0f} s of at most {timeout:.0f} s)")
                    last_output[0] = time.monotonic()
                try:
                    proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:  # Ctrl-C or SIGTERM of the suite: take the child down with it
            _kill_group(proc, signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
            raise
        finally:
            thread.join(timeout=10)
            result["seconds"] = round(time.monotonic() - start, 1)
        result["returncode"] = proc.returncode
        result["tail"] = list(tail)
        logf.write(f"(exit code {proc.returncode} after {result['seconds']} s{', timed out' if result['timed_out'] else ''})\n")
    return result


def python_json(code, *, env, timeout, log_path):
    """Run python -c code; parse the line "SUITE_JSON {...}" it prints. (dict or None, run result)."""
    run = run_command([sys.executable, "-c", code], timeout=timeout, log_path=log_path, env=env)
    for line in reversed(run["tail"]):
        if line.startswith("SUITE_JSON "):
            try:
                return json.loads(line[len("SUITE_JSON "):]), run
            except ValueError:
                break
    return None, run


def last_error_line(lines):
    for line in reversed(lines):
        if re.search(r"\berror\b|Error|FAILED", line):
            return line.strip()[:300]
    return (lines[-1].strip()[:300] if lines else "")


def signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
