"""What the tests, `memops check` and the benchmarks share: sample inputs, the tolerance table and its
comparison rule, the bytes a forward saves for its backward, and the facts a report names (device,
commit).

    tensors, options = sample_inputs("ntm_address", B=64, H=1, N=128, W=20, S=3, seed=0)
    out = memops.ntm_address(*tensors.values(), **options)
"""

import os
import platform
import subprocess

import torch

from .spec import SPECS, with_aliases

# ---------------------------------------------------------------------------------------------------
# Inputs in the ranges a model gives them (never zeros): memory and keys normal, beta in [0, 5],
# weights and kernels from a softmax, gamma in [1, 5], gate and erase in [0, 1], add normal.
# attention_gru has F facts and D state width: the sizes N and W stand for them (spec.with_aliases).


def _values(op, name, shape, gen, W):
    def randn():
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    def rand():
        return torch.rand(*shape, generator=gen, dtype=torch.float64)

    if name in ("memory", "keys"):
        t = randn()
        # W = 1: the cosine is sign(k m), flat, with gradients exactly 0; what any implementation
        # computes there is rounding noise of size ~eps |dsim| / |x|, unbounded for tiny |x|
        return t.sign() * (0.5 + t.abs()) if W == 1 and op in ("content_address", "content_scores", "ntm_address") else t
    if name in ("weights", "prev_weights", "kernel"):
        return torch.softmax(1.5 * randn(), dim=-1)
    if name == "beta":
        return 5 * rand()
    if name == "gamma":
        return 1 + 4 * rand()
    if name in ("gate", "erase"):
        return rand()
    if name == "add":
        return randn()
    # attention_gru: projected inputs normal; recurrent weights at nn.GRU's scale 1/sqrt(D) (states
    # neither saturated nor vanishing); gates in [0, 1]; h0 a state in (-1, 1)
    if name in ("xr", "xh"):
        return randn()
    if name in ("ur", "uh"):
        return randn() / max(1, shape[-1]) ** 0.5
    if name == "bu":
        return 0.5 * randn()
    if name == "gates":
        return rand()
    if name == "h0":
        return torch.tanh(randn())
    raise KeyError(name)


def sample_mask(kind, B, N, gen):
    """kind: None or "none" (no mask), "random" (~70% of slots kept), "empty_row" (random, and batch
    row 0 fully masked: its weights are all zero)."""
    if kind is None or kind == "none":
        return None
    if kind not in ("random", "empty_row"):
        raise ValueError(f"mask kind must be None, 'none', 'random' or 'empty_row', got {kind!r}")
    mask = torch.rand(B, N, generator=gen) < 0.7
    if kind == "empty_row" and B > 0:
        mask[0] = False
    return mask


def sample_inputs(op, B=2, H=3, N=5, W=4, S=3, *, seed=0, mask=None, similarity=None, erase=True,
                  eps=1e-8, dtype=torch.float64, device="cpu"):
    """(tensors, options) for `memops.<op>(*tensors.values(), **options)`: tensors {name: tensor} in
    schema order (write's erase is None when erase=False), drawn in float64 from `seed` and then cast;
    options the op's keyword arguments (mask, similarity, eps where the op has them)."""
    spec = SPECS[op]
    sizes = with_aliases(dict(B=B, H=H, N=N, W=W, S=S))
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, dims in spec.tensors:
        if name == "erase" and not erase:
            tensors[name] = None
            continue
        tensors[name] = _values(op, name, [sizes[d] for d in dims], gen, W).to(device=device, dtype=dtype)
    options = {}
    if "mask" in spec.options:
        m = sample_mask(mask, B, N, gen)
        options["mask"] = None if m is None else m.to(device)
    if "similarity" in spec.options:  # default: the op's own (dot for content_scores)
        options["similarity"] = similarity or ("dot" if op == "content_scores" else "cosine")
    if "eps" in spec.options:
        options["eps"] = eps
    return tensors, options


# ---------------------------------------------------------------------------------------------------
# The CUDA emulator's cases (tests/ops/test_cuda_emu.py, tools/emu_tsan.py): per op, shapes that
# reach each of its CUDA launch paths, as (B, H, N, W, S, variant) with the path in a comment.
EMULATOR_CASES = {
    "content_address": [
        (2, 3, 1, 3, 3, dict(similarity="cosine", mask="none")),      # fused, G=4 scalar loads
        (2, 3, 127, 20, 3, dict(similarity="cosine", mask="random")),  # fused, G=8 vector loads, mask
        (3, 5, 129, 65, 3, dict(similarity="dot", mask="empty_row")),  # fused, G=32 scalar, empty row
        (2, 2, 4097, 64, 3, dict(similarity="cosine", mask="random")),  # chunked, G=16 vector
        (1, 9, 300, 128, 3, dict(similarity="dot", mask="none")),      # heads past the head batch, G=32
    ],
    "ntm_address": [
        (2, 3, 1, 3, 1, {}),
        (2, 3, 127, 20, 3, {}),
        (3, 5, 129, 65, 5, {}),   # S wider than the warp count? no: S < warps
        (2, 2, 4097, 64, 3, {}),  # chunked
        (1, 2, 40, 128, 41, {}),  # S past the warp count, S == N + 1
    ],
    "shift": [
        (2, 3, 1, 1, 5, {}),
        (2, 3, 127, 1, 3, {}),    # backward: a block reduction per tap
        (2, 3, 129, 1, 41, {}),   # backward: a warp per tap
        (1, 2, 4097, 1, 5, {}),   # forward: a row over many blocks; backward 1024 threads
    ],
    "sharpen": [
        (2, 3, 1, 1, 1, {}),
        (2, 3, 129, 1, 1, {}),
        (1, 2, 4097, 1, 1, {}),    # shared-memory cache
        (1, 1, 20000, 1, 1, {}),   # past the cache
    ],
    "read": [
        (2, 3, 1, 3, 1, {}),
        (2, 3, 129, 20, 1, {}),
        (3, 9, 127, 65, 1, {}),    # heads past the tile, odd width
        (2, 2, 4097, 64, 1, {}),   # chunked partials and their combine
    ],
    "write": [
        (2, 3, 1, 3, 1, dict(erase=True)),
        (2, 3, 129, 20, 1, dict(erase=False)),
        (3, 9, 127, 65, 1, dict(erase=True)),
        (2, 2, 4097, 64, 1, dict(erase=True)),
        (2, 2, 4097, 64, 1, dict(erase=False)),
    ],
    "content_scores": [
        (2, 3, 127, 20, 3, dict(similarity="cosine", mask="random")),
        (2, 2, 4097, 64, 3, dict(similarity="dot", mask="empty_row")),
    ],
    "attention_gru": [  # N facts of state width W: rows past the warps (W > 4), columns past the block
        (2, 1, 5, 3, 1, dict(mask="none")),
        (3, 1, 7, 65, 1, dict(mask="empty_row")),  # 65 rows over 4 warps, a fully masked batch row
        (1, 1, 3, 129, 1, dict(mask="random")),    # 129 columns over 128 threads
    ],
}


# ---------------------------------------------------------------------------------------------------
# Tolerances: an op's result in `dtype` against the reference computed in float64 from the same
# (rounded) inputs. Elementwise |actual - expected| <= atol * max(1, max |expected|) + slack
# + rtol * |expected|: atol scales with the tensor's magnitude (gradients can be large). float32 is
# looser than torch.testing's float32-vs-float32 defaults because this is float32 against the exact
# answer: gradients through a softmax of beta * sim and through w^gamma amplify rounding.

TOLERANCES = {
    torch.float64: dict(atol=1e-10, rtol=1e-8),
    torch.float32: dict(atol=1e-5, rtol=1e-4),
    torch.float16: dict(atol=1e-3, rtol=1e-2),
    torch.bfloat16: dict(atol=8e-3, rtol=5e-2),
}

# Below float64 the table alone would be unfair where the math itself cancels (a softmax gradient
# summed over many slots): there the allowance also grows by SLACK_FACTOR times the largest error the
# reference itself makes in that dtype on the same values (no worse than the eager code, within 3x).
SLACK_FACTOR = 3.0

# torch.autograd.gradcheck in float64 (its own defaults, written down: the tests and `memops check` share them)
GRADCHECK = dict(eps=1e-6, atol=1e-5, rtol=1e-3)


def allowance(expected, dtype, scale=1.0, slack=0.0):
    """(atol, rtol) for `expected` (float64) under the table: atol already scaled by its magnitude."""
    tol = TOLERANCES[dtype]
    mag = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    return tol["atol"] * mag * scale + slack, tol["rtol"] * scale


def errors(actual, expected, dtype, scale=1.0, slack=0.0):
    """(max abs error, max relative error, within tolerance) of `actual` against float64 `expected`.
    NaN where the other is not counts as an infinite error; the relative error's floor is atol/rtol."""
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    if a.shape != e.shape:
        raise AssertionError(f"shape {list(a.shape)}, expected {list(e.shape)}")
    if a.numel() == 0:
        return 0.0, 0.0, True
    atol, rtol = allowance(e, dtype, scale, slack)
    diff = (a - e).abs()
    diff = torch.where(torch.isnan(a) != torch.isnan(e), float("inf"), diff.nan_to_num(nan=0.0))
    ok = bool((diff <= atol + rtol * e.abs()).all())
    max_rel = (diff / e.abs().clamp_min(atol / rtol)).max().item()
    return diff.max().item(), max_rel, ok


def saved_tensor_bytes(forward):
    """Bytes of the tensors autograd keeps for the backward of `forward()` (each storage once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(storages.values())


# ---------------------------------------------------------------------------------------------------
# What a report names


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


CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit(repo=CHECKOUT, exclude=("benchmarks/results",)):
    """`git rev-parse --short HEAD` of `repo` (default: the checkout memops is imported from), plus
    "-dirty" if tracked or new files differ (paths in `exclude` aside); "unknown" without git."""
    try:
        head = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=repo, text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    try:
        status = subprocess.check_output(
            ["git", "status", "--porcelain", "--", ".", *(f":(exclude){p}" for p in exclude)],
            cwd=repo, text=True, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError):
        return head
    return head + ("-dirty" if status.strip() else "")


__all__ = ["sample_inputs", "sample_mask", "TOLERANCES", "SLACK_FACTOR", "GRADCHECK", "allowance", "errors",
           "device_name", "git_commit"]
