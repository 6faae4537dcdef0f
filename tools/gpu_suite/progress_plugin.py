"""A pytest plugin for the suite's tests stage (pytest_run.py), loaded with `-p gpu_suite.progress_plugin`
(tools/ on PYTHONPATH). It does nothing without its environment variables:

- $MEMOPS_SUITE_PROGRESS: a file that gets one JSON line as each test starts, reports and finishes
  ({"event": "start" | "report" | "finish", "id": node id, ...}), flushed line by line, so a killed run
  still tells what ran and which test was running (the junit XML is the primary record, this the fallback);
- $MEMOPS_SUITE_STOP_ON_STICKY=1: after a test fails with a CUDA error that ruins the context, stop the
  session (exit code EXIT_STICKY) instead of failing every later CUDA test; the suite starts pytest again;
- $MEMOPS_SUITE_DESELECT: a file of node ids to deselect (the tests a previous session finished).
"""

import json
import os
import time

import pytest

from .proc import EXIT_STICKY

_PATH = os.environ.get("MEMOPS_SUITE_PROGRESS")
_DESELECT = os.environ.get("MEMOPS_SUITE_DESELECT")
_STOP_ON_STICKY = os.environ.get("MEMOPS_SUITE_STOP_ON_STICKY", "") == "1"

# CUDA errors after which every later call in the process fails the same way
STICKY_CUDA_ERRORS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                      "misaligned address", "illegal instruction", "an illegal", "launch timed out")

_file = None


def _write(record):
    global _file
    if not _PATH:
        return
    try:
        if _file is None:
            _file = open(_PATH, "a", buffering=1)
        _file.write(json.dumps(record) + "\n")
        _file.flush()
    except Exception:  # the record is a convenience: never fail a test run over it
        pass


def _text(report):
    try:
        return report.longreprtext
    except Exception:
        return str(report.longrepr or "")


def _message(report):
    if report.skipped and isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2])
    text = _text(report)
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    lines = lines or [line.rstrip() for line in text.splitlines() if line.strip()][-4:]
    return "\n".join(line[:300] for line in lines[:4])


def pytest_sessionstart(session):
    _write({"event": "session", "pid": os.getpid(), "t": time.time()})


def pytest_collection_modifyitems(config, items):
    if not _DESELECT:
        return
    try:
        with open(_DESELECT) as f:
            done = {line.strip() for line in f if line.strip()}
    except OSError:
        return
    keep = [item for item in items if item.nodeid not in done]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid in done])
        items[:] = keep


def pytest_runtest_logstart(nodeid, location):
    _write({"event": "start", "id": nodeid, "t": time.time()})


@pytest.hookimpl(trylast=True)  # after junitxml's: the XML has this test before a stop below
def pytest_runtest_logreport(report):
    # the call phase always; setup and teardown only when they do not simply pass
    if report.when != "call" and report.outcome == "passed":
        return
    outcome = report.outcome
    if hasattr(report, "wasxfail"):
        outcome = "xfailed" if report.skipped else "xpassed"
    elif report.when != "call" and outcome == "failed":
        outcome = "error"
    message = "" if outcome in ("passed", "xpassed") else _message(report)
    _write({"event": "report", "id": report.nodeid, "when": report.when, "outcome": outcome,
            "message": message, "duration": round(getattr(report, "duration", 0.0) or 0.0, 4)})
    if _STOP_ON_STICKY and report.failed and any(s in _text(report) for s in STICKY_CUDA_ERRORS):
        _write({"event": "finish", "id": report.nodeid})
        _write({"event": "sticky", "id": report.nodeid, "message": message})
        pytest.exit(f"{report.nodeid} left the CUDA context unusable ({message.splitlines()[0] if message else '?'}); "
                    "stopping this session", returncode=EXIT_STICKY)


def pytest_runtest_logfinish(nodeid, location):
    _write({"event": "finish", "id": nodeid})
