"""One command for a GPU machine: build memops with its CUDA kernels, run the GPU tests, time the ops,
and write down everything in one results file.

    python benchmarks/gpu_suite.py                       # all stages, within --budget (540 s)
    python benchmarks/gpu_suite.py --quick --out "$OUT"  # shorter tests budget and bench_ops --quick
    python benchmarks/gpu_suite.py --skip-build --skip-tests

Stages, each with its own timeout inside the overall --budget, each recording its errors and going
on to the next:
  probe   torch, CUDA, the GPU (name, compute capability, memory), driver, nvcc, triton, ninja; with
          no CUDA GPU the suite stops here with a message and exit code 2;
  build   python -m pip install --no-build-isolation --no-deps -v -e .  with MEMOPS_CUDA_ARCHS set to
          the GPU's compute capability (e.g. "9.0") and MAX_JOBS to the CPU count (no internet: no
          dependencies are fetched); if pip itself cannot run it, python setup.py build_ext --inplace.
          Then, in a fresh interpreter, memops.build_info() must say with_cuda, and
          memops.available_backends("cuda") should list cpp and triton;
  tests   python -m pytest tests -k "cuda or test_gpu" (--all-tests: every test) with a junit XML,
          MEMOPS_REQUIRE_EXTENSION=1 (a missing extension fails, not skips); each test's outcome
          and the first lines of each failure's message. On timeout pytest is interrupted (SIGINT)
          and still writes its XML; a per-test progress file (benchmarks/_suite_progress.py) covers
          a run that had to be killed, and names the test that was running. After a crash, or a
          CUDA error that ruins the context, pytest starts again without the tests done;
  bench   python benchmarks/bench_ops.py --device cuda --min-run-time 0.2 --json ... (--quick:
          bench_ops --quick): every default op, paper and large size, fwd and fwd+bwd, cpp, triton,
          eager and torch.compile(reference), GB/s and the fraction of the copy bandwidth; rows are
          appended to benchmarks/results/ops_gpu.csv;
  write   <out>/<UTC date>-<device>-<commit>.md and a .json twin with the same data (rewritten after
          every stage, so a run cut short leaves what it did), beside the stages' logs.

The out directory defaults to benchmarks/results/gpu/. Exit code: 0 when every stage ran, no test
failed or errored and every benchmark row checked out; 1 otherwise; 2 when there is no CUDA GPU.
Targets are reported, never a failure. Nothing here imports torch or memops: each stage is a
subprocess (the probe and the build check included), so a crash or a hung kernel ends one stage, not the suite.
"""

import argparse
import collections
import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(HERE, "results", "gpu")
GPU_CSV = os.path.join(HERE, "results", "ops_gpu.csv")
DEFAULT_TESTS_K = "cuda or test_gpu"

_T0 = time.monotonic()


def log(message):
    elapsed = int(time.monotonic() - _T0)
    print(f"[gpu_suite {elapsed // 60:02d}:{elapsed % 60:02d}] {message}", flush=True)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


class Interrupted(Exception):
    """SIGTERM (or SIGINT) reached the suite: write what there is and stop."""


# ---------------------------------------------------------------------------------------------------
# Running one command


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
    "seconds", "tail" (the last 60 lines), "error"}.
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
                elapsed = time.monotonic() - start
                while signals and elapsed >= signals[0][0]:
                    _, sig = signals.pop(0)
                    result["timed_out"] = True
                    log(f"  timeout after {elapsed:.0f} s: sending {sig.name} to {cmd[0]} ...")
                    _kill_group(proc, sig)
                if time.monotonic() - last_output[0] >= heartbeat:
                    log(f"  ... still running ({elapsed:.0f} s of at most {timeout:.0f} s)")
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


# ---------------------------------------------------------------------------------------------------
# The machine


PROBE = r'''
import json, os, platform, re, shutil, subprocess, sys
info = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
        "cpu_count": os.cpu_count()}
def run(cmd):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else None
    except Exception:
        return None
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = bool(torch.cuda.is_available())
    if info["cuda_available"]:
        info["device_count"] = torch.cuda.device_count()
        p = torch.cuda.get_device_properties(0)
        info["device_name"] = p.name
        info["capability"] = f"{p.major}.{p.minor}"
        info["total_memory_gib"] = round(p.total_memory / 2**30, 1)
        info["sm_count"] = p.multi_processor_count
        try:
            v = torch._C._cuda_getDriverVersion()
            info["driver_cuda_version"] = f"{v // 1000}.{v % 1000 // 10}"
        except Exception:
            pass
    try:
        from torch.utils import cpp_extension
        info["cuda_home"] = cpp_extension.CUDA_HOME
        info["ninja"] = bool(cpp_extension.is_ninja_available())
    except Exception as e:
        info["cpp_extension_error"] = repr(e)
except Exception as e:
    info["torch_error"] = f"{type(e).__name__}: {e}"
try:
    import triton
    info["triton"] = triton.__version__
except Exception as e:
    info["triton_error"] = f"{type(e).__name__}: {e}"
nvcc = os.path.join(info["cuda_home"], "bin", "nvcc") if info.get("cuda_home") else shutil.which("nvcc")
if nvcc and os.path.exists(nvcc):
    out = run([nvcc, "--version"]) or ""
    m = re.search(r"release ([0-9.]+)", out)
    info["nvcc"] = (m.group(1) if m else (out.splitlines() or ["?"])[-1]) if out else None
    info["nvcc_path"] = nvcc
smi = shutil.which("nvidia-smi")
if smi:
    out = run([smi, "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader"])
    if out:
        info["nvidia_smi"] = out.splitlines()[0]
        info["driver"] = out.splitlines()[0].split(",")[0].strip()
for mod in ("pip", "setuptools", "pytest"):
    try:
        info[mod] = __import__(mod).__version__
    except Exception as e:
        info[mod] = None
print("SUITE_JSON " + json.dumps(info))
'''

BUILD_CHECK = r'''
import json
info = {}
try:
    import memops
    from memops import _backend
    info["file"] = memops.__file__
    info["build_info"] = memops.build_info()
    info["backends_cuda"] = memops.available_backends("cuda")
    info["triton_why_not"] = _backend._triton_why_not("cuda")
except Exception as e:
    info["error"] = f"{type(e).__name__}: {e}"
print("SUITE_JSON " + json.dumps(info, default=str))
'''


def _python_json(code, *, env, timeout, log_path):
    """Run python -c code; parse the line "SUITE_JSON {...}" it prints. (dict or None, run result)."""
    run = run_command([sys.executable, "-c", code], timeout=timeout, log_path=log_path, env=env)
    for line in reversed(run["tail"]):
        if line.startswith("SUITE_JSON "):
            try:
                return json.loads(line[len("SUITE_JSON "):]), run
            except ValueError:
                break
    return None, run


def git_commit(repo=REPO):
    """`git rev-parse --short HEAD` plus "-dirty" if tracked or new files differ (benchmarks/results
    aside), as benchmarks/harness.py; "unknown" without git or a repository."""
    try:
        head = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=repo, text=True,
                                       stderr=subprocess.DEVNULL, timeout=30).strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    try:
        status = subprocess.check_output(["git", "status", "--porcelain", "--", ".", ":(exclude)benchmarks/results"],
                                         cwd=repo, text=True, stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return head
    return head + ("-dirty" if status.strip() else "")


def tree_fingerprint(repo=REPO):
    """sha1 (12 hex digits) of the sources: memops/, csrc/, tests/, benchmarks/*.py, setup.py,
    pyproject.toml; names and contents. It tells two "-dirty" trees apart, and stands in for the
    commit where there is no git."""
    digest = hashlib.sha1()
    exts = (".py", ".cpp", ".cu", ".cuh", ".h", ".hpp", ".toml")
    paths = [os.path.join(repo, f) for f in ("setup.py", "pyproject.toml")]
    for top in ("memops", "csrc", "tests", "benchmarks"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(repo, top)):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "results", ".pytest_cache"))
            paths += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(exts)]
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        digest.update(os.path.relpath(path, repo).encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:12]


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", (text or "unknown").lower()).strip("-") or "unknown"


def results_stem(out_dir, date, device, commit, fingerprint):
    """<UTC date>-<device slug>-<commit>, with -2, -3, ... if that .md is already there."""
    tag = commit if commit != "unknown" else f"nogit-{fingerprint[:8]}"
    stem = f"{date}-{slug(device)}-{slug(tag)}"
    candidate, n = stem, 1
    while os.path.exists(os.path.join(out_dir, candidate + ".md")):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


# ---------------------------------------------------------------------------------------------------
# Test results


def first_lines(text, n=4, width=300):
    lines = [line.rstrip() for line in (text or "").splitlines() if line.strip()]
    return "\n".join(line[:width] + ("..." if len(line) > width else "") for line in lines[:n])


def _junit_message(element):
    """The first lines of a <failure>/<error>/<skipped>: its message, else the traceback's E lines."""
    message = element.get("message") or ""
    if not message.strip():
        text = element.text or ""
        e_lines = [line[2:] for line in text.splitlines() if line.startswith("E ")]
        message = "\n".join(e_lines) if e_lines else "\n".join(text.strip().splitlines()[-4:])
    return first_lines(message)


def _node_id(case):
    """pytest's node id back from a junit <testcase>: file (xunit1 has it) or classname, then name."""
    name, classname, path = case.get("name", "?"), case.get("classname", ""), case.get("file")
    parts = classname.split(".") if classname else []
    if path and path.endswith(".py"):
        module = path[:-3].replace("\\", "/").split("/")
        if parts[:len(module)] == module:
            return "::".join([path] + parts[len(module):] + [name])
    i = len(parts)
    while i > 0 and parts[i - 1][:1].isupper():  # classes (TestX) follow the module
        i -= 1
    if i == 0:
        return "::".join(parts + [name])
    return "::".join(["/".join(parts[:i]) + ".py"] + parts[i:] + [name])


OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def parse_junit(path):
    """A pytest junit XML file -> {"counts": {outcome: n}, "tests": [{"id", "outcome", "message",
    "time"}], "suite": {tests, failures, errors, skipped, time as the XML's <testsuite> says}}.

    Outcomes: failed (a <failure>), error (an <error>: setup, teardown or collection), skipped (a
    <skipped>, xfailed when pytest marks it xfail), passed. A test with both a failure and a teardown
    error is "failed" with both messages.
    """
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    suite = {k: 0 for k in ("tests", "failures", "errors", "skipped")}
    suite["time"] = 0.0
    for s in suites:
        for k in ("tests", "failures", "errors", "skipped"):
            suite[k] += int(s.get(k) or 0)
        suite["time"] += float(s.get("time") or 0)
    tests = []
    for case in root.iter("testcase"):
        failure, error, skipped = case.find("failure"), case.find("error"), case.find("skipped")
        messages = []
        if failure is not None:
            outcome = "failed"
            messages.append(_junit_message(failure))
            if error is not None:
                messages.append("and: " + _junit_message(error))
        elif error is not None:
            outcome = "error"
            messages.append(_junit_message(error))
        elif skipped is not None:
            outcome = "xfailed" if (skipped.get("type") or "") == "pytest.xfail" else "skipped"
            messages.append(_junit_message(skipped))
        else:
            outcome = "passed"
        try:
            seconds = float(case.get("time") or 0)
        except ValueError:
            seconds = 0.0
        tests.append({"id": _node_id(case), "outcome": outcome, "message": "\n".join(m for m in messages if m),
                      "time": round(seconds, 4)})
    return {"counts": _counts(tests), "tests": tests, "suite": suite}


def _counts(tests):
    counts = {o: 0 for o in OUTCOMES}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    counts["total"] = len(tests)
    return counts


def parse_progress(path, crashed=None):
    """The progress file of benchmarks/_suite_progress.py (every pytest session of the stage, appended)
    -> the same shape as parse_junit, plus "running": the tests that started and never finished (the
    one a killed run was in), "sticky": the tests that stopped a session with a CUDA error that ruins
    the context, "sessions": how many pytest sessions wrote it. `crashed` ({id: message}) marks
    tests the process died in: they count as errors with that message."""
    crashed = crashed or {}
    order, outcome, message, started, finished, sticky, sessions = [], {}, {}, set(), set(), [], 0
    rank = {"passed": 0, "xfailed": 1, "skipped": 1, "xpassed": 2, "error": 3, "failed": 4}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            event, nid = rec.get("event"), rec.get("id", "?")
            if event == "session":
                sessions += 1
            elif event == "start":
                if nid not in started:
                    order.append(nid)
                started.add(nid)
            elif event == "finish":
                finished.add(nid)
            elif event == "sticky":
                sticky.append(nid)
            elif event == "report":
                new = rec.get("outcome", "passed")
                if nid not in outcome or rank.get(new, 0) > rank.get(outcome[nid], 0):
                    outcome[nid] = new
                    if rec.get("message"):
                        message[nid] = rec["message"]
    tests = []
    for nid in order:
        if nid in crashed:
            tests.append({"id": nid, "outcome": "error", "message": crashed[nid], "time": None})
        elif nid in finished:
            tests.append({"id": nid, "outcome": outcome.get(nid, "passed"), "message": message.get(nid, ""), "time": None})
    return {"counts": _counts(tests), "tests": tests, "suite": None, "sticky": sticky, "sessions": sessions,
            "running": [nid for nid in order if nid not in finished and nid not in crashed]}


def pytest_summary_line(lines):
    """The last line of pytest's output that reads like "3 failed, 10 passed, 2 skipped in 4.5s"."""
    pattern = re.compile(r"\d+ (passed|failed|error|errors|skipped|deselected|xfailed|xpassed)\b.* in [0-9.]+s")
    for line in reversed(lines):
        if pattern.search(line):
            return line.strip("= ").strip()
    return None


# ---------------------------------------------------------------------------------------------------
# The results file


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header, rows):
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _indent(text, prefix="    "):
    return "\n".join(prefix + line for line in text.splitlines())


SHORT = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "SKIP", "xfailed": "XFAIL", "xpassed": "XPASS"}


def render_markdown(result):
    """The human-readable results file (the .json twin has the same data)."""
    env, suite = result.get("environment") or {}, result.get("suite") or {}
    out = [f"# memops GPU suite: {env.get('device_name', 'no GPU')}, {suite.get('started_utc', '?')}", ""]
    if suite.get("finished_utc") is None:
        out += ["**Incomplete: the suite was still running (or was killed) when this was written.**", ""]
    build = result.get("build_info") or {}
    facts = [
        ("commit", f"{result.get('commit')} (source tree sha1 {result.get('tree_sha1')})"),
        ("device", f"{env.get('device_name', '-')}, compute capability {env.get('capability', '-')}, "
                   f"{env.get('total_memory_gib', '-')} GiB, {env.get('sm_count', '-')} SMs"
                   + (f" ({env.get('device_count')} GPUs, the first used)" if (env.get("device_count") or 1) > 1 else "")),
        ("driver", f"{env.get('driver', '-')} (CUDA driver API {env.get('driver_cuda_version', '-')})"
                   + (f"; nvidia-smi: {env['nvidia_smi']}" if env.get("nvidia_smi") else "")),
        ("torch", f"{env.get('torch', '-')} (CUDA {env.get('torch_cuda') or '-'})"),
        ("CUDA toolkit", f"nvcc {env.get('nvcc') or '-'} ({env.get('cuda_home') or 'no CUDA_HOME'})"),
        ("triton", env.get("triton") or f"- ({env.get('triton_error', 'not installed')})"),
        ("python", f"{env.get('python', '-')}, {env.get('cpu_count', '-')} CPUs, {env.get('platform', '-')}"),
        ("build tools", f"ninja {'yes' if env.get('ninja') else 'NO (serial build)'}, pip {env.get('pip') or '-'}, "
                        f"setuptools {env.get('setuptools') or '-'}, pytest {env.get('pytest') or '-'}"),
        ("memops build", json.dumps(build) if build else "-"),
        ("memops backends on cuda", ", ".join(result.get("backends_cuda") or []) or "-"),
        ("suite", f"{suite.get('elapsed_s', '?')} s of a {suite.get('budget_s', '?')} s budget; "
                  f"options: {suite.get('argv_text', '')}"),
    ]
    out += [markdown_table(["", ""], facts), ""]

    stages = result.get("stages") or {}
    if stages:
        out += ["## Stages", "", markdown_table(["stage", "status", "seconds", "command / note"], [
            [name, s.get("status", "?"), s.get("seconds", ""), s.get("note") or s.get("command") or ""]
            for name, s in stages.items()]), ""]

    errors = result.get("errors") or []
    out += ["## Stage errors", ""]
    out += [f"- {_cell(e)}" for e in errors] if errors else ["none"]
    out.append("")

    for name, s in stages.items():
        if s.get("compiler_errors"):
            out += [f"### {name}: the first errors in its log", "", "```", *s["compiler_errors"], "```", ""]
        if s.get("tail") and s.get("status") not in ("ok", "skipped"):
            out += [f"<details><summary>{name}: the last lines of its output</summary>", "", "```",
                    *(line.replace("```", "'``") for line in s["tail"]), "```", "", "</details>", ""]

    tests = result.get("tests")
    out += ["## Tests", ""]
    if not tests:
        out += ["not run", ""]
    else:
        c = tests.get("counts") or {}
        out += [f"`{tests.get('command', '')}`", "",
                "**" + ", ".join(f"{c.get(o, 0)} {o}" for o in OUTCOMES if c.get(o) or o in ("passed", "failed", "error"))
                + f"** of {c.get('total', 0)} (from the {tests.get('source', '?')}; pytest"
                  f"{chr(39) + 's last session' if (tests.get('sessions') or 1) > 1 else ''} says: "
                  f"{tests.get('summary_line') or '-'}; exit code {tests.get('returncode')})", ""]
        if tests.get("restarts"):
            out += ["pytest was started again without the tests done: " + "; ".join(tests["restarts"]) + ".", ""]
        if tests.get("running"):
            out += [f"Killed while running: {', '.join('`' + r + '`' for r in tests['running'])}", ""]
        bad = [t for t in tests.get("tests", []) if t["outcome"] in ("failed", "error", "xpassed")]
        if bad:
            out += [f"### Failures and errors ({len(bad)})", ""]
            for t in bad:
                out.append(f"- **{SHORT[t['outcome']]}** `{t['id']}`")
                if t.get("message"):
                    out += ["", _indent(t["message"], "      "), ""]
            out.append("")
            groups = collections.Counter((t["message"] or "").splitlines()[0][:200] if t["message"] else "(no message)"
                                         for t in bad)
            if len(groups) < len(bad):
                out += ["### Failures grouped by the first line of their message", "",
                        markdown_table(["tests", "message"], [[n, m] for m, n in groups.most_common()]), ""]
        skips = collections.Counter((t["message"] or "").splitlines()[0][:200] if t["message"] else "(no reason)"
                                    for t in tests.get("tests", []) if t["outcome"] == "skipped")
        if skips:
            out += ["### Skips by reason", "", markdown_table(["tests", "reason"], [[n, m] for m, n in skips.most_common()]), ""]
        listing = tests.get("tests", [])
        if listing:
            out += ["### Every test", "", f"<details><summary>{len(listing)} tests</summary>", "", "```"]
            out += [f"{SHORT.get(t['outcome'], t['outcome']):5} {t['id']}" for t in listing]
            out += ["```", "", "</details>", ""]

    bench = result.get("bench")
    out += ["## Benchmarks", ""]
    if not bench:
        out += ["not run", ""]
    else:
        sizes = bench.get("sizes") or {}
        out += [f"`{result.get('bench_command', 'bench_ops.py')}`", "",
                f"device {bench.get('device')}, {bench.get('dtype')}, {bench.get('min_run_time')} s per measurement "
                f"(median); backends {', '.join(bench.get('backends') or [])}; "
                + "; ".join(f"{n}: " + ",".join(f"{k}={v}" for k, v in d.items()) for n, d in sizes.items())
                + f"; {bench.get('elapsed_s')} s, of which torch.compile {bench.get('compile_s_total')} s"
                + ("" if bench.get("complete") else " (**incomplete**: the run was cut short)"), ""]
        table = bench.get("table")
        if table and table.get("rows"):
            out += [markdown_table(table["header"], table["rows"]), ""]
        for line in bench.get("summary") or []:
            out.append(f"- {line}")
        out += ["", "Targets: " + "; ".join(bench.get("targets") or []) + " (reported, never asserted)."
                + (" MB: the byte model's traffic of one call (bench_ops.traffic_bytes); GB/s = MB / median; "
                   "of copy = GB/s / the copy bandwidth measured in the same run." if bench.get("bandwidth") else ""), ""]
        row_problems = [(r, e) for r in bench.get("rows") or [] for e in (r.get("errors") or []) + (r.get("notes") or [])]
        if row_problems or bench.get("errors"):
            out += ["### Benchmark errors and notes", ""]
            out += [f"- {_cell(e)}" for e in bench.get("errors") or []]
            out += [f"- {r['op']} {r['size']} {r['pass']}: {_cell(e)}" for r, e in row_problems]
            out.append("")
    return "\n".join(out) + "\n"


def write_results(result, out_dir, stem):
    """Write <out_dir>/<stem>.md and .json (each replaced whole). Returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext, text in ((".json", json.dumps(result, indent=1, default=str)), (".md", render_markdown(result))):
        path = os.path.join(out_dir, stem + ext)
        with open(path + ".part", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".part", path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------------
# Stages


def _subprocess_env(extra=None, gpu=True):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([REPO, HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("MEMOPS_BACKEND", "MEMOPS_DEBUG") + (("TRITON_INTERPRET",) if gpu else ()):
        env.pop(name, None)
    env.update(extra or {})
    return env


def _last_error_line(lines):
    for line in reversed(lines):
        if re.search(r"\berror\b|Error|FAILED", line):
            return line.strip()[:300]
    return (lines[-1].strip()[:300] if lines else "")


_COMPILER_ERROR = re.compile(r"(\.(cu|cuh|cpp|cc|h|hpp)(\(\d+\)|:\d+:(\d+:)?)).*\berror\b|\bfatal error\b|nvcc fatal")


_PYTHON_ERROR = re.compile(r"^\s*(\w+\.)*(RuntimeError|OSError|ImportError|ModuleNotFoundError|FileNotFoundError|"
                           r"ValueError|TypeError|CalledProcessError|SystemExit|DistutilsError|CompileError)\b:")


def compiler_errors(log_path, limit=8):
    """The first compiler error lines of a build log (nvcc's "file.cu(12): error: ...", gcc's
    "file.cpp:3:4: error: ..."); pip's own last lines ("ERROR: Failed building ...") say less."""
    found, exceptions = [], []
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("$ ") or re.match(r"^\[\d+/\d+\]", line):
                    continue  # a command line, not its output
                if _COMPILER_ERROR.search(line) and line.strip() not in found:
                    found.append(line.strip()[:400])
                    if len(found) >= limit:
                        break
                elif _PYTHON_ERROR.match(line) and len(exceptions) < limit:
                    exceptions.append(line.strip()[:400])
    except OSError:
        pass
    return found or exceptions  # no compiler error: the exception that stopped setup.py (a CUDA
    #                             version mismatch, a missing module), if any


def _ninja_echo(line):
    m = re.match(r"^\[(\d+)/(\d+)\]", line)
    if not m:
        return "  " + line.strip()[:200] if re.search(r"\berror\b", line) and "-Werror" not in line else None
    source = re.search(r"\s-c\s+(\S+)", line)
    what = os.path.basename(source.group(1)) if source else ("link" if " -shared " in line or "-o " in line else "")
    return f"  build [{m.group(1)}/{m.group(2)}] {what}"


def _pytest_echo(line):
    if re.match(r"^[.FEsxX]+\s*(\[\s*\d+%\])?$", line.strip()) or pytest_summary_line([line]):
        return "  " + line.strip()
    return None


def stage_build(args, probe, paths, timeout):
    stage = {"status": "error", "seconds": 0.0, "note": None}
    extra = {"MAX_JOBS": str(args.jobs or os.cpu_count() or 4)}
    archs = args.archs or probe.get("capability")
    if archs:
        extra["MEMOPS_CUDA_ARCHS"] = archs
    env = _subprocess_env(extra)
    env.pop("MEMOPS_FORCE_CPU", None)
    stage["env"] = extra
    pip = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-v", "-e", "."]
    log(f"build: python {' '.join(pip[1:])} (MEMOPS_CUDA_ARCHS={archs or '-'}, MAX_JOBS={extra['MAX_JOBS']}, "
        f"timeout {timeout:.0f} s, log {os.path.relpath(paths['build_log'])})")
    if not probe.get("ninja"):
        log("  warning: ninja is not available: the extension compiles one file at a time (slow)")
    run = run_command(pip, timeout=timeout, log_path=paths["build_log"], env=env, echo=_ninja_echo)
    stage.update(command=run["command"], seconds=run["seconds"], returncode=run["returncode"])
    if run["returncode"] != 0 and not run["timed_out"]:
        text = "\n".join(run["tail"])
        compile_failed = (any(s in text for s in ("ninja: build stopped", "Error compiling objects", "error: command"))
                          or any(_COMPILER_ERROR.search(e) for e in compiler_errors(paths["build_log"])))
        left = timeout - run["seconds"]
        if not compile_failed and left > 30:
            fallback = [sys.executable, "setup.py", "build_ext", "--inplace"]
            log(f"  pip could not build ({_last_error_line(run['tail'])}); trying {' '.join(fallback[1:])}")
            run2 = run_command(fallback, timeout=left, log_path=paths["build_log"], env=env, echo=_ninja_echo)
            stage["fallback"] = {"command": run2["command"], "returncode": run2["returncode"], "seconds": run2["seconds"]}
            stage["seconds"] = round(stage["seconds"] + run2["seconds"], 1)
            if run2["returncode"] == 0:
                stage.update(status="ok", note=f"pip failed (rc {run['returncode']}); built in place with setup.py")
                return stage, None
            run = run2
    if run["returncode"] == 0:
        stage["status"] = "ok"
        return stage, None
    stage["status"] = "timeout" if run["timed_out"] else "failed"
    stage["tail"] = run["tail"][-30:]
    stage["compiler_errors"] = compiler_errors(paths["build_log"])
    first = stage["compiler_errors"][0] if stage["compiler_errors"] else _last_error_line(run["tail"])
    why = (f"timed out after {run['seconds']:.0f} s" if run["timed_out"] else
           run["error"] or f"exit code {run['returncode']}: {first}")
    stage["note"] = why
    return stage, f"build: {why} (log {paths['build_log']})"


def stage_build_check(paths, gpu):
    """memops.build_info() in a fresh interpreter: (stage, info, errors)."""
    info, run = _python_json(BUILD_CHECK, env=_subprocess_env(gpu=gpu), timeout=180, log_path=paths["build_log"])
    stage = {"status": "ok", "seconds": run["seconds"], "command": "python -c 'memops.build_info()'"}
    errors = []
    if info is None or "error" in info:
        why = (info or {}).get("error") or run["error"] or f"exit code {run['returncode']}: {_last_error_line(run['tail'])}"
        stage.update(status="failed", note=why)
        return stage, info or {}, [f"build check: import memops failed: {why}"]
    build = info.get("build_info") or {}
    if not build.get("built"):
        errors.append(f"build check: the compiled ops are not loaded: {build.get('error')}")
    elif gpu and not build.get("with_cuda"):
        errors.append("build check: memops.build_info()['with_cuda'] is False: the extension has no CUDA kernels "
                      "(nvcc not found, CUDA_HOME unset, or a CPU-only torch at build time)")
    if gpu and "triton" not in (info.get("backends_cuda") or []):
        errors.append(f"build check: the triton backend cannot run on cuda: {info.get('triton_why_not')}")
    if errors:
        stage.update(status="failed", note="; ".join(errors))
    stage["note"] = stage.get("note") or f"{build} from {info.get('file')}"
    return stage, info, errors


EXIT_STICKY = 75  # _suite_progress.EXIT_STICKY: a session stopped after a CUDA error that ruins the context


def stage_tests(args, paths, timeout, gpu):
    """pytest with a junit XML and the progress plugin. A session that ends in a crash (a signal) or
    stops after a CUDA error that ruins the context is started again, up to --test-restarts times,
    without the tests done (and the one it crashed in, which counts as an error)."""
    base = [sys.executable, "-m", "pytest", *args.test_paths, "-q", "--tb=short", "-p", "_suite_progress",
            "-o", "junit_family=xunit1"]
    if not args.all_tests and args.tests_k:
        base += ["-k", args.tests_k]
    deselect = paths["progress"] + ".done"
    env = _subprocess_env({"MEMOPS_SUITE_PROGRESS": paths["progress"], "MEMOPS_SUITE_STOP_ON_STICKY": "1"}, gpu=gpu)
    if args.require_extension:
        env["MEMOPS_REQUIRE_EXTENSION"] = "1"
    for path in (paths["junit"], paths["progress"], deselect):
        if os.path.exists(path):
            os.remove(path)
    start, runs, junits, crashed, restarts, done = time.monotonic(), [], [], {}, [], set()
    errors = []
    while True:
        attempt = len(runs) + 1
        junit = paths["junit"] if attempt == 1 else paths["junit"][:-len(".xml")] + f".{attempt}.xml"
        cmd = base + [f"--junitxml={junit}"]
        env["MEMOPS_SUITE_DESELECT"] = deselect if attempt > 1 else ""
        left = timeout - (time.monotonic() - start)
        log(f"tests: python {' '.join(cmd[1:])}" + (f" (session {attempt}, without the {len(done)} tests done)" if attempt > 1 else "")
            + f" (timeout {left:.0f} s, log {os.path.relpath(paths['tests_log'])})")
        run = run_command(cmd, timeout=left, log_path=paths["tests_log"], env=env, echo=_pytest_echo, grace=20)
        runs.append(run)
        junits.append(junit)
        rc = run["returncode"]
        died = rc is not None and rc < 0 and not run["timed_out"]
        if not (rc == EXIT_STICKY or died) or not os.path.exists(paths["progress"]):
            break
        progress = parse_progress(paths["progress"], crashed)
        if died:
            name = _signal_name(-rc)
            for nid in progress["running"]:
                crashed[nid] = f"the pytest process died ({name}) during this test"
            restarts.append(f"session {attempt} died ({name}) in {', '.join(progress['running']) or '?'}")
        else:
            restarts.append(f"session {attempt} stopped after a CUDA error that ruins the context, in "
                            f"{progress['sticky'][-1] if progress['sticky'] else '?'}")
        done = {t["id"] for t in progress["tests"]} | set(crashed)
        log(f"  {restarts[-1]}")
        if len(runs) > args.test_restarts or timeout - (time.monotonic() - start) < 30:
            errors.append(f"tests: {restarts[-1]}; not started again ({'--test-restarts ' + str(args.test_restarts) if len(runs) > args.test_restarts else 'no time left'}): "
                          "the tests after it did not run")
            break
        with open(deselect, "w") as f:
            f.write("\n".join(sorted(done)) + "\n")

    tests = {"command": " ".join(["python"] + base[1:] + [f"--junitxml={paths['junit']}"]), "returncode": run["returncode"],
             "timed_out": run["timed_out"], "summary_line": pytest_summary_line(run["tail"]), "source": None,
             "sessions": len(runs), "restarts": restarts}
    parsed_junits = []
    for junit in junits:
        if os.path.exists(junit):
            try:
                parsed_junits.append(parse_junit(junit))
            except Exception as e:
                errors.append(f"tests: could not parse {junit}: {type(e).__name__}: {e}")
    progress = None
    if os.path.exists(paths["progress"]):
        try:
            progress = parse_progress(paths["progress"], crashed)
            tests["running"] = progress["running"]
        except Exception as e:
            errors.append(f"tests: could not read the progress file: {type(e).__name__}: {e}")
    if len(runs) == 1 and parsed_junits:
        parsed, tests["source"] = parsed_junits[0], "junit XML"
    elif progress is not None:
        # several sessions, or one without its XML: the progress file has them all; the XML's messages
        # (pytest's own) where it has the test
        from_junit = {t["id"]: t for j in parsed_junits for t in j["tests"]}
        for t in progress["tests"]:
            if t["id"] in from_junit and t["id"] not in crashed:
                t.update(message=from_junit[t["id"]]["message"] or t["message"], time=from_junit[t["id"]]["time"])
        parsed = progress
        tests["source"] = ("progress file (no junit XML)" if len(runs) == 1 else
                           f"progress file of {len(runs)} pytest sessions, messages from their junit XML")
    else:
        parsed = parsed_junits[-1] if parsed_junits else None
        tests["source"] = "junit XML (last session only)" if parsed else None
    if parsed is not None:
        tests.update(counts=parsed["counts"], tests=parsed["tests"], junit_suite=parsed.get("suite"))
    else:
        tests.update(counts=_counts([]), tests=[])

    rc = run["returncode"]
    if rc is None:
        errors.append(f"tests: pytest did not run: {run['error']}")
    elif run["timed_out"]:
        errors.append(f"tests: stopped at the timeout ({timeout:.0f} s) after {tests['counts']['total']} tests"
                      + (f", while running {tests['running'][0]}" if tests.get("running") else "")
                      + " (results so far are below; more time: --test-timeout, --budget)")
    elif rc < 0:
        pass  # a crash: recorded above
    elif rc not in (0, 1, EXIT_STICKY):
        meaning = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}.get(rc, "?")
        errors.append(f"tests: pytest exit code {rc} ({meaning}): {_last_error_line(run['tail'])}")
    if parsed is None and rc is not None:
        errors.append("tests: no junit XML and no progress file: no per-test results")
    stage = {"status": "ok", "seconds": round(time.monotonic() - start, 1), "command": tests["command"],
             "returncode": rc, "sessions": len(runs)}
    if errors or rc not in (0, 1):
        stage["tail"] = run["tail"][-30:]
    c = tests["counts"]
    stage["status"] = ("timeout" if run["timed_out"] else "error" if errors else
                       "failed" if c.get("failed") or c.get("error") or restarts else "ok")
    stage["note"] = (tests["summary_line"] if len(runs) == 1 and tests["summary_line"] else
                     ", ".join(f"{c.get(o, 0)} {o}" for o in OUTCOMES if c.get(o)) + (f" ({len(runs)} pytest sessions)" if len(runs) > 1 else ""))
    return stage, tests, errors


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def stage_bench(args, paths, timeout, device):
    min_run_time = args.min_run_time or (0.1 if args.quick else 0.2)
    # bench_ops starts no row past its --time-budget; the rest of the timeout is its start (imports,
    # the copy bandwidth) and the last row
    budget = max(10.0, timeout - 45)
    cmd = [sys.executable, os.path.join(HERE, "bench_ops.py"), "--device", device, "--min-run-time", f"{min_run_time:g}",
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
    run = run_command(cmd, timeout=timeout, log_path=paths["bench_log"], env=_subprocess_env(gpu=device == "cuda"),
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
        errors.append(f"bench: bench_ops.py refused to run: {_last_error_line(run['tail'])}")
    elif run["returncode"] != 0 and doc is None:
        errors.append(f"bench: bench_ops.py exit code {run['returncode']}: {_last_error_line(run['tail'])}")
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
    return stage, doc, errors, shown


# ---------------------------------------------------------------------------------------------------
# Main


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skip-build", action="store_true", help="use the extension as built (still checks build_info)")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--skip-bench", action="store_true")
    p.add_argument("--quick", action="store_true",
                   help="bench_ops --quick (0.1 s per measurement, torch.compile at paper size only) and a "
                        "shorter tests timeout")
    p.add_argument("--all-tests", action="store_true", help="the whole test suite, not only -k TESTS_K")
    p.add_argument("--tests-k", default=DEFAULT_TESTS_K, metavar="EXPR",
                   help=f"pytest -k expression of the GPU tests (default {DEFAULT_TESTS_K!r})")
    p.add_argument("--test-paths", nargs="+", default=["tests"], metavar="PATH", help="what pytest runs (default tests)")
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    started = utc_now()
    deadline = time.monotonic() + args.budget

    def remaining():
        return deadline - time.monotonic()

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)

    # --- probe ---------------------------------------------------------------------------------
    log("probe: torch, the GPU, the toolchain")
    probe_log = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"memops_gpu_suite_probe_{os.getpid()}.log")
    probe, probe_run = _python_json(PROBE, env=_subprocess_env(), timeout=180, log_path=probe_log)
    if probe is None:
        print(f"gpu_suite: could not inspect the machine (python -c 'import torch ...' failed: "
              f"{probe_run['error'] or _last_error_line(probe_run['tail'])}; log {probe_log})", file=sys.stderr)
        return 2
    try:
        os.remove(probe_log)  # what it found is in `probe`; the log is kept only when it failed
    except OSError:
        pass
    gpu = bool(probe.get("cuda_available"))
    if not gpu:
        if probe.get("torch_error"):
            why = f"torch cannot be imported ({probe['torch_error']})"
        elif not probe.get("torch_cuda"):
            why = f"torch {probe.get('torch')} is a CPU-only build (torch.version.cuda is None)"
        else:
            why = (f"torch {probe.get('torch')} (CUDA {probe.get('torch_cuda')}) sees no GPU "
                   "(torch.cuda.is_available() is False: no device visible, or no driver)")
        message = (f"gpu_suite: no CUDA GPU here: {why}.\nThis suite builds the CUDA kernels, runs the GPU tests and "
                   "times the ops on a GPU: run it on a machine with an NVIDIA GPU and a CUDA build of torch. "
                   "On a CPU: python -m pytest tests; python benchmarks/bench_ops.py --quick.")
        if not args.allow_cpu:
            print(message, file=sys.stderr)
            return 2
        log(message.splitlines()[0] + " -- going on anyway (--allow-cpu): nothing here measures a GPU")
    device = "cuda" if gpu else "cpu"
    commit, fingerprint = git_commit(), tree_fingerprint()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    stem = results_stem(out_dir, started.strftime("%Y-%m-%d"), probe.get("device_name") or "cpu", commit, fingerprint)
    paths = {k: os.path.join(out_dir, f"{stem}.{suffix}") for k, suffix in (
        ("build_log", "build.log"), ("tests_log", "tests.log"), ("junit", "junit.xml"), ("progress", "tests-progress.jsonl"),
        ("bench_log", "bench.log"), ("bench_json", "bench.json"))}
    log(f"{probe.get('device_name', 'no GPU')} (compute capability {probe.get('capability', '-')}), torch {probe.get('torch')} "
        f"(CUDA {probe.get('torch_cuda')}), triton {probe.get('triton', '-')}, nvcc {probe.get('nvcc', '-')}, "
        f"driver {probe.get('driver', '-')}; commit {commit}; results {os.path.join(out_dir, stem)}.md")

    result = {
        "suite": {"version": 1, "argv": sys.argv[1:] if argv is None else list(argv),
                  "argv_text": shlex.join(sys.argv[1:] if argv is None else argv) or "(defaults)",
                  "started_utc": started.strftime("%Y-%m-%d %H:%M:%S UTC"), "finished_utc": None, "elapsed_s": None,
                  "budget_s": args.budget, "out_dir": out_dir, "stem": stem, "options": vars(args), "files": paths,
                  "exit_code": None},
        "environment": probe, "commit": commit, "tree_sha1": fingerprint,
        "stages": {"probe": {"status": "ok", "seconds": probe_run["seconds"], "note": f"device {device}"}},
        "build_info": None, "backends_cuda": None, "tests": None, "bench": None, "bench_command": None, "errors": [],
    }
    if not gpu:
        result["errors"].append("probe: no CUDA GPU (run with --allow-cpu): these results measure nothing")

    def save():
        result["suite"]["elapsed_s"] = round(time.monotonic() - _T0, 1)
        try:
            return write_results(result, out_dir, stem)
        except Exception as e:
            log(f"error: could not write the results: {type(e).__name__}: {e}")
            return []

    save()
    exit_code = 0
    try:
        # --- build ---------------------------------------------------------------------------------
        if args.skip_build:
            result["stages"]["build"] = {"status": "skipped", "seconds": 0}
        else:
            timeout = min(args.build_timeout, remaining() - 60)
            if remaining() - 60 < 30:
                result["stages"]["build"] = {"status": "skipped", "seconds": 0, "note": "no time left in the budget"}
                result["errors"].append("build: skipped, no time left in the budget")
            else:
                try:
                    stage, error = stage_build(args, probe, paths, timeout)
                except Interrupted:
                    raise
                except Exception as e:
                    stage, error = {"status": "error", "seconds": 0}, f"build: the stage raised {type(e).__name__}: {e}"
                result["stages"]["build"] = stage
                if error:
                    result["errors"].append(error)
                log(f"build: {stage['status']} ({stage.get('seconds', 0):.0f} s)" + (f": {error}" if error else ""))
        try:
            stage, info, errors = stage_build_check(paths, gpu)
        except Interrupted:
            raise
        except Exception as e:
            stage, info, errors = {"status": "error"}, {}, [f"build check: raised {type(e).__name__}: {e}"]
        result["stages"]["build check"] = stage
        result["build_info"], result["backends_cuda"] = info.get("build_info"), info.get("backends_cuda")
        result["errors"] += errors
        log(f"build check: {stage['status']}: {info.get('build_info')}; backends on cuda: {info.get('backends_cuda')}"
            + "".join(f"\n    {e}" for e in errors))
        save()

        # --- tests ---------------------------------------------------------------------------------
        if args.skip_tests:
            result["stages"]["tests"] = {"status": "skipped", "seconds": 0}
        else:
            reserve = 0 if args.skip_bench else args.bench_reserve if args.bench_reserve is not None else (100 if args.quick else 180)
            cap = args.test_timeout if args.test_timeout is not None else (150 if args.quick else 300)
            timeout = min(cap, remaining() - reserve - 20)
            if remaining() - reserve - 20 < 30:
                result["stages"]["tests"] = {"status": "skipped", "seconds": 0, "note": "no time left in the budget"}
                result["errors"].append(f"tests: skipped, {remaining():.0f} s left of the budget and {reserve:.0f} s kept for the bench")
            else:
                try:
                    stage, tests, errors = stage_tests(args, paths, timeout, gpu)
                except Interrupted:
                    raise
                except Exception as e:
                    stage, tests, errors = {"status": "error"}, None, [f"tests: the stage raised {type(e).__name__}: {e}"]
                result["stages"]["tests"], result["tests"] = stage, tests
                result["errors"] += errors
                c = (tests or {}).get("counts") or {}
                log(f"tests: {stage['status']}: " + ", ".join(f"{c.get(o, 0)} {o}" for o in OUTCOMES if c.get(o))
                    + "".join(f"\n    {e}" for e in errors))
                bad = [t for t in (tests or {}).get("tests", []) if t["outcome"] in ("failed", "error")]
                for t in bad[:25]:
                    print(f"    {SHORT[t['outcome']]} {t['id']}: {t['message'].splitlines()[0][:160] if t['message'] else ''}")
                if len(bad) > 25:
                    print(f"    ... and {len(bad) - 25} more: every one is in the results file")
            save()

        # --- bench ---------------------------------------------------------------------------------
        if args.skip_bench:
            result["stages"]["bench"] = {"status": "skipped", "seconds": 0}
        else:
            timeout = remaining() - 20
            if timeout < 60:
                result["stages"]["bench"] = {"status": "skipped", "seconds": 0, "note": "no time left in the budget"}
                result["errors"].append(f"bench: skipped, {remaining():.0f} s left of the budget")
            else:
                try:
                    stage, doc, errors, shown = stage_bench(args, paths, timeout, device)
                except Interrupted:
                    raise
                except Exception as e:
                    stage, doc, errors, shown = {"status": "error"}, None, [f"bench: the stage raised {type(e).__name__}: {e}"], None
                result["stages"]["bench"], result["bench"], result["bench_command"] = stage, doc, shown
                result["errors"] += errors
                log(f"bench: {stage['status']} ({stage.get('seconds', 0):.0f} s)" + "".join(f"\n    {e}" for e in errors))
                if device == "cuda" and os.path.exists(GPU_CSV) and os.path.abspath(os.path.dirname(GPU_CSV)) != out_dir:
                    try:
                        shutil.copy(GPU_CSV, os.path.join(out_dir, "ops_gpu.csv"))
                    except OSError as e:
                        result["errors"].append(f"bench: could not copy {GPU_CSV} to {out_dir}: {e}")
            save()
    except (Interrupted, KeyboardInterrupt) as e:
        result["errors"].append(f"suite: interrupted ({e or 'SIGINT'}); the stages after it did not run")
        log(f"interrupted ({e or 'SIGINT'}): writing what there is")
        exit_code = 130
        try:  # what the stage that was running had done
            if result["tests"] is None and os.path.exists(paths["progress"]):
                progress = parse_progress(paths["progress"])
                result["tests"] = dict(progress, source="progress file (the suite was interrupted)",
                                       command="pytest (interrupted)")
            if result["bench"] is None and os.path.exists(paths["bench_json"]):
                with open(paths["bench_json"]) as f:
                    result["bench"] = json.load(f)
        except Exception as e2:
            result["errors"].append(f"suite: reading the interrupted stage's results: {type(e2).__name__}: {e2}")

    # --- write ---------------------------------------------------------------------------------------
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


if __name__ == "__main__":
    sys.exit(main())
