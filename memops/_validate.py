"""Argument checks in Python, for the fake kernels (torch.compile) and the reference backend: the same
errors, word for word, as csrc/validate.h (ValueError for shapes, devices and values, TypeError for
dtypes); each op's bad-input tests hold the two to that. Shapes come from memops.spec: the first
tensor that shows a letter fixes its size, later tensors must agree.
"""

import torch

from .spec import SPECS


class _Dims:
    def __init__(self, op):
        self.op = op
        self.sizes = {}

    def check(self, t, name, letters):
        ok = t.dim() == len(letters) and all(self.sizes.get(l, s) == s for l, s in zip(letters, t.shape))
        if not ok:
            sizes = ", ".join(str(self.sizes.get(l, l)) for l in letters)
            raise ValueError(
                f"{self.op}: {name} must have shape ({', '.join(letters)}) = ({sizes}), got {list(t.shape)}"
            )
        self.sizes.update(zip(letters, t.shape))


def _first_float(op, t, name):
    if not t.dtype.is_floating_point:
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")


def _float_like(op, t, name, like, like_name):
    _first_float(op, t, name)
    if t.dtype != like.dtype:
        raise TypeError(f"{op}: {name} must have the dtype of {like_name} ({like.dtype}), got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{op}: {name} must be on the device of {like_name} ({like.device}), got {t.device}")


def _floats(op, memory, first_name, **others):
    _first_float(op, memory, first_name)
    for name, t in others.items():
        if t is not None:
            _float_like(op, t, name, memory, first_name)


def _mask(op, mask, first, dims, first_name="memory", letters="BN"):
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise TypeError(f"{op}: mask must be a bool tensor, got {mask.dtype}")
    if mask.device != first.device:
        raise ValueError(f"{op}: mask must be on the device of {first_name} ({first.device}), got {mask.device}")
    dims.check(mask, "mask", letters)


def _similarity(op, similarity, eps):
    if similarity not in ("cosine", "dot"):
        raise ValueError(f"{op}: similarity must be 'cosine' or 'dot', got '{similarity}'")
    if not eps > 0:
        raise ValueError(f"{op}: eps must be positive, got {eps:g}")


def _odd_shift(op, dims):
    if dims.sizes["S"] % 2 != 1:
        raise ValueError(
            f"{op}: kernel width S must be odd (kernel[S // 2] is the 'stay' tap), got S = {dims.sizes['S']}"
        )


def arguments(op, args):
    """Check one call's arguments ({name: value}, every argument of the op's schema) against the op's
    table in memops.spec, in the order csrc/validate.h checks them: dtypes and devices, then shapes,
    then the mask, then the options."""
    spec = SPECS[op]
    dims = _Dims(op)
    (first, _), *rest = spec.tensors
    _floats(op, args[first], first, **{name: args[name] for name, _ in rest})
    for name, letters in spec.tensors:
        if args[name] is not None or name not in spec.optional:
            dims.check(args[name], name, letters)
    if "mask" in spec.options:
        _mask(op, args["mask"], args[first], dims, first, spec.mask_dims)
    if "S" in dims.sizes:
        _odd_shift(op, dims)
    if "eps" in spec.options:
        _similarity(op, args.get("similarity", "cosine"), args["eps"])


def check(op, *args):
    """`arguments` for the op's schema arguments given positionally, as the kernels receive them."""
    spec = SPECS[op]
    arguments(op, dict(zip(spec.inputs + spec.options, args)))


def kernel_dtype(op, t):
    """The dtypes the compiled kernels take: float32 and float64 on the CPU (csrc/cpu/common.h), and
    also float16 and bfloat16 on CUDA (csrc/cuda/launch.h); the messages are theirs."""
    if t.device.type == "cpu" and t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: the CPU kernels take float32 or float64 tensors, got {t.dtype}")
    if t.device.type == "cuda" and t.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"{op}: the CUDA kernels take float32, float64, float16 or bfloat16 tensors, got {t.dtype}")


def output_like(op, t, name, shape, like):
    """A backward op's incoming gradient ("grad") or saved forward output ("weights", "out"): the
    forward output's shape, and like's dtype and device."""
    if list(t.shape) != list(shape):
        raise ValueError(f"{op}: {name} must have the output's shape {list(shape)}, got {list(t.shape)}")
    _float_like(op, t, name, like, "the inputs")


# --- value checks, run only in debug mode (memops.set_debug(True) or MEMOPS_DEBUG=1) ---------------
# Each costs a pass over its tensor and a device sync, which is why they are not always on.


def _finite(op, **tensors):
    for name, t in tensors.items():
        if t is not None and t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{op}: {name} has NaN or Inf values (debug check)")


def _at_least(op, name, t, low):
    if t.numel() and bool((t < low).any()):
        raise ValueError(f"{op}: {name} must be >= {low:g} everywhere (debug check), got min {t.min().item():g}")


def _at_most(op, name, t, high):
    if t.numel() and bool((t > high).any()):
        raise ValueError(f"{op}: {name} must be <= {high:g} everywhere (debug check), got max {t.max().item():g}")


def values(op, **tensors):
    """The contract's value ranges: finite inputs; weights >= 0, gamma >= 1, gate and gates in [0, 1]."""
    _finite(op, **tensors)
    if op in ("sharpen", "ntm_address"):
        _at_least(op, "gamma", tensors["gamma"], 1.0)
    if op == "sharpen":
        _at_least(op, "weights", tensors["weights"], 0.0)
    if op == "attention_gru":
        _at_least(op, "gates", tensors["gates"], 0.0)
        _at_most(op, "gates", tensors["gates"], 1.0)
    if op == "ntm_address":
        _at_least(op, "gate", tensors["gate"], 0.0)
        _at_most(op, "gate", tensors["gate"], 1.0)
        _at_least(op, "prev_weights", tensors["prev_weights"], 0.0)
        # a negative shift tap could make the shifted weights negative, and sharpen needs w >= 0
        _at_least(op, "kernel", tensors["kernel"], 0.0)
