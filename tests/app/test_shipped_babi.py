"""Every shipped bAbI checkpoint (examples/checkpoints/*/qaN.pt) still gives, on its held-out 10%,
the validation error its results.json records: the numbers in the README and the RESULTS.md files
are what `memops eval` prints from a fresh clone, with today's kernels."""

import glob
import json
import os
import re

import pytest
import torch

from memops.app.checkpoints import model_from_checkpoint
from memops.app.data.babi import find_babi_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BABI = os.environ.get("MEMOPS_BABI_DATA", os.path.join(REPO, "..", "shared", "data", "babi"))
SHIPPED = os.path.join(REPO, "examples", "checkpoints")


def recorded():
    """(folder, file, task, recorded validation error, 1k or 10k) of every shipped bAbI checkpoint."""
    cases = []
    for results_path in sorted(glob.glob(os.path.join(SHIPPED, "*", "*results.json"))):
        folder = os.path.dirname(results_path)
        prefix = "memnn_" if os.path.basename(results_path).startswith("memnn_") else ""
        results = json.load(open(results_path))
        for task, entry in results.items():
            if not task.isdigit():  # (the NTM's results.json: one entry per task name)
                break
            best = entry.get("best") or entry.get("shipped")
            size = "10k" if "10k" in os.path.basename(folder) else "1k"
            cases.append((os.path.basename(folder), f"{prefix}qa{task}.pt", int(task), best["valid_error"], size))
    return cases


CASES = recorded()


def test_every_shipped_babi_folder_is_covered():
    folders = {c[0] for c in CASES}
    assert {"babi", "babi10k", "dmn1k", "dmn10k"} <= folders, folders
    assert sum(c[0] == "dmn1k" for c in CASES) == 20 and sum(c[0] == "babi" for c in CASES) == 40  # + MemNN


@pytest.mark.parametrize("folder,name,task,error,size", CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES])
def test_shipped_checkpoint_reproduces_its_validation_error(folder, name, task, error, size):
    root = os.path.join(BABI, "en-10k" if size == "10k" else "en")
    if not os.path.isdir(root):
        pytest.skip(f"the bAbI {size} files are not at {root} (set MEMOPS_BABI_DATA)")
    model, recipe, _ = model_from_checkpoint(os.path.join(SHIPPED, folder, name))
    torch.manual_seed(0)
    result = recipe.evaluate(model, recipe.eval_batches(None, 0, data=find_babi_file(root, task)), "cpu")
    questions = recipe.eval_details()["questions"]
    # the same number of wrong answers
    assert abs(result["eval_error"] - error) * questions < 0.5, (result["eval_error"], error)


def test_joint_checkpoint_reproduces_its_table():
    """joint.pt (one MemN2N for the 20 tasks) gives the per-task errors of its table in RESULTS.md."""
    root = os.path.join(BABI, "en")
    if not os.path.isdir(root):
        pytest.skip(f"the bAbI 1k files are not at {root} (set MEMOPS_BABI_DATA)")
    text = open(os.path.join(SHIPPED, "babi", "RESULTS.md")).read()
    table = text[text.index("## MemN2N trained jointly"):]
    rows = re.findall(r"^\| (\d+) \| [a-z-]+ \| [\d.]+ \((\d+)/(\d+)\) \|", table, flags=re.M)
    assert [int(r[0]) for r in rows] == list(range(1, 21))
    model, recipe, _ = model_from_checkpoint(os.path.join(SHIPPED, "babi", "joint.pt"))
    for task, errors, questions in rows:
        recipe.evaluate(model, recipe.eval_batches(None, 0, data=find_babi_file(root, int(task))), "cpu")
        details = recipe.eval_details()
        assert (details["errors"], details["questions"]) == (int(errors), int(questions)), task
