"""The bad inputs of every op, and how to call each path on them (the tests are in faces.py).

For each bad input the C++ checks (backend="cpp", csrc/validate.h), the Python checks (the reference
backend, memops/_validate.py) and the fake kernels (torch.ops.memops.<op> on device="meta" tensors
and under FakeTensorMode, what torch.compile traces with) must raise the same exception type
(ValueError for shapes, devices and values, TypeError for dtypes) with the same message, and the
message must name the argument. Then debug mode's value checks.
"""


import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import memops
from helpers import make_inputs, schema_args

B, H, N, W, S = 2, 3, 5, 4, 3


def valid(op, **kw):
    return make_inputs(op, B, H, N, W, S, seed=0, **kw)


def replace(**new):
    """A mutation: replace tensors / kwargs by name (a callable gets the old value)."""
    def mutate(tensors, kwargs):
        for name, value in new.items():
            target = tensors if name in tensors else kwargs
            target[name] = value(target[name]) if callable(value) else value
    return mutate


def f64(*shape):
    return torch.rand(*shape, dtype=torch.float64)


ALL = ("cpp", "reference", "meta", "fake")

# (id, op, make_inputs kwargs, mutation, exception, exact message, paths that must raise)
CASES = [
    # wrong rank
    ("rank-memory", "content_address", {}, replace(memory=lambda m: m[0]), ValueError,
     "content_address: memory must have shape (B, N, W) = (B, N, W), got [5, 4]", ALL),
    ("rank-beta", "content_address", {}, replace(beta=lambda b: b[..., None]), ValueError,
     "content_address: beta must have shape (B, H) = (2, 3), got [2, 3, 1]", ALL),
    ("rank-weights", "shift", {}, replace(weights=lambda w: w.reshape(-1)), ValueError,
     "shift: weights must have shape (B, H, N) = (B, H, N), got [30]", ALL),
    ("rank-gamma", "sharpen", {}, replace(gamma=lambda g: g.reshape(-1)), ValueError,
     "sharpen: gamma must have shape (B, H) = (2, 3), got [6]", ALL),
    ("rank-gate", "ntm_address", {}, replace(gate=lambda g: g[..., None]), ValueError,
     "ntm_address: gate must have shape (B, H) = (2, 3), got [2, 3, 1]", ALL),
    ("rank-add", "write", {}, replace(add=lambda a: a[0]), ValueError,
     "write: add must have shape (B, H, W) = (2, 3, 4), got [3, 4]", ALL),
    # mismatched B / H / N / W
    ("B-keys", "content_address", {}, replace(keys=f64(3, H, W)), ValueError,
     "content_address: keys must have shape (B, H, W) = (2, H, 4), got [3, 3, 4]", ALL),
    ("H-beta", "content_address", {}, replace(beta=f64(B, H + 1)), ValueError,
     "content_address: beta must have shape (B, H) = (2, 3), got [2, 4]", ALL),
    ("W-keys", "content_address", {}, replace(keys=f64(B, H, W + 1)), ValueError,
     "content_address: keys must have shape (B, H, W) = (2, H, 4), got [2, 3, 5]", ALL),
    ("B-kernel", "shift", {}, replace(kernel=f64(B + 1, H, S)), ValueError,
     "shift: kernel must have shape (B, H, S) = (2, 3, S), got [3, 3, 3]", ALL),
    ("H-gamma", "sharpen", {}, replace(gamma=f64(B, H - 1)), ValueError,
     "sharpen: gamma must have shape (B, H) = (2, 3), got [2, 2]", ALL),
    ("N-prev", "ntm_address", {}, replace(prev_weights=f64(B, H, N + 1)), ValueError,
     "ntm_address: prev_weights must have shape (B, H, N) = (2, 3, 5), got [2, 3, 6]", ALL),
    ("H-kernel", "ntm_address", {}, replace(kernel=f64(B, H + 2, S)), ValueError,
     "ntm_address: kernel must have shape (B, H, S) = (2, 3, S), got [2, 5, 3]", ALL),
    ("N-read", "read", {}, replace(weights=f64(B, H, N - 1)), ValueError,
     "read: weights must have shape (B, H, N) = (2, H, 5), got [2, 3, 4]", ALL),
    ("B-read", "read", {}, replace(weights=f64(B + 1, H, N)), ValueError,
     "read: weights must have shape (B, H, N) = (2, H, 5), got [3, 3, 5]", ALL),
    ("W-erase", "write", {}, replace(erase=f64(B, H, W + 1)), ValueError,
     "write: erase must have shape (B, H, W) = (2, 3, 4), got [2, 3, 5]", ALL),
    ("H-add", "write", {}, replace(add=f64(B, H + 1, W)), ValueError,
     "write: add must have shape (B, H, W) = (2, 3, 4), got [2, 4, 4]", ALL),
    ("H-add-no-erase", "write", dict(erase=False), replace(add=f64(B, H + 1, W)), ValueError,
     "write: add must have shape (B, H, W) = (2, 3, 4), got [2, 4, 4]", ALL),
    # even shift widths
    ("even-S", "shift", {}, replace(kernel=f64(B, H, 4)), ValueError,
     "shift: kernel width S must be odd (kernel[S // 2] is the 'stay' tap), got S = 4", ALL),
    ("zero-S", "shift", {}, replace(kernel=f64(B, H, 0)), ValueError,
     "shift: kernel width S must be odd (kernel[S // 2] is the 'stay' tap), got S = 0", ALL),
    ("even-S-ntm", "ntm_address", {}, replace(kernel=f64(B, H, 2)), ValueError,
     "ntm_address: kernel width S must be odd (kernel[S // 2] is the 'stay' tap), got S = 2", ALL),
    # mismatched dtypes
    ("dtype-keys", "content_address", {}, replace(keys=lambda k: k.float()), TypeError,
     "content_address: keys must have the dtype of memory (torch.float64), got torch.float32", ALL),
    ("dtype-kernel", "shift", {}, replace(kernel=lambda k: k.float()), TypeError,
     "shift: kernel must have the dtype of weights (torch.float64), got torch.float32", ALL),
    ("dtype-gamma", "ntm_address", {}, replace(gamma=lambda g: g.float()), TypeError,
     "ntm_address: gamma must have the dtype of memory (torch.float64), got torch.float32", ALL),
    ("dtype-erase", "write", {}, replace(erase=lambda e: e.to(torch.bfloat16)), TypeError,
     "write: erase must have the dtype of memory (torch.float64), got torch.bfloat16", ALL),
    ("dtype-weights", "read", {}, replace(weights=lambda w: w.half()), TypeError,
     "read: weights must have the dtype of memory (torch.float64), got torch.float16", ALL),
    # integer dtypes
    ("int64-memory", "content_address", {}, replace(memory=lambda m: m.long()), TypeError,
     "content_address: memory must be a floating-point tensor, got torch.int64", ALL),
    ("int32-beta", "content_address", {}, replace(beta=lambda b: b.int()), TypeError,
     "content_address: beta must be a floating-point tensor, got torch.int32", ALL),
    ("int64-weights", "sharpen", {}, replace(weights=lambda w: w.long()), TypeError,
     "sharpen: weights must be a floating-point tensor, got torch.int64", ALL),
    ("bool-add", "write", {}, replace(add=lambda a: a > 0), TypeError,
     "write: add must be a floating-point tensor, got torch.bool", ALL),
    # mask: wrong shape or dtype
    ("mask-N", "content_address", dict(mask="random"), replace(mask=torch.ones(B, N + 1, dtype=torch.bool)),
     ValueError, "content_address: mask must have shape (B, N) = (2, 5), got [2, 6]", ALL),
    ("mask-rank", "content_address", dict(mask="random"), replace(mask=torch.ones(B, H, N, dtype=torch.bool)),
     ValueError, "content_address: mask must have shape (B, N) = (2, 5), got [2, 3, 5]", ALL),
    ("mask-float", "content_address", dict(mask="random"), replace(mask=lambda m: m.double()), TypeError,
     "content_address: mask must be a bool tensor, got torch.float64", ALL),
    ("mask-int64", "content_address", dict(mask="random"), replace(mask=lambda m: m.long()), TypeError,
     "content_address: mask must be a bool tensor, got torch.int64", ALL),
    # similarity and eps
    ("similarity", "content_address", {}, replace(similarity="euclidean"), ValueError,
     "content_address: similarity must be 'cosine' or 'dot', got 'euclidean'", ALL),
    ("similarity-case", "content_address", {}, replace(similarity="Cosine"), ValueError,
     "content_address: similarity must be 'cosine' or 'dot', got 'Cosine'", ALL),
    ("eps-zero", "content_address", {}, replace(eps=0.0), ValueError,
     "content_address: eps must be positive, got 0", ALL),
    ("eps-negative", "ntm_address", {}, replace(eps=-1e-8), ValueError,
     "ntm_address: eps must be positive, got -1e-08", ALL),
    # content_scores: content_address's arguments, its own name in the messages
    ("rank-memory-scores", "content_scores", {}, replace(memory=lambda m: m[0]), ValueError,
     "content_scores: memory must have shape (B, N, W) = (B, N, W), got [5, 4]", ALL),
    ("H-beta-scores", "content_scores", {}, replace(beta=f64(B, H + 1)), ValueError,
     "content_scores: beta must have shape (B, H) = (2, 3), got [2, 4]", ALL),
    ("dtype-keys-scores", "content_scores", {}, replace(keys=lambda k: k.float()), TypeError,
     "content_scores: keys must have the dtype of memory (torch.float64), got torch.float32", ALL),
    ("mask-float-scores", "content_scores", dict(mask="random"), replace(mask=lambda m: m.double()), TypeError,
     "content_scores: mask must be a bool tensor, got torch.float64", ALL),
    ("mask-N-scores", "content_scores", dict(mask="random"), replace(mask=torch.ones(B, N + 1, dtype=torch.bool)),
     ValueError, "content_scores: mask must have shape (B, N) = (2, 5), got [2, 6]", ALL),
    ("similarity-scores", "content_scores", {}, replace(similarity="l2"), ValueError,
     "content_scores: similarity must be 'cosine' or 'dot', got 'l2'", ALL),
    ("eps-scores", "content_scores", {}, replace(eps=0.0), ValueError,
     "content_scores: eps must be positive, got 0", ALL),
    # attention_gru: B batch, F facts (N here), D state width (W here)
    ("rank-xr", "attention_gru", {}, replace(xr=lambda x: x[0]), ValueError,
     "attention_gru: xr must have shape (B, F, D) = (B, F, D), got [5, 4]", ALL),
    ("F-xh", "attention_gru", {}, replace(xh=f64(B, N + 1, W)), ValueError,
     "attention_gru: xh must have shape (B, F, D) = (2, 5, 4), got [2, 6, 4]", ALL),
    ("D-ur", "attention_gru", {}, replace(ur=f64(W, W + 1)), ValueError,
     "attention_gru: ur must have shape (D, D) = (4, 4), got [4, 5]", ALL),
    ("rank-uh", "attention_gru", {}, replace(uh=f64(W)), ValueError,
     "attention_gru: uh must have shape (D, D) = (4, 4), got [4]", ALL),
    ("D-bu", "attention_gru", {}, replace(bu=f64(W - 1)), ValueError,
     "attention_gru: bu must have shape (D) = (4), got [3]", ALL),
    ("F-gates", "attention_gru", {}, replace(gates=f64(B, N - 1)), ValueError,
     "attention_gru: gates must have shape (B, F) = (2, 5), got [2, 4]", ALL),
    ("B-h0", "attention_gru", {}, replace(h0=f64(B + 1, W)), ValueError,
     "attention_gru: h0 must have shape (B, D) = (2, 4), got [3, 4]", ALL),
    ("dtype-uh", "attention_gru", {}, replace(uh=lambda u: u.float()), TypeError,
     "attention_gru: uh must have the dtype of xr (torch.float64), got torch.float32", ALL),
    ("int64-gates", "attention_gru", {}, replace(gates=lambda g: g.long()), TypeError,
     "attention_gru: gates must be a floating-point tensor, got torch.int64", ALL),
    ("mask-F", "attention_gru", dict(mask="random"), replace(mask=torch.ones(B, N + 1, dtype=torch.bool)),
     ValueError, "attention_gru: mask must have shape (B, F) = (2, 5), got [2, 6]", ALL),
    ("mask-float-gru", "attention_gru", dict(mask="random"), replace(mask=lambda m: m.double()), TypeError,
     "attention_gru: mask must be a bool tensor, got torch.float64", ALL),
    ("device-mask-gru", "attention_gru", dict(mask="random"), replace(mask=lambda m: m.to("meta")), ValueError,
     "attention_gru: mask must be on the device of xr (cpu), got meta", ("cpp", "reference", "fake")),
    ("device-h0", "attention_gru", {}, replace(h0=lambda h: h.to("meta")), ValueError,
     "attention_gru: h0 must be on the device of xr (cpu), got meta", ("cpp", "reference", "fake")),
    ("float16-cpu-gru", "attention_gru", {},
     lambda t, k: t.update({n: v.half() for n, v in t.items()}), TypeError,
     "attention_gru: the CPU kernels take float32 or float64 tensors, got torch.float16", ("cpp", "fake")),
    # float16 on the CPU kernels (the reference runs it; a meta tensor has no CPU kernel to refuse it)
    ("float16-cpu", "read", {}, replace(memory=lambda m: m.half(), weights=lambda w: w.half()), TypeError,
     "read: the CPU kernels take float32 or float64 tensors, got torch.float16", ("cpp", "fake")),
    ("bfloat16-cpu", "sharpen", {}, replace(weights=lambda w: w.bfloat16(), gamma=lambda g: g.bfloat16()),
     TypeError, "sharpen: the CPU kernels take float32 or float64 tensors, got torch.bfloat16", ("cpp", "fake")),
    ("float16-cpu-ntm", "ntm_address", {},
     lambda t, k: t.update({n: v.half() for n, v in t.items()}), TypeError,
     "ntm_address: the CPU kernels take float32 or float64 tensors, got torch.float16", ("cpp", "fake")),
    # device mismatch (cpu vs meta): the Python checks answer on every path (a meta argument sends the
    # call to the fake kernel), and an all-meta call has no mismatch
    ("device-keys", "content_address", {}, replace(keys=lambda k: k.to("meta")), ValueError,
     "content_address: keys must be on the device of memory (cpu), got meta", ("cpp", "reference", "fake")),
    ("device-memory", "read", {}, replace(memory=lambda m: m.to("meta")), ValueError,
     "read: weights must be on the device of memory (meta), got cpu", ("cpp", "reference", "fake")),
    ("device-mask", "content_address", dict(mask="random"), replace(mask=lambda m: m.to("meta")), ValueError,
     "content_address: mask must be on the device of memory (cpu), got meta", ("cpp", "reference", "fake")),
    ("device-erase", "write", {}, replace(erase=lambda e: e.to("meta")), ValueError,
     "write: erase must be on the device of memory (cpu), got meta", ("cpp", "reference", "fake")),
]

# The C++ spells some dtypes its own way (csrc/validate.h dtype_name falls back to c10::toString):
# the same bad input gets "torch.Byte" from C++ and "torch.uint8" from Python.
CASES_DTYPE_NAMES = [
    ("mask-uint8", "content_address", dict(mask="random"), replace(mask=lambda m: m.to(torch.uint8)), TypeError,
     "content_address: mask must be a bool tensor, got torch.uint8", ALL),
    ("int16-memory", "read", {}, replace(memory=lambda m: m.to(torch.int16)), TypeError,
     "read: memory must be a floating-point tensor, got torch.int16", ALL),
    ("int8-weights", "shift", {}, replace(weights=lambda w: w.to(torch.int8)), TypeError,
     "shift: weights must be a floating-point tensor, got torch.int8", ALL),
    ("complex-memory", "write", {}, replace(memory=lambda m: m.to(torch.complex64)), TypeError,
     "write: memory must be a floating-point tensor, got torch.complex64", ALL),
]


def case_params():
    params = [pytest.param(*c, id=c[0]) for c in CASES]
    params += [pytest.param(*c, id=c[0]) for c in CASES_DTYPE_NAMES]
    return params


def error_of(fn):
    """(exception type, first line of its message), or None if fn() did not raise."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the type is what is tested
        return type(e), str(e).splitlines()[0] if str(e) else ""
    return None


def run_path(path, op, tensors, kwargs):
    if path in ("cpp", "reference", "triton"):
        return error_of(lambda: getattr(memops, op)(*tensors.values(), **kwargs, backend=path))
    args = schema_args(op, tensors, kwargs)
    if path == "meta":
        meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
        return error_of(lambda: getattr(torch.ops.memops, op)(*meta))
    with FakeTensorMode(allow_non_fake_inputs=False) as mode:
        fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        return error_of(lambda: getattr(torch.ops.memops, op)(*fake))


# ------------------------------------------------------------------------------------------------
# the backward ops check their incoming gradient (C++ and fake alike)

BACKWARD_CASES = [
    ("shift", lambda t, k: (f64(B, H, N + 1), t["weights"], t["kernel"]),
     ValueError, "shift: grad must have the output's shape [2, 3, 5], got [2, 3, 6]"),
    ("read", lambda t, k: (f64(B, H, N), t["memory"], t["weights"]),
     ValueError, "read: grad must have the output's shape [2, 3, 4], got [2, 3, 5]"),
    ("write", lambda t, k: (f64(B, N, W).float(), *t.values()),
     TypeError, "write: grad must have the dtype of the inputs (torch.float64), got torch.float32"),
    ("sharpen", lambda t, k: (f64(B, H), t["weights"], t["gamma"], t["weights"]),
     ValueError, "sharpen: grad must have the output's shape [2, 3, 5], got [2, 3]"),
    ("content_scores", lambda t, k: (f64(B, N, H), *t.values(), k["mask"], k["similarity"], k["eps"]),
     ValueError, "content_scores: grad must have the output's shape [2, 3, 5], got [2, 5, 3]"),
    ("attention_gru", lambda t, k: (f64(B, W, N), *t.values(), k["mask"], f64(B, N, W)),
     ValueError, "attention_gru: grad must have the output's shape [2, 5, 4], got [2, 4, 5]"),
    ("content_address", lambda t, k: (f64(B, N, H), *t.values(), k["mask"], f64(B, H, N), k["similarity"], k["eps"]),
     ValueError, "content_address: grad must have the output's shape [2, 3, 5], got [2, 5, 3]"),
    ("ntm_address", lambda t, k: (f64(B, H, N).float(), *t.values(), f64(B, H, N), k["eps"]),
     TypeError, "ntm_address: grad must have the dtype of the inputs (torch.float64), got torch.float32"),
]


# ------------------------------------------------------------------------------------------------
# debug mode: value ranges


DEBUG_CASES = [
    ("sharpen", "gamma", lambda t: t["gamma"].sub_(t["gamma"]).add_(0.5), "sharpen: gamma must be >= 1"),
    ("sharpen", "weights", lambda t: t["weights"][0, 1, 2].fill_(-1e-3), "sharpen: weights must be >= 0"),
    ("ntm_address", "gamma", lambda t: t["gamma"][1, 0].fill_(0.9), "ntm_address: gamma must be >= 1"),
    ("ntm_address", "gate>1", lambda t: t["gate"][0, 0].fill_(1.5), "ntm_address: gate must be <= 1"),
    ("ntm_address", "gate<0", lambda t: t["gate"][0, 0].fill_(-0.1), "ntm_address: gate must be >= 0"),
    ("ntm_address", "prev_weights", lambda t: t["prev_weights"][0, 0, 0].fill_(-0.5),
     "ntm_address: prev_weights must be >= 0"),
    ("ntm_address", "kernel", lambda t: t["kernel"][1, 2, 0].fill_(-0.5), "ntm_address: kernel must be >= 0"),
    ("content_address", "NaN-memory", lambda t: t["memory"][0, 0, 0].fill_(float("nan")),
     "content_address: memory has NaN or Inf values"),
    ("content_address", "Inf-beta", lambda t: t["beta"][0, 0].fill_(float("inf")),
     "content_address: beta has NaN or Inf values"),
    ("shift", "NaN-kernel", lambda t: t["kernel"][0, 0, 0].fill_(float("nan")), "shift: kernel has NaN or Inf values"),
    ("read", "NaN-weights", lambda t: t["weights"][1, 1, 1].fill_(float("nan")), "read: weights has NaN or Inf values"),
    ("write", "NaN-add", lambda t: t["add"][1, 1, 1].fill_(float("nan")), "write: add has NaN or Inf values"),
    ("write", "NaN-erase", lambda t: t["erase"][1, 1, 1].fill_(float("nan")), "write: erase has NaN or Inf values"),
    ("attention_gru", "gates>1", lambda t: t["gates"][0, 1].fill_(1.5), "attention_gru: gates must be <= 1"),
    ("attention_gru", "gates<0", lambda t: t["gates"][1, 0].fill_(-0.1), "attention_gru: gates must be >= 0"),
    ("attention_gru", "NaN-xh", lambda t: t["xh"][1, 2, 3].fill_(float("nan")),
     "attention_gru: xh has NaN or Inf values"),
    ("attention_gru", "Inf-ur", lambda t: t["ur"][0, 0].fill_(float("inf")), "attention_gru: ur has NaN or Inf values"),
    ("ntm_address", "NaN-keys", lambda t: t["keys"][1, 1, 1].fill_(float("nan")),
     "ntm_address: keys has NaN or Inf values"),
]
