"""Every row of examples/checkpoints/ntm/results.json (the NTM's five tasks, the tables in the README and
RESULTS.md) is what its recorded `memops eval` command prints from a fresh clone, with today's kernels."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(REPO, "examples", "checkpoints", "ntm", "results.json")
ROWS = [(task, row) for task, entry in json.load(open(RESULTS)).items() for row in entry["rows"]]
SEQUENCES = 256  # per evaluation (examples/ntm/ship.py)


def test_all_five_tasks_are_shipped():
    assert {task for task, _ in ROWS} == {"copy", "repeat-copy", "associative-recall", "priority-sort", "ngrams"}


@pytest.mark.parametrize("task,row", ROWS, ids=[f"{t}: {r['label']}" for t, r in ROWS])
def test_shipped_ntm_row_reproduces(task, row):
    args = row["command"].split()
    assert args[:2] == ["memops", "eval"], row["command"]
    out = subprocess.run([sys.executable, "-m", "memops", *args[1:]], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    got = json.loads(out.splitlines()[-1])
    assert got["task"] == task
    # the same bits wrong (one output bit may round the other way on another machine), the same cost
    assert abs(got["eval_bit_errors"] - row["eval_bit_errors"]) * SEQUENCES <= 1, (got, row)
    assert got["eval_bits"] == pytest.approx(row["eval_bits"], rel=1e-3, abs=1e-6), (got, row)
