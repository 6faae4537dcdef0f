"""memops train / eval / plot on bAbI (the babi recipe) with tiny files the tests write: train ->
resume -> eval (--json) -> plot, the paper's schedule (ScheduledSGD), linear start ending on time,
joint training, MemNN, and the errors a user can make."""

import json

import pytest
import torch

from memops.app.babi import ScheduledSGD
from memops.app.checkpoints import load_checkpoint
from memops.app.cli import main
from memops.app.progress import read_metrics

STORY = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Where is Daniel? \thallway\t4
6 Mary travelled to the office.
7 Where is Mary? \toffice\t6
1 Sandra went to the garden.
2 Where is Sandra? \tgarden\t1
"""


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "babi"
    d.mkdir()
    (d / "qa1_single-supporting-fact_train.txt").write_text(STORY * 8)
    (d / "qa2_two-supporting-facts_train.txt").write_text(STORY.replace("Mary", "Bill") * 8)
    return d


def train(out, data, *extra):
    return main(["train", "babi", "--data", str(data), "--out", str(out), "--epochs", "2", "--ls-epochs", "1",
                 "--threads", "1", "--no-progress", *extra])


def test_train_resume_eval_plot(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert train(out, data, "--task", "1", "--steps", "4") == 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == 4 and ckpt["recipe"]["kind"] == "memn2n" and ckpt["recipe"]["task"] == 1
    assert ckpt["config"]["batch_size"] == 32 and ckpt["hyper"]["max_norm"] == 40.0
    epoch = ckpt["recipe"]["epoch_steps"]
    assert epoch == 1  # 29 training questions, batch 32
    assert train(out, data, "--task", "1", "--steps", "6", "--resume") == 0
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows if r["eval_error"] is not None] == [1, 2, 3, 4, 5, 6]
    capsys.readouterr()
    path = data / "qa1_single-supporting-fact_train.txt"
    assert main(["eval", str(out / "best.pt"), "--data", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == 1 and result["questions"] == 3  # the held-out 10% of 32 questions
    assert result["errors"] == round(result["error_rate"] * result["questions"])
    assert main(["eval", str(out / "best.pt"), "--data", str(path), "--task-option", "split=all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["questions"] == 32
    png = tmp_path / "attention.png"
    assert main(["plot", str(out / "best.pt"), "--data", str(path), "--question", "2", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(out / "best.pt"), "--question", "99", "--out", str(png)]) == 2


def test_resume_continues_exactly(tmp_path, data):
    assert train(tmp_path / "straight", data, "--steps", "4") == 0
    assert train(tmp_path / "split", data, "--steps", "2") == 0
    assert train(tmp_path / "split", data, "--steps", "4", "--resume") == 0
    a, b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_linear_start_ends_after_its_epochs(tmp_path, data):
    out = tmp_path / "ls"
    assert train(out, data, "--steps", "1") == 0
    assert load_checkpoint(out / "checkpoint.pt")["model"]["linear"].item()  # epoch 1: linear start
    assert train(out, data, "--steps", "3", "--resume") == 0
    assert not load_checkpoint(out / "checkpoint.pt")["model"]["linear"].item()
    assert train(tmp_path / "no-ls", data, "--steps", "1", "--no-linear-start") == 0
    assert not load_checkpoint(tmp_path / "no-ls" / "checkpoint.pt")["model"]["linear"].item()


def test_default_steps_are_the_papers_epochs(tmp_path, data):
    out = tmp_path / "d"
    assert main(["train", "babi", "--data", str(data), "--out", str(out), "--epochs", "3", "--threads", "1",
                 "--no-progress"]) == 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == (20 + 3) * ckpt["recipe"]["epoch_steps"]  # 20 epochs of linear start first
    assert ckpt["recipe"]["model"]["embed_size"] == 20


def test_memn2n_pe_form_code_for_new_runs_paper_for_older_checkpoints(tmp_path, data):
    """New runs use the position-encoding weights of the paper's code (--pe-form paper: the printed
    formula); a checkpoint written before pe_form existed is rebuilt with the printed formula it was
    trained with, so it evaluates as before."""
    import copy

    from memops.app.babi import BabiRecipe
    from memops.app.checkpoints import model_from_checkpoint

    assert train(tmp_path / "code", data, "--steps", "1") == 0
    state = load_checkpoint(tmp_path / "code" / "checkpoint.pt")["recipe"]
    assert state["model"]["pe_form"] == "code"
    assert BabiRecipe.restore("babi", state).build().pe_form == "code"
    older = copy.deepcopy(state)
    del older["model"]["pe_form"]
    assert BabiRecipe.restore("babi", older).build().pe_form == "paper"
    assert train(tmp_path / "paper", data, "--steps", "1", "--pe-form", "paper") == 0
    model, _, ckpt = model_from_checkpoint(str(tmp_path / "paper" / "checkpoint.pt"))
    assert ckpt["recipe"]["model"]["pe_form"] == "paper" and model.pe_form == "paper"


def test_joint_training_and_memnn(tmp_path, data, capsys):
    out = tmp_path / "joint"
    assert train(out, data, "--task", "all", "--steps", "2") == 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["recipe"]["task"] == "all" and ckpt["recipe"]["model"]["embed_size"] == 50
    assert train(tmp_path / "memnn", data, "--model", "memnn", "--steps", "3") == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "memnn" / "best.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["questions"] == 3


def test_schedule_halves_and_clips():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = ScheduledSGD([p], lr=0.01, halve_every=2, max_norm=1.0, ls_steps=1, ls_lr=0.005)
    lrs = []
    for _ in range(6):
        p.grad = torch.tensor([30.0, 40.0, 0.0])  # norm 50: clipped to 1
        before = p.detach().clone()
        opt.step()
        lrs.append(opt.param_groups[0]["lr"])
        assert torch.allclose((before - p).norm(), torch.tensor(lrs[-1]))
    assert lrs == [0.005, 0.01, 0.01, 0.005, 0.005, 0.0025]
    state = opt.state_dict()
    again = ScheduledSGD([p], lr=0.01, halve_every=2, max_norm=1.0, ls_steps=1, ls_lr=0.005)
    again.load_state_dict(state)
    assert again.steps_done == 6


@pytest.mark.parametrize("extra, words", [
    ([], "--data DIR is required"),
    (["--data", "DATA", "--task", "21"], "--task must be 1..20 or all"),
    (["--data", "DATA", "--task", "5"], "no qa5_*_train.txt"),
])
def test_user_errors(tmp_path, data, extra, words):
    extra = [str(data) if x == "DATA" else x for x in extra]
    with pytest.raises((ValueError, FileNotFoundError), match=words.replace("*", r"\*").replace(".", r"\.")):
        main(["train", "babi", "--out", str(tmp_path / "e"), "--no-progress", *extra])


def test_malformed_file_is_one_line(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "qa1_x_train.txt").write_text("1 Mary moved.\n2 Where is Mary?\tbathroom\t5\n")
    with pytest.raises(ValueError, match=r"qa1_x_train\.txt:2: supporting fact '5'"):
        main(["train", "babi", "--data", str(d), "--out", str(tmp_path / "o"), "--no-progress"])


def test_dmn_train_resume_eval_plot(tmp_path, data, capsys):
    """--model dmn: the DMN+ defaults (Adam with L2, batch 100, D 80, 3 passes), resume, best.pt by
    validation error, eval --json and the gates' plot; --hops sets the passes, --attention the episode."""
    out = tmp_path / "dmn"
    assert train(out, data, "--model", "dmn", "--steps", "2") == 0
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["recipe"]["kind"] == "dmn" and ckpt["config"]["batch_size"] == 100
    assert ckpt["recipe"]["model"] == {"vocab_size": 18, "num_answers": 4, "embed_size": 80, "passes": 3,
                                       "attention": "gru", "dropout": 0.1}
    assert ckpt["hyper"] == {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.001, "clip": 0.0}
    assert ckpt["optimizer"]["param_groups"][0]["weight_decay"] == 0.001
    assert train(out, data, "--model", "dmn", "--steps", "3", "--resume") == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3
    assert [r["step"] for r in read_metrics(out / "metrics.csv") if r["eval_error"] is not None] == [1, 2, 3]
    capsys.readouterr()
    path = data / "qa1_single-supporting-fact_train.txt"
    assert main(["eval", str(out / "best.pt"), "--data", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["task"] == 1 and result["questions"] == 3
    assert result["errors"] == round(result["error_rate"] * result["questions"])
    png = tmp_path / "gates.png"
    assert main(["plot", str(out / "best.pt"), "--data", str(path), "--question", "2", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    small = tmp_path / "soft"
    assert train(small, data, "--model", "dmn", "--steps", "1", "--hops", "2", "--attention", "soft",
                 "--embed-size", "16", "--dropout", "0", "--batch-size", "8", "--weight-decay", "0") == 0
    ckpt = load_checkpoint(small / "checkpoint.pt")
    model = ckpt["recipe"]["model"]
    assert (model["passes"], model["attention"], model["embed_size"], model["dropout"]) == (2, "soft", 16, 0.0)
    assert ckpt["hyper"]["weight_decay"] == 0.0 and ckpt["optimizer"]["param_groups"][0]["weight_decay"] == 0.0


def test_dmn_gates_plot_draws_every_pass(tmp_path, data, monkeypatch):
    """The plot's heatmap: one row per pass, one column per fact (oldest first), the gates' values."""
    from memops.app import babi, plotting
    from memops.app.checkpoints import model_from_checkpoint

    out = tmp_path / "dmn"
    assert train(out, data, "--model", "dmn", "--steps", "1", "--hops", "2", "--embed-size", "8") == 0
    model, recipe, _ = model_from_checkpoint(str(out / "best.pt"), "cpu", None)
    drawn = {}
    monkeypatch.setattr(plotting, "save", lambda fig, path: drawn.update(image=fig.axes[0].images[0].get_array()))
    example = recipe.eval_examples(data=str(data / "qa1_single-supporting-fact_train.txt"), split="all")[4]
    assert babi.draw_gates(model, recipe, example, str(tmp_path / "g.png"), "t")
    batch = recipe._encode([example])
    _, gates = model(batch.story, batch.question, return_attention=True)
    assert drawn["image"].shape == (2, len(example.story))
    torch.testing.assert_close(torch.as_tensor(drawn["image"].data), gates[0].flip(-1).detach())


def test_bad_model_is_refused(tmp_path, data):
    with pytest.raises(ValueError, match="--model must be memn2n, memnn or dmn, got 'nse'"):
        main(["train", "babi", "--data", str(data), "--model", "nse", "--out", str(tmp_path / "e"), "--no-progress"])
    assert main(["train", "babi", "--data", str(data), "--model", "dmn+", "--out", str(tmp_path / "e")]) == 2
