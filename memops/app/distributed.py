"""Data-parallel training under torchrun: PyTorch's DistributedDataParallel, gloo on CPU, nccl on CUDA.

Every rank draws the same global batch (batch size x world size) from the same generator and trains on
its own slice of it, so a run on K processes with batch b sees exactly the data of one process with
batch K*b, and resumes from one generator state. Rank 0 alone writes files.
"""

import os

import torch
import torch.distributed as dist


class World:
    """The process group of this run: rank and size, and the reductions the training loop needs.

    keep_group: set by `--restarts`, whose runs share one process group (closed by close_group() after
    the last): destroying the group and creating it again for the next restart hung now and then in
    init_process_group (seen on a loaded 2-core machine, about one run in three)."""

    keep_group = False

    def __init__(self, device):
        self.size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = torch.device(device)
        if self.size > 1 and not dist.is_initialized():
            if self.device.type == "cuda":
                local = int(os.environ.get("LOCAL_RANK", "0"))
                self.device = torch.device("cuda", local)
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self):
        return self.rank == 0

    def wrap(self, model):
        if self.size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)

    def sum(self, values):
        """The elementwise sum over ranks of a list of floats."""
        if self.size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj):
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self):
        if self.size > 1:
            dist.barrier()

    def close(self):
        """Leave the group together: a rank that tears gloo down while a peer still writes files and
        talks to it can abort at exit, so every rank waits for the others first."""
        if self.size > 1 and dist.is_initialized():
            dist.barrier()
            if not World.keep_group:
                dist.destroy_process_group()


def close_group():
    """Leave the process group kept for --restarts (as World.close)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def weighted_mean(world, results, counts):
    """{field: mean over every rank's evaluation}, each rank's means weighted by its sequence count.
    A field that is None on a rank with sequences is None."""
    fields = sorted(results)
    present = [0.0 if results[f] is None else 1.0 for f in fields]
    sums = world.sum([(0.0 if results[f] is None else results[f]) * counts for f in fields]
                     + [p * counts for p in present] + [counts])
    total = sums[-1]
    out = {}
    for i, f in enumerate(fields):
        out[f] = None if total == 0 or sums[len(fields) + i] < total else sums[i] / total
    return out
