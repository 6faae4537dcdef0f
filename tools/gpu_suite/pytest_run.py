"""The tests stage: pytest over the GPU tests with a junit XML and progress_plugin; a session that
crashes, or stops after a CUDA error that ruins the context, is started again without the tests done.
Also the parsers of what pytest leaves (junit XML, the progress file, its summary line)."""

import json
import os
import re
import sys
import time
import xml.etree.ElementTree as ET

from .proc import EXIT_STICKY, last_error_line, log, run_command, signal_name, subprocess_env

# The GPU tests: pytest's paths and -k expression (the device fixture's cuda parameter puts "cuda" in
# every GPU test's id). --test-paths, --tests-k and --all-tests change them for one run.
GPU_TESTS = {"paths": ["tests/ops", "tests/nn"], "k": "cuda"}

OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


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
    """The progress file of progress_plugin.py (every pytest session of the stage, appended)
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
# The stage


def _pytest_echo(line):
    if re.match(r"^[.FEsxX]+\s*(\[\s*\d+%\])?$", line.strip()) or pytest_summary_line([line]):
        return "  " + line.strip()
    return None


def stage_tests(args, paths, timeout, gpu):
    """pytest with a junit XML and the progress plugin. A session that ends in a crash (a signal) or
    stops after a CUDA error that ruins the context is started again, up to --test-restarts times,
    without the tests done (and the one it crashed in, which counts as an error)."""
    selected = args.test_paths or (["tests"] if args.all_tests else GPU_TESTS["paths"])
    base = [sys.executable, "-m", "pytest", *selected, "-q", "--tb=short", "-p", "gpu_suite.progress_plugin",
            "-o", "junit_family=xunit1"]
    if not args.all_tests and args.tests_k:
        base += ["-k", args.tests_k]
    deselect = paths["progress"] + ".done"
    env = subprocess_env({"MEMOPS_SUITE_PROGRESS": paths["progress"], "MEMOPS_SUITE_STOP_ON_STICKY": "1"}, gpu=gpu)
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
            name = signal_name(-rc)
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
    parsed = _read_results(tests, junits, paths["progress"], crashed, errors)

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
        errors.append(f"tests: pytest exit code {rc} ({meaning}): {last_error_line(run['tail'])}")
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


def _read_results(tests, junits, progress_path, crashed, errors):
    """Every test's outcome into `tests` from the sessions' junit XML files and the progress file:
    the XML alone for one session, else the progress file with the XML's messages. Returns what was
    parsed (None if nothing could be); problems go to `errors`."""
    parsed_junits = []
    for junit in junits:
        if os.path.exists(junit):
            try:
                parsed_junits.append(parse_junit(junit))
            except Exception as e:
                errors.append(f"tests: could not parse {junit}: {type(e).__name__}: {e}")
    progress = None
    if os.path.exists(progress_path):
        try:
            progress = parse_progress(progress_path, crashed)
            tests["running"] = progress["running"]
        except Exception as e:
            errors.append(f"tests: could not read the progress file: {type(e).__name__}: {e}")
    sessions = len(junits)
    if sessions == 1 and parsed_junits:
        parsed, tests["source"] = parsed_junits[0], "junit XML"
    elif progress is not None:
        # several sessions, or one without its XML: the progress file has them all; the XML's messages
        # (pytest's own) where it has the test
        from_junit = {t["id"]: t for j in parsed_junits for t in j["tests"]}
        for t in progress["tests"]:
            if t["id"] in from_junit and t["id"] not in crashed:
                t.update(message=from_junit[t["id"]]["message"] or t["message"], time=from_junit[t["id"]]["time"])
        parsed = progress
        tests["source"] = ("progress file (no junit XML)" if sessions == 1 else
                           f"progress file of {sessions} pytest sessions, messages from their junit XML")
    else:
        parsed = parsed_junits[-1] if parsed_junits else None
        tests["source"] = "junit XML (last session only)" if parsed else None
    if parsed is not None:
        tests.update(counts=parsed["counts"], tests=parsed["tests"], junit_suite=parsed.get("suite"))
    else:
        tests.update(counts=_counts([]), tests=[])
    return parsed
