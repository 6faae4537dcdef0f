"""The progress line, metrics.csv and learning_curve.png of a training run."""

import csv
import math
import os
import sys
import time


class Progress:
    """One status line, redrawn in place on a terminal; a plain line every --log-every steps otherwise."""

    def __init__(self, total, start, plain, stream=sys.stderr):
        self.total, self.start_step, self.stream = total, start, stream
        self.plain = plain or not stream.isatty()
        self.t0 = time.perf_counter()

    def update(self, step, fields, final=False):
        elapsed = time.perf_counter() - self.t0
        rate = (step - self.start_step) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        width = 24
        done = int(width * step / max(self.total, 1))
        bar = "#" * done + "-" * (width - done)
        text = " | ".join([f"[{bar}] {step}/{self.total}", f"{rate:.1f} step/s", *fields, f"eta {duration(eta)}"])
        if self.plain:
            print(text, file=self.stream, flush=True)
        else:
            print("\r" + text + "\x1b[K", end="\n" if final else "", file=self.stream, flush=True)

    def message(self, text):
        print(("" if self.plain else "\r\x1b[K") + text, file=self.stream, flush=True)


def duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def read_metrics(path):
    """The rows of a metrics.csv as dicts of floats (empty fields -> None)."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


def csv_fields(recipe):
    return ["step", "sequences", "wall_s", recipe.train_field, *recipe.eval_fields, "nonfinite_steps"]


def rewrite_metrics(path, fields, upto_step):
    """Start metrics.csv, or on resume drop the rows logged after the checkpoint we restart from."""
    rows = [r for r in read_metrics(path) if r["step"] <= upto_step] if os.path.exists(path) else []
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: format_value(r.get(k)) for k in fields})


def format_value(value):
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else f"{value:.6g}"


def plot_learning_curve(metrics_path, png_path, title, recipe):
    """learning_curve.png from metrics.csv: the training and evaluation cost (and accuracy, if any)."""
    from .plotting import pyplot, save

    plt = pyplot()
    if plt is None:
        return False
    rows = read_metrics(metrics_path)

    def series(field):
        return [(r["sequences"], r[field]) for r in rows if r.get(field) is not None]

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for field, label, style in [(recipe.train_field, "training batches", dict(lw=0.8, alpha=0.6)),
                                (recipe.primary, "evaluation set", dict(marker="o", ms=3)),
                                ("reference_bits", "optimal estimator", dict(ls="--", color="k", lw=1))]:
        points = series(field) if field in csv_fields(recipe) else []
        if points:
            ax.plot(*zip(*points), label=label, **style)
    if recipe.log_curve:
        ax.set_yscale("log")
    ax.set_xlabel("sequences seen")
    ax.set_ylabel(recipe.curve_label)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    accuracy = series("eval_accuracy") if "eval_accuracy" in recipe.eval_fields else []
    if accuracy:
        ax2 = ax.twinx()
        ax2.plot(*zip(*accuracy), color="tab:green", marker="s", ms=3, label="evaluation accuracy")
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.set_title(title)
    save(fig, png_path)
    return True
