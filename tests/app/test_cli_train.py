"""memops train / eval / plot: files, resume, safe checkpoint loading, every task."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from memops.app.cli import main
from memops.app.tasks import TASKS
from memops.app.checkpoints import FORMAT, export_model, load_checkpoint
from memops.app.progress import read_metrics

SMALL = ["--controller-size", "8", "--memory-slots", "8", "--memory-width", "4", "--batch-size", "2",
         "--threads", "1", "--no-progress"]
SHORT = {"copy": ["max_length=3"], "repeat-copy": ["max_length=2", "max_repeats=2"],
         "associative-recall": ["max_items=3"], "ngrams": ["length=12"], "priority-sort": ["length=5", "num_outputs=3"]}


def train(out, *extra, task="copy", steps=4):
    options = [x for opt in SHORT[task] for x in ("--task-option", opt)]
    return main(["train", task, "--out", str(out), "--steps", str(steps), "--eval-every", "2",
                 "--log-every", "1", "--eval-sequences", "8", *SMALL, *options, *extra])


def test_train_writes_checkpoint_metrics_and_curve(tmp_path):
    assert train(tmp_path) == 0
    for name in ("checkpoint.pt", "metrics.csv", "learning_curve.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["eval_bits"] is not None for r in rows] == [False, True, False, True]
    assert all(r["train_bits"] > 0 and r["nonfinite_steps"] == 0 for r in rows)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["step"] == 4 and ckpt["sequences"] == 8 and ckpt["task"] == "copy"
    assert ckpt["recipe"]["model"]["controller_size"] == 8
    # best.pt is the checkpoint of the evaluation with the lowest cost
    best = load_checkpoint(tmp_path / "best.pt")
    evals = {r["step"]: r["eval_bits"] for r in rows if r["eval_bits"] is not None}
    assert best["step"] == min(evals, key=evals.get)
    assert best["eval"]["eval_bits"] == pytest.approx(min(evals.values()), rel=1e-5)


def test_refuses_to_overwrite_without_resume(tmp_path, capsys):
    assert train(tmp_path, steps=2) == 0
    assert train(tmp_path, steps=2) == 2
    assert "pass --resume" in capsys.readouterr().err


def test_resume_continues_exactly(tmp_path):
    """4 steps at once == 2 steps, then --resume to 4: same weights, optimizer state and losses."""
    assert train(tmp_path / "straight", steps=4) == 0
    assert train(tmp_path / "split", steps=2) == 0
    with open(tmp_path / "split" / "metrics.csv", "a") as f:  # a row logged after the checkpoint, then a crash
        f.write("3,6,9.9,1.0,,,,0\n")
    assert train(tmp_path / "split", "--resume", steps=4) == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    assert torch.equal(a["data_rng"], b["data_rng"])
    rows_a = read_metrics(tmp_path / "straight" / "metrics.csv")
    rows_b = read_metrics(tmp_path / "split" / "metrics.csv")
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4]
    for ra, rb in zip(rows_a, rows_b):
        assert ra["train_bits"] == rb["train_bits"] and ra["eval_bits"] == rb["eval_bits"]


def test_restarts_keep_the_best_and_resume(tmp_path, capsys):
    """--restarts 3: seeds 0, 1, 2 each in OUT/seedS (each the run --seed S would be), OUT/best.pt the
    restart with the lowest evaluation cost; a second start is refused; --resume continues every one."""
    out = tmp_path / "restarts"
    assert train(out, "--restarts", "3", steps=2) == 0
    assert train(tmp_path / "alone", "--seed", "1", steps=2) == 0
    alone = load_checkpoint(tmp_path / "alone" / "checkpoint.pt")
    one = load_checkpoint(out / "seed1" / "checkpoint.pt")
    for key in alone["model"]:
        torch.testing.assert_close(one["model"][key], alone["model"][key], rtol=0, atol=0, msg=key)
    bests = {s: load_checkpoint(out / f"seed{s}" / "best.pt") for s in range(3)}
    assert len({b["best"] for b in bests.values()}) > 1, "the seeds should give different costs"
    chosen = min(range(3), key=lambda s: bests[s]["best"])
    summary = json.load(open(out / "restarts.json"))
    assert summary["best_seed"] == chosen and [r["seed"] for r in summary["runs"]] == [0, 1, 2]
    assert load_checkpoint(out / "best.pt")["checksum"] == bests[chosen]["checksum"]
    assert f"best of 3 restarts by evaluation cost is seed {chosen}" in capsys.readouterr().err

    assert train(out, "--restarts", "3", steps=2) == 2
    assert "restarts.json exists" in capsys.readouterr().err
    assert train(out, "--restarts", "3", "--resume", steps=4) == 0
    assert [load_checkpoint(out / f"seed{s}" / "checkpoint.pt")["step"] for s in range(3)] == [4, 4, 4]


def test_resume_needs_a_checkpoint(tmp_path, capsys):
    assert train(tmp_path, "--resume") == 2
    assert "no checkpoint to resume at" in capsys.readouterr().err


def test_checkpoint_loading_never_runs_code(tmp_path):
    """A checkpoint that pickles an arbitrary object is refused by the weights-only loader."""
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": _Boom()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|not allowed"):
        load_checkpoint(path)
    torch.save({"format": "something else"}, path)
    with pytest.raises(ValueError, match="not a memops checkpoint"):
        load_checkpoint(path)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_trains(tmp_path, task):
    assert train(tmp_path, task=task, steps=2) == 0
    rows = read_metrics(tmp_path / "metrics.csv")
    assert rows[-1]["eval_bits"] > 0
    if task == "ngrams":
        assert rows[-1]["reference_bits"] > 0
    else:
        assert rows[-1]["reference_bits"] is None


def test_eval_and_plot(tmp_path, capsys):
    assert train(tmp_path, steps=2) == 0
    capsys.readouterr()
    ckpt = str(tmp_path / "checkpoint.pt")
    assert main(["eval", ckpt, "--length", "5", "9", "--sequences", "4", "--json", "--threads", "1"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["length"] for r in lines] == [5, 9]
    assert all(r["eval_bits"] > 0 and r["eval_bit_errors"] >= 0 and r["step"] == 2 for r in lines)

    assert main(["eval", ckpt, "--sequences", "4"]) == 0
    assert "training" in capsys.readouterr().out

    png = tmp_path / "sample.png"
    assert main(["plot", ckpt, "--out", str(png), "--length", "3"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", ckpt]) == 0
    assert (tmp_path / "plot.png").exists()


def test_exported_model_evaluates_as_the_checkpoint_and_cannot_resume(tmp_path, capsys):
    assert train(tmp_path, steps=2) == 0
    ckpt, shipped = str(tmp_path / "checkpoint.pt"), str(tmp_path / "shipped.pt")
    export_model(ckpt, shipped)
    slim = load_checkpoint(shipped)
    assert "optimizer" not in slim and os.path.getsize(shipped) < os.path.getsize(ckpt) / 2
    full = load_checkpoint(ckpt)
    assert slim["model"].keys() == full["model"].keys()
    assert all(torch.equal(full["model"][k], v) for k, v in slim["model"].items())
    capsys.readouterr()
    results = []
    for path in (ckpt, shipped):
        assert main(["eval", path, "--length", "5", "--sequences", "4", "--json", "--threads", "1"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[0] == results[1]
    assert main(["plot", shipped, "--out", str(tmp_path / "s.png"), "--length", "3"]) == 0


def test_bad_task_option(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        main(["train", "copy", "--out", str(tmp_path), "--steps", "1", "--task-option", "colour=3", *SMALL])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        main(["train", "copy", "--out", str(tmp_path), "--steps", "1", "--task-option", "colour", *SMALL])


def test_console_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "memops", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "--resume" in out.stdout and "priority-sort" in out.stdout
    out = subprocess.run([sys.executable, "-m", "memops", "--help"], capture_output=True, text=True)
    assert all(cmd in out.stdout for cmd in ("train", "eval", "plot", "check"))


def test_metrics_csv_header(tmp_path):
    assert train(tmp_path, steps=1) == 0
    with open(tmp_path / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert header == ["step", "sequences", "wall_s", "train_bits", "eval_bits", "eval_bit_errors",
                      "reference_bits", "nonfinite_steps"]


# ----------------------------------------------------------------------------------- NSE tasks

NSE_SMALL = ["--hidden-size", "8", "--batch-size", "3", "--threads", "1", "--no-progress", "--eval-every", "2",
             "--log-every", "1", "--eval-sequences", "6"]


def write_snli(directory):
    """A tiny SNLI-format train/dev pair, as a user would have on disk."""
    rows = [("A man plays a guitar .", "A person makes music .", "entailment"),
            ("A dog runs in a park .", "A cat sleeps .", "contradiction"),
            ("Two kids eat lunch .", "The kids are hungry .", "neutral"),
            ("A woman reads a book .", "Nobody reads .", "contradiction"),
            ("People walk on a beach .", "Someone is outside .", "entailment")]
    directory.mkdir()
    for split, picked in [("train", rows), ("dev", rows[:3])]:
        with open(directory / f"snli_1.0_{split}.jsonl", "w") as f:
            for p, h, label in picked:
                f.write(json.dumps({"sentence1": p, "sentence2": h, "gold_label": label}) + "\n")
    with open(directory / "vectors.txt", "w") as f:
        f.write("man 0.1 0.2 0.3 0.4\ndog 0.5 0.6 0.7 0.8\n")
    return directory


@pytest.mark.parametrize("model", ["nse", "lstm"])
def test_nse_recall_trains_resumes_and_evaluates(tmp_path, capsys, model):
    args = ["train", "nse-recall", "--model", model, "--task-option", "min_length=3", "--task-option", "max_length=6",
            "--task-option", "keys=10",
            *NSE_SMALL]
    assert main([*args, "--out", str(tmp_path / "a"), "--steps", "4"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--steps", "2"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--steps", "4", "--resume"]) == 0
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=key)
    rows = read_metrics(tmp_path / "a" / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert 0 <= rows[-1]["eval_accuracy"] <= 1 and rows[-1]["eval_loss"] > 0 and rows[-1]["train_loss"] > 0
    assert (tmp_path / "a" / "learning_curve.png").exists()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "a" / "best.pt"), "--length", "5", "--sequences", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["length"] == 5 and 0 <= result["eval_accuracy"] <= 1
    png = tmp_path / "a" / "recall.png"
    if model == "nse":  # the attention over the memory at every step, and the answer
        assert main(["plot", str(tmp_path / "a" / "best.pt"), "--out", str(png)]) == 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:  # an LSTM has no memory to draw, and plot says so
        assert main(["plot", str(tmp_path / "a" / "best.pt"), "--out", str(png)]) == 2
        refused = capsys.readouterr().err
        assert "draws NTM checkpoints, NSE checkpoints of nse-recall and MemN2N / DMN+ checkpoints of babi" in refused


def test_lstm_baseline_has_about_the_nse_parameter_count(tmp_path):
    for model in ("nse", "lstm"):
        assert main(["train", "nse-recall", "--model", model, "--out", str(tmp_path / model), "--steps", "1",
                     "--threads", "1", "--no-progress", "--eval-sequences", "2"]) == 0
    count = {m: sum(v.numel() for v in load_checkpoint(tmp_path / m / "checkpoint.pt")["model"].values())
             for m in ("nse", "lstm")}
    assert abs(count["lstm"] - count["nse"]) / count["nse"] < 0.02, count


@pytest.mark.parametrize("model", ["nse", "lstm"])
def test_nse_nli_on_snli_format_files(tmp_path, capsys, model):
    data = write_snli(tmp_path / "snli")
    out = tmp_path / "run"
    assert main(["train", "nse-nli", "--data", str(data), "--model", model, "--embed-size", "4",
                 "--glove", str(data / "vectors.txt"), "--out", str(out), "--steps", "4", *NSE_SMALL]) == 0
    assert "2 of" in capsys.readouterr().out  # words found in the GloVe file
    ckpt = load_checkpoint(out / "best.pt")
    assert "man" in ckpt["recipe"]["vocab"]
    rows = read_metrics(out / "metrics.csv")
    assert 0 <= rows[-1]["eval_accuracy"] <= 1
    assert main(["eval", str(out / "best.pt"), "--json"]) == 0  # on the dev file named in the checkpoint
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["eval_accuracy"] >= 0


def test_nse_nli_needs_data(tmp_path):
    with pytest.raises(ValueError, match="--data DIR is required"):
        main(["train", "nse-nli", "--out", str(tmp_path), "--steps", "1", *NSE_SMALL])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"one \*train\*.jsonl"):
        main(["train", "nse-nli", "--data", str(tmp_path / "empty"), "--out", str(tmp_path), "--steps", "1", *NSE_SMALL])


@pytest.mark.parametrize("model", ["nse", "lstm"])
def test_nse_classify_on_tsv_files(tmp_path, capsys, model):
    """Sentence classification from SST / GLUE style TSV files, as a user with SST on disk has them."""
    data = tmp_path / "sst"
    data.mkdir()
    rows = ["a gripping , funny film\t1", "dull and far too long\t0", "the best thing all year\t1",
            "i wanted my money back\t0", "warm , smart and moving\t1"]
    (data / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (data / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[:2]) + "\n")
    out = tmp_path / "run"
    assert main(["train", "nse-classify", "--data", str(data), "--model", model, "--embed-size", "4",
                 "--out", str(out), "--steps", "4", *NSE_SMALL]) == 0
    ckpt = load_checkpoint(out / "best.pt")
    assert ckpt["recipe"]["labels"] == ["0", "1"] and "gripping" in ckpt["recipe"]["vocab"]
    assert 0 <= read_metrics(out / "metrics.csv")[-1]["eval_accuracy"] <= 1
    capsys.readouterr()
    assert main(["eval", str(out / "best.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["eval_accuracy"] >= 0
