"""What every benchmarks/bench_*.py script shares: timing (time_us: torch.utils.benchmark on a CPU,
triton.testing.do_bench or CUDA events on a GPU; medians, after warm-up), the environment and commit of
a run (Env, the first CSV columns), CSV appending and the printed table. Details: benchmarks/README.md.
"""

import csv
import datetime
import os
import platform
import statistics

import torch

import memops
from memops.testing import device_name, git_commit

# commit: memops.testing.git_commit, "-dirty" if the tree has changes outside benchmarks/results/
ENV_FIELDS = ["timestamp", "commit", "device", "threads", "loadavg", "torch", "cuda", "triton"]


# ---------------------------------------------------------------------------------------------------
# Environment


def triton_version():
    try:
        import triton
    except ImportError:
        return ""
    return getattr(triton, "__version__", "")


class Env:
    """Where and on what a run happens; fixed once at the start of the run."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.timestamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.commit = git_commit()
        self.device_name = device_name(self.device)
        if self.device.type == "cpu" and memops.cpu_capability():  # the CPU kernels' instruction set
            self.device_name += f" ({memops.cpu_capability()})"
        self.threads = torch.get_num_threads()
        self.loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        self.torch = torch.__version__
        self.cuda = torch.version.cuda or ""
        self.triton = triton_version()

    def busy_warning(self):
        """A warning line if other work competes for the CPUs this run's threads need, else ''."""
        cpus = os.cpu_count() or 1
        if self.device.type != "cpu" or self.threads <= 1 or self.loadavg + self.threads <= cpus + 0.5:
            return ""
        return (f"warning: the machine is busy (load average {self.loadavg:.2f} on {cpus} CPUs). With "
                f"{self.threads} threads each OpenMP region waits for its descheduled threads, and medians can "
                "come out 10-50x too slow; --threads 1 gives steadier numbers on a shared machine.")

    def columns(self):
        return dict(timestamp=self.timestamp, commit=self.commit, device=self.device_name,
                    threads=self.threads, loadavg=f"{self.loadavg:.2f}", torch=self.torch, cuda=self.cuda, triton=self.triton)

    def describe(self):
        where = f"{self.device_name}" + (f", {self.threads} thread{'s' * (self.threads != 1)}" if self.device.type == "cpu" else "")
        where += f" ({os.cpu_count()} CPUs, load average {self.loadavg:.2f})"
        return (f"{self.timestamp}  commit {self.commit}  {self.device} = {where}\n"
                f"torch {self.torch}, CUDA {self.cuda or '-'}, Triton {self.triton or '-'}, "
                f"python {platform.python_version()}")


# ---------------------------------------------------------------------------------------------------
# Timing


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_us(fn, device, *, min_run_time=1.0, warmup=3):
    """Median time of one call of `fn()` in microseconds (see the module docstring for how)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cpu":
        from torch.utils import benchmark

        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
        return timer.blocked_autorange(min_run_time=min_run_time).median * 1e6
    if device.type != "cuda":
        raise ValueError(f"no timer for {device.type} tensors")
    rep_ms = max(1, int(min_run_time * 1000))
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    if do_bench is not None:
        try:
            return do_bench(fn, warmup=max(1, rep_ms // 4), rep=rep_ms, return_mode="median") * 1e3
        except TypeError:  # older Triton: no return_mode
            return do_bench(fn, warmup=max(1, rep_ms // 4), rep=rep_ms, quantiles=[0.5])[0] * 1e3
    return _time_cuda_events(fn, device, rep_ms)


def _time_cuda_events(fn, device, rep_ms):
    """Median of per-call CUDA event timings, as many calls as fill about rep_ms."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        fn()
    end.record()
    _sync(device)
    n = max(10, min(10000, int(rep_ms / max(start.elapsed_time(end) / 5, 1e-3))))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    for s, e in events:
        s.record()
        fn()
        e.record()
    _sync(device)
    return statistics.median(s.elapsed_time(e) for s, e in events) * 1e3


# ---------------------------------------------------------------------------------------------------
# Output


def append_csv(path, rows, fields):
    """Append `rows` (dicts with keys `fields`) to the CSV at `path`, writing the header if it is new.

    An existing file with another header is left alone: a ValueError says so.
    """
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    if not new:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != list(fields):
            raise ValueError(
                f"{path} has the columns {header}, this script writes {list(fields)}; "
                "move the old file aside or pass another --csv"
            )
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def format_table(header, rows, right=()):
    """A plain-text table; columns whose index is in `right` are right-aligned."""
    cells = [[str(c) for c in r] for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(cells[0]), line(["-" * w for w in widths]), *map(line, cells[1:])])
