"""`memops train / eval` under faults and bad input: interrupts, corrupt checkpoints, options that make no
sense, an --out that cannot take the run, a resume with other options, empty data files."""

import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from memops.app.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from memops.app.cli import main
from memops.app.progress import read_metrics

SMALL = ["--controller-size", "8", "--memory-slots", "8", "--memory-width", "4", "--batch-size", "2",
         "--threads", "1", "--no-progress", "--task-option", "max_length=3"]


def train(out, *extra, steps=4):
    return main(["train", "copy", "--out", str(out), "--steps", str(steps), "--eval-every", "2",
                 "--log-every", "1", "--eval-sequences", "8", *SMALL, *extra])


def cli(*args, timeout=300):
    """`python -m memops ARGS` in a subprocess: (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "memops", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


# ------------------------------------------------------------------------------------------------
# interrupts: finish the step, save, say how to resume, exit 130 / 143


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupt_saves_and_resumes(tmp_path, signum, code):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "memops", "train", "copy", "--out", str(out), "--steps", "1000000",
                             "--eval-every", "100000", "--log-every", "5", *SMALL],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for training to be under way (a few rows logged)
        if (out / "metrics.csv").exists() and len(read_metrics(out / "metrics.csv")) >= 3:
            break
        time.sleep(0.2)
    logged = read_metrics(out / "metrics.csv")[-1]["step"]
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "resume with: memops train copy" in err and "--resume" in err
    assert "Traceback" not in err
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] >= logged  # nothing older than the last completed step is lost
    assert not list(out.glob("*.tmp"))
    # and the run goes on from there
    assert main(["train", "copy", "--out", str(out), "--resume", "--steps", str(ckpt["step"] + 2)]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == ckpt["step"] + 2


# ------------------------------------------------------------------------------------------------
# checkpoints: a corrupt, truncated, empty, foreign or incomplete file is one clear line


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    assert train(out, steps=2) == 0
    return out / "checkpoint.pt"


def _corrupt(kind, good, path):
    data = good.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "keyless":
        ckpt = torch.load(good, weights_only=True)
        del ckpt["model"]
        torch.save(ckpt, path)
    elif kind == "old-format":
        ckpt = torch.load(good, weights_only=True)
        ckpt["format"] = "memops-checkpoint/2"
        torch.save(ckpt, path)
    elif kind == "bit-flip":  # one bit of one parameter's bytes, inside the zip archive
        path.write_bytes(data)
        with zipfile.ZipFile(path) as z:
            info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
            offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        raw = bytearray(data)
        raw[offset + info.file_size // 2] ^= 0x10
        path.write_bytes(bytes(raw))
    elif kind == "missing":
        pass
    return path


CORRUPTIONS = {"empty": "the file is empty", "truncated": "not a readable checkpoint", "foreign":
               "not a memops checkpoint", "keyless": "incomplete checkpoint, missing model", "old-format":
               "checkpoint format memops-checkpoint/2", "bit-flip": "does not match the checksum",
               "missing": "no such checkpoint file"}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_bad_checkpoint_is_one_line(tmp_path, good_checkpoint, kind):
    path = _corrupt(kind, good_checkpoint, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=CORRUPTIONS[kind]):
        load_checkpoint(path)
    code, out, err = cli("eval", path, "--sequences", "4")
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and CORRUPTIONS[kind] in lines[0], err


def test_checksum_covers_every_tensor(tmp_path, good_checkpoint):
    ckpt = load_checkpoint(good_checkpoint)
    path = tmp_path / "x.pt"
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "checksum")})
    assert load_checkpoint(path)["checksum"] == ckpt["checksum"]
    for key in ("model", "optimizer", "data_rng"):
        changed = torch.load(path, weights_only=True)
        tensor = next(t for t in _walk(changed[key]))
        tensor.view(-1)[0] += 1
        torch.save(changed, path)
        with pytest.raises(CheckpointError, match="checksum"):
            load_checkpoint(path)
        save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "checksum")})


def _walk(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk(v)


def test_a_killed_save_leaves_no_temporary(tmp_path):
    """kill -9 during a save leaves checkpoint.pt.tmp (the .pt is intact); the next run removes it."""
    assert train(tmp_path, steps=2) == 0
    (tmp_path / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")
    assert main(["train", "copy", "--out", str(tmp_path), "--resume", "--steps", "4"]) == 0
    assert not (tmp_path / "checkpoint.pt.tmp").exists()


# ------------------------------------------------------------------------------------------------
# options that make no sense are refused before anything is written


@pytest.mark.parametrize("args", [
    ["train", "copy", "--eval-sequences", "-3"], ["train", "copy", "--eval-sequences", "0"],
    ["train", "copy", "--eval-every", "0"], ["train", "copy", "--steps", "-5"], ["train", "copy", "--steps", "0"],
    ["train", "copy", "--clip", "-1"], ["train", "copy", "--batch-size", "0"], ["train", "copy", "--lr", "0"],
    ["train", "copy", "--log-every", "0"], ["train", "copy", "--threads", "0"], ["train", "copy", "--lr", "nan"],
], ids=lambda a: " ".join(a[2:]))
def test_nonsense_options_are_refused(tmp_path, capsys, args):
    out = tmp_path / "never"
    assert main([*args, "--out", str(out)]) == 2
    assert "must be" in capsys.readouterr().err
    assert not out.exists()


def test_eval_needs_a_positive_number_of_sequences(good_checkpoint, capsys):
    for n in ("-5", "0"):
        assert main(["eval", str(good_checkpoint), "--sequences", n]) == 2
        assert "must be a positive integer" in capsys.readouterr().err


def test_out_that_cannot_take_the_run(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert train(a_file) == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert train("/proc/memops-cannot-write-here") == 2
    assert "cannot write to --out" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.csv").write_text("step\n1\n")  # another run's metrics, no checkpoint
    assert train(other) == 2
    assert "another run's" in capsys.readouterr().err
    assert (other / "metrics.csv").read_text() == "step\n1\n"


# ------------------------------------------------------------------------------------------------
# --resume restores the run's options and refuses different ones


def test_bare_resume_keeps_the_runs_evaluation(tmp_path):
    assert train(tmp_path, "--eval-every", "2", "--eval-sequences", "8", steps=2) == 0
    first = load_checkpoint(tmp_path / "checkpoint.pt")
    # a bare resume: no --eval-every, --eval-sequences, model or task options on the command line
    assert main(["train", "copy", "--out", str(tmp_path), "--resume", "--steps", "4", "--no-progress"]) == 0
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["config"]["eval_every"] == 2 and ckpt["config"]["eval_sequences"] == 8
    assert ckpt["config"]["task_option"] == ["max_length=3"] and ckpt["recipe"] == first["recipe"]
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows if r["eval_bits"] is not None] == [2, 4]
    # the same evaluation set as the first part: the same cost for the same weights
    again = main(["eval", str(tmp_path / "best.pt"), "--json", "--sequences", "8", "--seed", "0"])
    assert again == 0


def test_resume_refuses_other_options(tmp_path, capsys):
    assert train(tmp_path, steps=2) == 0
    capsys.readouterr()
    assert train(tmp_path, "--resume", "--lr", "0.5", "--memory-slots", "16", steps=4) == 2
    err = capsys.readouterr().err
    assert "--lr 0.5" in err and "--memory-slots 16" in err
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert train(tmp_path, "--resume", "--threads", "1", "--log-every", "2", steps=3) == 0  # may change


# ------------------------------------------------------------------------------------------------
# empty data files


def _write_tsv(directory, train_lines, dev_lines):
    directory.mkdir()
    (directory / "train.tsv").write_text("".join(f"{line}\n" for line in train_lines))
    (directory / "dev.tsv").write_text("".join(f"{line}\n" for line in dev_lines))


def test_empty_training_or_dev_file_is_an_error(tmp_path):
    _write_tsv(tmp_path / "empty-train", [], ["good film\t1"])
    code, _, err = cli("train", "nse-classify", "--data", tmp_path / "empty-train", "--out", tmp_path / "o1",
                       "--steps", "1", "--hidden-size", "8", "--embed-size", "8")
    assert code == 2 and "train.tsv has no examples" in err and "Traceback" not in err
    _write_tsv(tmp_path / "empty-dev", ["good film\t1", "bad film\t0"], [])
    code, _, err = cli("train", "nse-classify", "--data", tmp_path / "empty-dev", "--out", tmp_path / "o2",
                       "--steps", "1", "--hidden-size", "8", "--embed-size", "8")
    assert code == 2 and "dev.tsv has no examples" in err and "Traceback" not in err


def test_empty_nli_dev_file_is_an_error(tmp_path):
    """nse-nli used to exit 0 with "dev loss 0" on an empty dev file."""
    data = tmp_path / "snli"
    data.mkdir()
    pair = '{"sentence1": "a man sleeps", "sentence2": "a person rests", "gold_label": "entailment"}\n'
    (data / "snli_train.jsonl").write_text(pair * 2)
    (data / "snli_dev.jsonl").write_text("")
    code, _, err = cli("train", "nse-nli", "--data", data, "--out", tmp_path / "o", "--steps", "1",
                       "--hidden-size", "8", "--embed-size", "8")
    assert code == 2 and "snli_dev.jsonl has no examples" in err and "Traceback" not in err


def test_plot_refuses_a_head_the_model_does_not_have(good_checkpoint, tmp_path, capsys):
    assert main(["plot", str(good_checkpoint), "--head", "5", "--out", str(tmp_path / "p.png")]) == 2
    assert "--head 5: the model has 1 read and 1 write heads" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()
