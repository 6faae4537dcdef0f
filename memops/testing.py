"""Inputs and facts shared by `memops check`, the benchmarks and anyone testing an op by hand.

random_inputs: each op argument, by name, in the range a model gives it (never zeros): memory and
keys normal, beta in [0, 5], weights and kernels from a softmax, gamma in [1, 5], gate and erase in
[0, 1]. device_name: the GPU's name or the CPU model, for reports.
"""

import platform

import torch


def random_inputs(names, B, H, N, W, S, generator, dtype=torch.float64, device="cpu"):
    """{name: tensor} for the argument names given, drawn from `generator` in this order."""

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    def rand(*shape):
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    makers = {
        "memory": lambda: randn(B, N, W),
        "keys": lambda: randn(B, H, W),
        "beta": lambda: 5 * rand(B, H),
        "weights": lambda: torch.softmax(2 * randn(B, H, N), -1),
        "prev_weights": lambda: torch.softmax(2 * randn(B, H, N), -1),
        "kernel": lambda: torch.softmax(randn(B, H, S), -1),
        "gamma": lambda: 1 + 4 * rand(B, H),
        "gate": lambda: rand(B, H),
        "erase": lambda: rand(B, H, W),
        "add": lambda: randn(B, H, W),
    }
    return {name: makers[name]().to(device=device, dtype=dtype) for name in names}


def device_name(device):
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"
