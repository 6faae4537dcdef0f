"""Shared helpers of the memops tests.

- which backends/devices can run (skip, or fail under MEMOPS_REQUIRE_EXTENSION=1, when not built);
- the tolerance rule and the input makers of memops.testing (one table for tests, check, benchmarks);
- forward + backward with a random upstream gradient, compared output and EVERY input gradient
  against the reference computed in float64 from the same values;
- ways to make non-contiguous tensors with the same values (sliced, transposed, expanded).
"""

import os
import zlib

import pytest
import torch

import memops
from memops import _library
from memops.spec import SPECS
from memops.testing import GRADCHECK, SLACK_FACTOR, allowance, sample_inputs

EXTENSION_BUILT = _library.AVAILABLE
REQUIRE_EXTENSION = os.environ.get("MEMOPS_REQUIRE_EXTENSION", "0").strip() not in ("", "0")
REQUIRE_CUDA_EMU = os.environ.get("MEMOPS_REQUIRE_CUDA_EMU", "0").strip() not in ("", "0")

# The sizes that break naive kernels (CONVENTIONS.md, "Tests").
SLOTS = (1, 3, 127, 128, 129)
WIDTHS = (1, 20, 65)
HEADS = (1, 4)
BATCHES = (0, 1, 7)
DTYPES = (torch.float32, torch.float64)


def wide_shift(N):
    """An odd shift width S wider than the memory (the kernel wraps around more than once)."""
    return N + 1 if N % 2 == 0 else N + 2


# ------------------------------------------------------------------------------------------------
# availability


def extension_missing_reason():
    return (f"the memops extension (memops._C) is not built: {_library.LOAD_ERROR}. "
            f"To run these tests, {_library.BUILD_HINT}")


def require_backend(backend, device="cpu", op=None):
    """Skip the calling test when `backend` cannot run on `device` here (or has no kernels for `op`).

    A missing extension is a skip, except under MEMOPS_REQUIRE_EXTENSION=1 (CI), where it fails; a
    missing CUDA emulator likewise under MEMOPS_REQUIRE_CUDA_EMU=1.
    """
    if backend == "reference":
        return
    if backend == "cuda_emu":
        from memops import _backend, _emu

        why = _backend.emu_why_not(device)
        if why is not None and REQUIRE_CUDA_EMU and not _emu.AVAILABLE:
            pytest.fail(f"MEMOPS_REQUIRE_CUDA_EMU=1 but {why}", pytrace=False)
        if why is not None:
            pytest.skip(f"the cuda_emu backend cannot run on {device} here: {why}")
        if op is not None and not _emu.has_kernel(op):
            pytest.skip(f"{op} has no CUDA kernels (csrc/cuda/{op}.cu) in the emulated build")
        return
    if backend == "triton":
        from memops import _backend

        why = _backend._triton_why_not(device)
        if why is not None and REQUIRE_EXTENSION and "cannot be imported" in why:
            # CI installs triton (a dependency on Linux x86-64): its tests must not vanish as skips
            pytest.fail(f"MEMOPS_REQUIRE_EXTENSION=1 but the Triton backend is missing: {why}", pytrace=False)
        if why is not None:
            pytest.skip(f"the Triton backend cannot run on {device} here: {why}")
        return
    if not EXTENSION_BUILT:
        if REQUIRE_EXTENSION:
            pytest.fail("MEMOPS_REQUIRE_EXTENSION=1 but " + extension_missing_reason(), pytrace=False)
        pytest.skip(extension_missing_reason())
    if device == "cuda" and not memops.build_info()["with_cuda"]:
        pytest.skip("this build of memops has no CUDA kernels (build_info()['with_cuda'] is False)")


def require_device(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA is not available (torch.cuda.is_available() is False)")


def seed_of(*parts):
    """A stable seed from test parameters (the same case gets the same data on every run)."""
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


# ------------------------------------------------------------------------------------------------
# tolerances (memops.testing: one table for the tests, `memops check` and the benchmarks) and inputs


def assert_close(actual, expected, dtype, what, scale=1.0, slack=0.0):
    """actual (in `dtype`) against expected (float64) under memops.testing.TOLERANCES:
    |a - e| <= atol * max(1, max|e|) * scale + slack + rtol * scale * |e| elementwise."""
    assert actual.shape == expected.shape, f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.device == expected.device, f"{what}: device {actual.device} != {expected.device}"
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    assert bool(torch.isfinite(e).all()), f"{what}: the reference itself is not finite"
    assert bool(torch.isfinite(a).all()), f"{what}: has NaN/Inf where the reference is finite"
    atol, rtol = allowance(e, dtype, scale, slack)
    torch.testing.assert_close(a, e, atol=atol, rtol=rtol, msg=lambda m: f"{what} ({dtype}): {m}")


def make_inputs(op, B=2, H=3, N=5, W=4, S=3, **kw):
    """(tensors, kwargs) for memops.<op>(*tensors.values(), **kwargs): memops.testing.sample_inputs,
    float64 on the CPU (callers cast)."""
    return sample_inputs(op, B, H, N, W, S, **kw)


def output_shape(op, tensors):
    return SPECS[op].output_shape(tensors)


def to(x, dtype=None, device=None):
    """Cast floating tensors to dtype, move tensors to device; leave None and non-tensors alone."""
    if not isinstance(x, torch.Tensor):
        return x
    if x.dtype.is_floating_point and dtype is not None:
        return x.to(device=device, dtype=dtype)
    return x.to(device=device)


# ------------------------------------------------------------------------------------------------
# forward + backward


def call(op, tensors, kwargs, backend):
    return getattr(memops, op)(*tensors.values(), **kwargs, backend=backend)


def forward_backward(op, tensors, kwargs, backend, grad_out):
    """Output and the gradient of every floating input (None stays None), for upstream grad_out.

    The inputs are used as they are (strides kept): each becomes a fresh leaf that aliases it.
    """
    leaves = {k: (v.detach().requires_grad_(True) if v is not None else None) for k, v in tensors.items()}
    out = call(op, leaves, kwargs, backend)
    names = [k for k, v in leaves.items() if v is not None]
    # (an input that reaches no output, as attention_gru's xr with F = 0, has a zero gradient: the contract)
    grads = torch.autograd.grad(out, [leaves[k] for k in names], grad_out, materialize_grads=True)
    return out.detach(), dict(zip(names, grads))


def random_grad(shape, seed, dtype=torch.float64, device="cpu"):
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def check_against_reference(op, tensors, kwargs, dtype, device="cpu", backend="cpp", *, seed=0,
                            grad_out=None, scale=1.0):
    """Run `backend` in `dtype` on `device` and the reference in float64 from the same values, with
    the same random upstream gradient; compare the output and every input gradient."""
    cast = {k: to(v, dtype, device) for k, v in tensors.items()}
    kw = {k: to(v, None, device) for k, v in kwargs.items()}
    if grad_out is None:
        grad_out = random_grad(output_shape(op, cast), seed, dtype, device)
    out, grads = forward_backward(op, cast, kw, backend, grad_out)

    ref_in = {k: (v.detach().to(torch.float64) if v is not None else None) for k, v in cast.items()}
    ref_out, ref_grads = forward_backward(op, ref_in, kw, "reference", grad_out.to(torch.float64))
    slack = {}
    if dtype != torch.float64:  # how far the reference itself lands in this dtype
        low_out, low_grads = forward_backward(op, cast, kw, "reference", grad_out)
        for name, low, ref in [("output", low_out, ref_out)] + [(k, low_grads[k], ref_grads[k]) for k in low_grads]:
            err = (low.to(torch.float64) - ref).abs()
            slack[name] = SLACK_FACTOR * float(err.max()) if err.numel() else 0.0

    assert tuple(out.shape) == output_shape(op, cast)
    assert_close(out, ref_out, dtype, f"{op} output", scale, slack.get("output", 0.0))
    assert set(grads) == {k for k, v in cast.items() if v is not None}
    for name, g in grads.items():
        assert g is not None, f"{op}: no gradient for {name}"
        assert g.shape == cast[name].shape, f"{op}: gradient of {name} has shape {list(g.shape)}"
        assert_close(g, ref_grads[name], dtype, f"{op} grad of {name}", scale, slack.get(name, 0.0))
    return out, grads


def assert_same_bits_on_1_and_2_threads(op):
    """The compiled op's output and input gradients (float32, sizes large enough to be split into
    tasks) are bitwise equal on one thread and on two."""
    tensors, kwargs = make_inputs(op, B=12, H=2, N=300, W=24, S=5, seed=7)
    tensors = {k: (v.float() if v is not None else None) for k, v in tensors.items()}
    grad = random_grad(output_shape(op, tensors), 8, dtype=torch.float32)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            leaves = requires_grad(tensors)
            out = getattr(torch.ops.memops, op)(*schema_args(op, leaves, kwargs))
            inputs = [t for t in leaves.values() if t is not None]
            results.append([out, *torch.autograd.grad(out, inputs, grad)])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# non-contiguous tensors with given values


def sliced(t):
    """The values of t, as every other element along the last dim of a wider tensor (NaN between)."""
    fill = float("nan") if t.dtype.is_floating_point else 0
    wide = torch.full((*t.shape[:-1], 2 * t.shape[-1] + 1), fill, dtype=t.dtype, device=t.device)
    wide[..., 1::2] = t
    out = wide[..., 1::2]
    assert out.shape == t.shape and (not out.is_contiguous() or t.numel() <= 1)
    return out


def transposed(t):
    """The values of t, stored with the dims in reverse order (a permuted, dense view)."""
    dims = list(range(t.dim()))[::-1]
    out = t.permute(*dims).contiguous().permute(*dims)
    return out


def expanded(t):
    """t's first batch entry broadcast over the batch (stride 0): the values change to t[:1]."""
    if t.shape[0] == 0:
        return t
    return t[:1].expand_as(t)


NONCONTIG = {"sliced": sliced, "transposed": transposed, "expanded": expanded}


def check_noncontiguous(op, tensors, kwargs, kind, dtype, device, backend, seed=0):
    """Every tensor argument (and the incoming gradient) made non-contiguous by `kind` gives the same
    output and gradients as contiguous copies of the same values, and matches the reference."""
    make = NONCONTIG[kind]
    nc = {k: (make(to(v, dtype, device)) if v is not None else None) for k, v in tensors.items()}
    kw_nc = {k: (make(to(v, None, device)) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    grad_nc = make(random_grad(output_shape(op, nc), seed, dtype, device))
    if kind != "expanded" or nc[next(iter(nc))].shape[0] > 1:
        assert not all(v.is_contiguous() for v in nc.values() if v is not None)
        assert not grad_nc.is_contiguous()
    if kind == "expanded":
        assert all(0 in v.stride() for v in nc.values() if v is not None)

    cont = {k: (v.contiguous() if v is not None else None) for k, v in nc.items()}
    kw_c = {k: (v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in kw_nc.items()}
    out_nc, g_nc = forward_backward(op, nc, kw_nc, backend, grad_nc)
    out_c, g_c = forward_backward(op, cont, kw_c, backend, grad_nc.contiguous())
    torch.testing.assert_close(out_nc, out_c, rtol=0, atol=0, msg=lambda m: f"{op} output: {m}")
    for k in g_c:
        torch.testing.assert_close(g_nc[k], g_c[k], rtol=0, atol=0, msg=lambda m: f"{op} grad of {k}: {m}")
    check_against_reference(op, nc, kw_nc, dtype, device, backend, seed=seed, grad_out=grad_nc)


# ------------------------------------------------------------------------------------------------
# gradcheck and opcheck


def gradcheck_op(op, tensors, kwargs, backend="cpp", **gradcheck_kwargs):
    """torch.autograd.gradcheck through the public API, w.r.t. every floating input (float64)."""
    names = [k for k, v in tensors.items() if v is not None]
    inputs = tuple(tensors[k].detach().clone().requires_grad_(True) for k in names)

    def fn(*xs):
        t = dict(tensors)
        t.update(zip(names, xs))
        return call(op, t, kwargs, backend)

    assert torch.autograd.gradcheck(fn, inputs, **{**GRADCHECK, **gradcheck_kwargs})


def lib_of(backend):
    """The torch.ops namespace of a backend's registered ops (the same schemas)."""
    return {"triton": torch.ops.memops_triton, "cuda_emu": torch.ops.memops_cuda_emu}.get(backend, torch.ops.memops)


def schema_args(op, tensors, kwargs):
    """Positional arguments of torch.ops.memops.<op> (schema order, csrc/ops.cpp)."""
    return (*tensors.values(), *kwargs.values())


def backward_schema_args(op, tensors, kwargs, grad, lib=None):
    """Positional arguments of <lib>._<op>_backward for upstream `grad` (lib: torch.ops.memops, or
    torch.ops.memops_triton: the same schemas)."""
    lib = torch.ops.memops if lib is None else lib
    t = {k: (v.detach() if v is not None else None) for k, v in tensors.items()}
    with torch.no_grad():
        out = getattr(lib, op)(*schema_args(op, t, kwargs))
    spec = SPECS[op]
    named = {**t, **kwargs, "grad": grad, spec.saved_output: out}
    return tuple(named[name] for name in spec.backward)


def on(device, tensors, kwargs):
    """(tensors, kwargs) moved to `device` (None and non-tensors left alone)."""
    return ({k: to(v, None, device) for k, v in tensors.items()}, {k: to(v, None, device) for k, v in kwargs.items()})


def opcheck_op(op, tensors, kwargs, backend, device, forward=True, backward=True, noncontiguous=None, seed=0):
    """torch.library.opcheck of `backend`'s forward op and/or its backward op on `device`; with
    `noncontiguous` (a NONCONTIG kind) every tensor, and the incoming gradient, made non-contiguous."""
    tensors, kwargs = on(device, tensors, kwargs)
    make = NONCONTIG[noncontiguous] if noncontiguous else (lambda t: t)
    tensors = {k: (make(v) if v is not None else None) for k, v in tensors.items()}
    lib = lib_of(backend)
    if forward:
        run_opcheck(op, schema_args(op, requires_grad(tensors), kwargs), lib)
    if backward:
        grad = make(random_grad(output_shape(op, tensors), seed, device=device))
        run_opcheck("_" + op + "_backward", backward_schema_args(op, tensors, kwargs, grad, lib), lib)


def run_opcheck(name, args, lib=None):
    """torch.library.opcheck of <lib>.<name>.default (lib: torch.ops.memops unless given); every
    sub-test must pass."""
    lib = torch.ops.memops if lib is None else lib
    result = torch.library.opcheck(getattr(lib, name).default, args)
    assert result and all(v == "SUCCESS" for v in result.values()), result
    return result


def requires_grad(tensors):
    return {k: (v.detach().clone().requires_grad_(True) if v is not None else None)
            for k, v in tensors.items()}


# ------------------------------------------------------------------------------------------------
# parameter sets that keep the product small


def covering(full, rest):
    """Rows over the axes of `full` (every combination) and `rest` (dicts name -> values), where the
    `rest` values of each row are picked greedily so that every pair of values of any two axes
    appears in some row. Deterministic. Returns a list of dicts."""
    import itertools

    names = list(full) + list(rest)
    values = {**full, **rest}
    wanted = set()
    for a, b in itertools.combinations(names, 2):
        for va in values[a]:
            for vb in values[b]:
                wanted.add(((a, va), (b, vb)))

    def pairs(row):
        return {((a, row[a]), (b, row[b])) for a, b in itertools.combinations(names, 2)}

    rows, covered = [], set()
    choices = [dict(zip(rest, c)) for c in itertools.product(*rest.values())]
    used = [0] * len(choices)
    for fixed in itertools.product(*full.values()):
        base = dict(zip(full, fixed))
        # most new pairs first, then the least used choice (spreads the rest evenly)
        i = max(range(len(choices)), key=lambda i: (len(pairs({**base, **choices[i]}) - covered), -used[i]))
        used[i] += 1
        row = {**base, **choices[i]}
        rows.append(row)
        covered |= pairs(row)
    # rows for any pair still missing (possible when `full` has few combinations)
    for pair in sorted(wanted - covered, key=repr):
        if pair in covered:
            continue
        (a, va), (b, vb) = pair
        row = {n: values[n][0] for n in names}
        row[a], row[b] = va, vb
        rows.append(row)
        covered |= pairs(row)
    assert wanted <= covered
    return rows


# ------------------------------------------------------------------------------------------------
# bAbI models (tests/nn/test_memn2n.py, test_dmn.py)

# the bAbI files (tests that need them skip without): MEMOPS_BABI_DATA, else ../shared/data/babi
BABI = os.environ.get("MEMOPS_BABI_DATA", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "..", "shared", "data", "babi"))


def story_batch(B=3, M=6, L=5, Lq=4, V=12, seed=0):
    """Random stories with padded sentences and words (id 0) at the ends."""
    gen = torch.Generator().manual_seed(seed)
    story = torch.randint(1, V, (B, M, L), generator=gen)
    lengths = torch.randint(1, L + 1, (B, M), generator=gen)
    story = story * (torch.arange(L) < lengths[..., None])
    sentences = torch.randint(1, M + 1, (B,), generator=gen)
    story = story * (torch.arange(M) < sentences[:, None])[..., None]
    question = torch.randint(1, V, (B, Lq), generator=gen)
    question[:, -1] = 0
    return story, question
