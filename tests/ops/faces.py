"""The tests every op shares, run by each tests/ops/test_<op>.py (`OP = "<op>"`, `from faces import *`).

One op's file thus covers every face of that op on every target (conftest.py's backend x device
fixture): the reference comparison, gradcheck and opcheck (the op's own grids are in its file), the
autograd wiring, compile, edge values, bad input and debug mode, and the GPU- and interpreter-specific
checks. The op-dependent parameters (bad inputs, the interpreter's pairwise grid) are chosen by
`pytest_generate_tests` below from the module's OP.
"""

import importlib
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memops
from bad_inputs import ALL, BACKWARD_CASES, CASES, CASES_DTYPE_NAMES, DEBUG_CASES, error_of, f64, run_path, valid
from helpers import (DTYPES, assert_close, assert_same_bits_on_1_and_2_threads, backward_schema_args,
                     check_against_reference, check_noncontiguous, covering, forward_backward, gradcheck_op, lib_of,
                     make_inputs, output_shape, random_grad, require_backend, require_device, requires_grad,
                     schema_args, seed_of, to)

# ------------------------------------------------------------------------------------------------
# parameters that depend on the op


def _variants(op):
    """The op's call variants that change which kernel path runs."""
    if op == "content_address":
        return [dict(mask="random", similarity="cosine"), dict(mask="empty_row", similarity="dot")]
    if op == "write":
        return [dict(erase=True), dict(erase=False)]
    if op == "attention_gru":
        return [dict(mask="random"), dict(mask="none")]
    return [{}]


def _nan_cases(op):
    """(id, input, variant) of the NaN policy tests: a NaN in each input of the op, for each variant
    (content_address, content_scores: input "memory-masked" puts it in a masked-out slot, never read)."""
    content = [("", dict(similarity="cosine")), ("-dot-masked", dict(similarity="dot", mask="random"))]
    variants = {"content_address": content, "content_scores": content,
                "write": [("", dict(erase=True)), ("-erase_none", dict(erase=False))]}.get(op, [("", {})])
    cases = []
    for suffix, variant in variants:
        for name in memops.spec.SPECS[op].inputs:
            if name != "erase" or variant.get("erase", True):
                cases.append((name + suffix, name, variant))
    if op in ("content_address", "content_scores"):
        cases.append(("memory-masked", "memory", dict(similarity="cosine", mask="random")))
    return cases


def _masked(op, kind):
    """The mask keyword of the ops that take one (content_address, attention_gru), else nothing."""
    return dict(mask=kind) if op in ("content_address", "attention_gru") else {}


def _facts(op, N):
    """attention_gru reads N as its fact count F, a sequential scan: the GPU sizes (thousands of slots,
    there to span blocks) are capped for it, the emulator running each step of the scan."""
    return min(N, 40) if op == "attention_gru" else N


def pairwise_cases(op):
    """The interpreter's grid: every pair of parameter values in some case (helpers.covering)."""
    full = {"dtype": DTYPES, "N": (1, 3, 127, 129)}
    rest = {"H": (1, 3), "B": (0, 1, 2), "W": (1, 20)}
    if op in ("shift", "ntm_address"):
        rest["S"] = (1, 3, 5, "wide")
    if op == "content_address":
        rest["variant"] = tuple((m, s) for m in ("none", "random", "empty_row") for s in ("cosine", "dot"))
    if op == "write":
        rest["erase"] = (True, False)
    if op == "attention_gru":
        rest["mask"] = ("none", "random", "empty_row")
    return covering(full, rest)


def _case_id(row):
    return "-".join(f"{k}{v}" if k != "dtype" else str(v)[6:] for k, v in row.items())


def _bad_params(cases):
    return [pytest.param(c, id=c[0]) for c in cases]


def pytest_generate_tests(metafunc):
    op = getattr(metafunc.module, "OP", None)
    if op is None:
        return
    names = metafunc.fixturenames
    if "pairwise" in names:
        rows = pairwise_cases(op)
        metafunc.parametrize("pairwise", [pytest.param(r, id=_case_id(r)) for r in rows])
    if "bad" in names:
        cases = [c for c in CASES + CASES_DTYPE_NAMES if c[1] == op]
        if metafunc.function.__name__ != "test_bad_input":  # the Python checks alone
            cases = [c for c in CASES if c[1] == op and "reference" in c[-1]]
        metafunc.parametrize("bad", _bad_params(cases))
    if "backward_bad" in names:
        cases = [c for c in BACKWARD_CASES if c[0] == op]
        metafunc.parametrize("backward_bad", [pytest.param(c, id="grad") for c in cases])
    if "debug_bad" in names:
        cases = [c for c in DEBUG_CASES if c[0] == op]
        metafunc.parametrize("debug_bad", [pytest.param(c, id=c[1]) for c in cases])
    if "nan_case" in names:
        metafunc.parametrize("nan_case", [pytest.param(c, id=c[0]) for c in _nan_cases(op)])


# ------------------------------------------------------------------------------------------------
# the interpreter's stand-ins for the full grids of test_<op>.py (marked full_grid there)


@pytest.mark.interpreter_only
def test_matches_reference_pairwise(op, backend, device, pairwise):
    row = pairwise
    N = row["N"]
    S = row.get("S", 3)
    if S == "wide":
        S = N + 1 if N % 2 == 0 else N + 2
    kw = dict(B=row["B"], H=row["H"], N=N, W=row["W"], S=S)
    if op == "content_address":
        kw["mask"], kw["similarity"] = row["variant"]
    if op == "write":
        kw["erase"] = row["erase"]
    if op == "attention_gru":
        kw["mask"] = row["mask"]
    seed = seed_of("triton", op, tuple(sorted(kw.items())))
    tensors, kwargs = make_inputs(op, seed=seed, **kw)
    check_against_reference(op, tensors, kwargs, row["dtype"], device, backend, seed=seed)


@pytest.mark.interpreter_only
@pytest.mark.parametrize("kind", ["sliced", "transposed", "expanded"])
def test_noncontiguous_small(op, backend, device, kind):
    kw = _masked(op, "random")
    tensors, kwargs = make_inputs(op, B=3, H=2, N=9, W=5, S=3, seed=11, **kw)
    check_noncontiguous(op, tensors, kwargs, kind, torch.float64, device, backend, seed=11)


@pytest.mark.interpreter_only
def test_gradcheck_one_seed(op, backend, device):
    """gradcheck in float64, one seed: each numerical Jacobian is hundreds of interpreted launches."""
    kw = _masked(op, "empty_row")
    tensors, kwargs = make_inputs(op, B=2, H=2, N=5, W=3, S=3, seed=0, **kw)
    gradcheck_op(op, tensors, kwargs, backend)


SMALL_TILES = {  # module globals of memops/triton/<op>.py, shrunk so that rows and widths span blocks
    "content_address": dict(_TILE=64, _ROW_CAP=16),
    "content_scores": dict(_BLOCK_N=16, _MAX_W=16),
    "ntm_address": dict(_ROW_CAP=16),
    "sharpen": dict(_ROW_CAP=16),
    "shift": dict(_ROW_CAP=16, _TILE=64),
    "read": dict(_TILE=64, _MAX_H=2, _MAX_W=16),
    "write": dict(_TILE=64, _TILE_BWD=64, _MAX_W=16, _MAX_W_BWD=8),
    "attention_gru": dict(_BLOCK_D=16, _BLOCK_N=4),
}


@pytest.mark.interpreter_only
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_multi_block_paths(op, backend, device, dtype, monkeypatch):
    """With the Triton tiles shrunk, N = 129 slots and W = 40 take several blocks: the chunked paths
    (per-chunk partials and their combine, row loops, column tiles) the GPU sizes take. (On the CUDA
    emulator, with the GPU's own tiles: chunked paths need the larger sizes of test_cuda_emu.py.)"""
    shrink = backend == "triton"
    for name in ({"content_address", "ntm_address"} if op == "ntm_address" else {op}) if shrink else ():
        module = importlib.import_module(f"memops.triton.{name}")
        for attr, value in SMALL_TILES[name].items():
            assert hasattr(module, attr), (name, attr)
            monkeypatch.setattr(module, attr, value)
    for variant in _variants(op):
        seed = seed_of("multi-block", op, tuple(variant.items()))
        tensors, kwargs = make_inputs(op, B=2, H=3, N=129, W=40, S=5, seed=seed, **variant)
        check_against_reference(op, tensors, kwargs, dtype, device, backend, seed=seed)


# ------------------------------------------------------------------------------------------------
# autograd wiring and compile, every target


def _small(op, device, seed=0, **kw):
    tensors, kwargs = make_inputs(op, seed=seed, **kw)
    return ({k: to(v, None, device) for k, v in tensors.items()}, {k: to(v, None, device) for k, v in kwargs.items()})


def test_grad_fn_only_when_needed(op, backend, device):
    tensors, kwargs = _small(op, device)
    fn = getattr(lib_of(backend), op)
    out = fn(*schema_args(op, requires_grad(tensors), kwargs))
    assert out.requires_grad and out.grad_fn is not None
    out = fn(*schema_args(op, tensors, kwargs))
    assert not out.requires_grad and out.grad_fn is None


def test_backward_op_without_grad_mode_is_a_plain_kernel(op, backend, device):
    tensors, kwargs = _small(op, device)
    grad = random_grad(output_shape(op, tensors), 2, device=device)
    args = backward_schema_args(op, requires_grad(tensors), kwargs, grad, lib_of(backend))
    with torch.no_grad():
        results = getattr(lib_of(backend), f"_{op}_backward")(*args)
    assert all(not r.requires_grad for r in results)


def test_double_backward_is_refused(op, cpp):
    """The C++ autograd kernels (csrc/autograd.cpp) refuse a second derivative rather than give a wrong one."""
    tensors, kwargs = make_inputs(op)
    leaves = requires_grad(tensors)
    out = getattr(torch.ops.memops, op)(*schema_args(op, leaves, kwargs))
    inputs = [t for t in leaves.values() if t is not None]
    grad_out = random_grad(out.shape, 1).requires_grad_(True)
    with pytest.raises(RuntimeError, match=rf"memops: {op} has no derivative: double backward"):
        torch.autograd.grad(out, inputs, grad_out, create_graph=True)
    grads = torch.autograd.grad(out, inputs, grad_out.detach())  # without create_graph it works
    assert all(torch.isfinite(g).all() for g in grads)


def test_bitwise_deterministic_across_thread_counts(op, cpp):
    """The CPU kernels split work in fixed chunks (never by thread count) and sum in a fixed order:
    one thread and two give the same bits, forward and backward. Sizes large enough to be split."""
    assert_same_bits_on_1_and_2_threads(op)


def test_compile_fullgraph(op, backend, device):
    """torch.compile(fullgraph=True) of the op alone: one graph holding the backend's op (not a
    decomposition), the same output and gradients as eager. (test_compile.py compiles a whole NTM step.)"""
    from torch._dynamo.backends.debugging import aot_eager

    namespace = {"triton": "memops_triton", "cuda_emu": "memops_cuda_emu"}.get(backend, "memops")
    graphs = []

    def recorder(gm, example_inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return aot_eager(gm, example_inputs)

    tensors, kwargs = _small(op, device, seed=21, **_variants(op)[0])
    names = [k for k, v in tensors.items() if v is not None]

    def fn(*xs):
        return getattr(memops, op)(**{**tensors, **dict(zip(names, xs))}, **kwargs, backend=backend)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=recorder)
    grad = random_grad(output_shape(op, tensors), 21, device=device)
    results = []
    for f in (fn, compiled):
        leaves = [tensors[k].detach().requires_grad_(True) for k in names]
        out = f(*leaves)
        results.append([out.detach(), *torch.autograd.grad(out, leaves, grad)])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert len(graphs) == 1, graphs
    assert any(name.split(".")[:2] == [namespace, op] for name in graphs[0]), graphs[0]


# ------------------------------------------------------------------------------------------------
# edge values: no NaN, every target


def test_edge_values_give_no_nan(op, backend, device):
    """Zero memory rows and keys, huge beta, weights with exact zeros raised to a large gamma, all-zero
    weightings: finite outputs and gradients."""
    B, H, N, W, S = 2, 2, 33, 8, 3
    gen = torch.Generator().manual_seed(17)
    memory = torch.randn(B, N, W, generator=gen)
    memory[:, 3] = 0
    keys = torch.randn(B, H, W, generator=gen)
    keys[0, 0] = 0
    weights = torch.softmax(torch.randn(B, H, N, generator=gen), -1)
    weights[..., ::3] = 0
    weights[1, 1] = 0  # an all-zero row
    erase = torch.rand(B, H, W, generator=gen)
    erase[0, 0] = 1
    base = dict(memory=memory, keys=keys, beta=torch.tensor([[1e4, 0.0], [50.0, 3.0]]), weights=weights,
                prev_weights=weights, gamma=torch.tensor([[30.0, 1.0], [1.0, 7.0]]),
                kernel=torch.softmax(torch.randn(B, H, S, generator=gen), -1),
                gate=torch.tensor([[1.0, 0.0], [0.5, 1.0]]), erase=erase, add=torch.randn(B, H, W, generator=gen))
    F, D = 9, 8  # attention_gru: saturated sigmoid and tanh, gates exactly 0 and 1, a zero state
    xr = 30 * torch.randn(B, F, D, generator=gen)
    xr[0, 0] = 1e4
    xh = 30 * torch.randn(B, F, D, generator=gen)
    xh[1, 2] = -1e4
    base.update(xr=xr, xh=xh, ur=10 * torch.randn(D, D, generator=gen), uh=10 * torch.randn(D, D, generator=gen),
                bu=torch.zeros(D), gates=torch.tensor([[0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, 0.3, 1.0]] * B),
                h0=torch.zeros(B, D))
    names = memops.spec.SPECS[op].inputs
    t = {k: base[k].clone().to(device).requires_grad_(True) for k in names}
    out = getattr(memops, op)(**t, backend=backend)
    assert torch.isfinite(out).all(), f"{op}: non-finite output"
    out.backward(torch.randn(out.shape, generator=gen).to(device))
    for k, v in t.items():
        assert torch.isfinite(v.grad).all(), f"{op}: non-finite gradient of {k}"


# ------------------------------------------------------------------------------------------------
# zero-size dims: empty results, every target


def _empty_variants(op):
    """The call variants of the empty-dims tests: both similarities (and masks) of the content ops."""
    if op in ("content_address", "content_scores"):
        return [dict(mask="random", similarity="cosine"), dict(mask="empty_row", similarity="dot")]
    return _variants(op)


def _empty_inputs(op, dim, variant, seed):
    sizes = dict(B=2, H=3, N=5, W=4, S=3)
    sizes[dim] = 0
    return make_inputs(op, **sizes, seed=seed, **variant)


@pytest.mark.parametrize("dim", ["B", "H", "N", "W"])
def test_empty_dims(op, backend, device, dim):
    """A zero-size B, H, N or W: an empty (correctly shaped) result and gradients of the inputs' shapes,
    the reference's in float32 and float64. A zero-size dim can leave other tensors non-empty (W = 0 in
    read: weights (B, H, N) gets zeros; H = 0 in write: the memory comes back unchanged and its gradient
    is the incoming one). The backward op called directly gives what autograd got from it."""
    lib = lib_of(backend)
    for variant in _empty_variants(op):
        seed = seed_of("empty", op, dim, tuple(variant.items()))
        tensors, kwargs = _empty_inputs(op, dim, variant, seed)
        for dtype in DTYPES:
            _, grads = check_against_reference(op, tensors, kwargs, dtype, device, backend, seed=seed)
            cast = {k: to(v, dtype, device) for k, v in tensors.items()}
            kw = {k: to(v, None, device) for k, v in kwargs.items()}
            grad = random_grad(output_shape(op, cast), seed, dtype, device)
            results = getattr(lib, f"_{op}_backward")(*backward_schema_args(op, cast, kw, grad, lib))
            for name, r in zip(memops.spec.SPECS[op].inputs, results):
                if cast[name] is not None:
                    torch.testing.assert_close(r, grads[name], rtol=0, atol=0, msg=lambda m: f"grad of {name}: {m}")


@pytest.mark.parametrize("dim", ["B", "H", "N", "W"])
def test_empty_dims_compiled(op, cpp, dim):
    """The same under torch.compile(fullgraph=True) (aot_eager): the fake kernels' shapes and the C++
    kernels in the compiled graph, against the reference."""
    for variant in _empty_variants(op):
        seed = seed_of("empty-compiled", op, dim, tuple(variant.items()))
        tensors, kwargs = _empty_inputs(op, dim, variant, seed)
        names = [k for k, v in tensors.items() if v is not None]

        def fn(*xs):
            return getattr(memops, op)(**{**tensors, **dict(zip(names, xs))}, **kwargs, backend="cpp")

        torch._dynamo.reset()
        compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
        grad = random_grad(output_shape(op, tensors), seed)
        leaves = [tensors[k].detach().requires_grad_(True) for k in names]
        out = compiled(*leaves)
        got = dict(zip(names, torch.autograd.grad(out, leaves, grad)))
        ref_out, ref_grads = forward_backward(op, tensors, kwargs, "reference", grad)
        assert_close(out, ref_out, torch.float64, f"{op} output (compiled)")
        for name in names:
            assert_close(got[name], ref_grads[name], torch.float64, f"{op} grad of {name} (compiled)")


# ------------------------------------------------------------------------------------------------
# NaN policy (memops.reference): with debug mode off a NaN input is never hidden, every target


ROW_OPS = ("content_address", "sharpen", "ntm_address")  # normalise over a row: a NaN takes the row


def _spoil(t, value, masked_slot=None):
    """t with `value` at one place in batch row 1 (the middle of that row's entries), or at
    memory[1, masked_slot, 0]."""
    t = t.clone()
    if masked_slot is not None:
        t[1, masked_slot, 0] = value
    else:
        t[1].view(-1)[t[1].numel() // 2] = value
    return t


@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_propagates(op, backend, device, dtype, value, nan_case):
    """A NaN in any input makes the output NaN exactly where the reference's is (content_address,
    sharpen, ntm_address: the whole rows it enters), and the rest of the output is the reference's; an
    Inf gives NaN and +-inf where the reference does (where it leaves the math defined, as gamma = inf
    does, the reference's finite result). A NaN in a masked-out memory slot of content_address (or
    content_scores) is never read: nothing is NaN. The gradients (NaN case) are NaN where the reference's are and the
    reference's elsewhere, except write's gradient of the NaN input itself (the reference's torch.prod
    backward divides the product by each factor, NaN / NaN; the kernels multiply the other factors) and
    the masked-out slot's (the reference's autograd gives 0 times its NaN norm; a kernel may skip it)."""
    case, name, variant = nan_case
    seed = seed_of("nan", op, case)
    tensors, kwargs = make_inputs(op, B=2, H=3, N=6, W=4, S=3, seed=seed, **variant)
    masked_slot = None
    if case == "memory-masked":
        kwargs["mask"][1] = True
        kwargs["mask"][1, 2] = False
        masked_slot = 2
    elif kwargs.get("mask") is not None:
        kwargs["mask"][1] = True  # the NaN's slot is kept
    tensors[name] = _spoil(tensors[name], float(value), masked_slot)
    cast = {k: to(v, dtype, device) for k, v in tensors.items()}
    kw = {k: to(v, None, device) for k, v in kwargs.items()}
    grad = random_grad(output_shape(op, tensors), seed)
    out, grads = forward_backward(op, cast, kw, backend, grad.to(device=device, dtype=dtype))
    ref_in = {k: (v.cpu().to(torch.float64) if v is not None else None) for k, v in cast.items()}  # (rounded)
    ref, ref_grads = forward_backward(op, ref_in, kwargs, "reference", grad)
    nan = ref.isnan()
    if case == "memory-masked":
        assert not nan.any()
    elif value == "nan":  # (an Inf may leave the math defined: gamma = inf sharpens to one-hot)
        assert nan.any(), "the reference hides the NaN"
    if op in ROW_OPS:
        assert torch.equal(nan.all(-1), nan.any(-1)), "the reference's NaN does not take whole rows"

    def same_non_finite(a, e, what):
        a = a.cpu()
        for kind, where in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
            assert torch.equal(where(a), where(e)), (f"{what}: {kind} at {where(a).nonzero().tolist()}, "
                                                     f"the reference's at {where(e).nonzero().tolist()}")
        finite = torch.isfinite(e)
        assert_close(a.masked_fill(~finite, 0).to(device), e.masked_fill(~finite, 0).to(device), dtype, what)

    same_non_finite(out, ref, f"{op} output")
    if value == "nan" and case != "memory-masked":
        for k, g in grads.items():
            if op == "write" and k == name:
                continue
            same_non_finite(g, ref_grads[k], f"{op} grad of {k}")


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e20), (torch.float64, 1e20), (torch.float64, 1e200)],
                         ids=["float32-1e20", "float64-1e20", "float64-1e200"])
def test_cosine_of_large_values(op, backend, device, dtype, scale):
    """The cosine is scale-free: memory and keys times 1e20 (float32: past the square root of float's
    range, so their squares overflow) or 1e200 (float64, likewise) give the weights of the unscaled
    values, whose cosines are torch.nn.functional.cosine_similarity's in float64. The gradients of memory
    and keys scale by 1 / scale; they are checked where that leaves their intermediates in range."""
    if op not in ("content_address", "content_scores", "ntm_address"):
        pytest.skip(f"{op} has no cosine similarity")
    import torch.nn.functional as F

    seed = seed_of("large", op)
    tensors, kwargs = make_inputs(op, B=2, H=3, N=7, W=5, S=3, seed=seed,
                                  **(dict(similarity="cosine") if op != "ntm_address" else {}))
    eps = kwargs["eps"]

    def expected(memory, keys, beta, gate=None, kernel=None, gamma=None, prev_weights=None):
        sim = F.cosine_similarity(keys[:, :, None], memory[:, None], dim=-1, eps=eps)
        if op == "content_scores":
            return beta[:, :, None] * sim
        content = torch.softmax(beta[:, :, None] * sim, dim=-1)
        if op == "content_address":
            return content
        g = gate[:, :, None]
        return memops.reference.sharpen(memops.reference.shift(g * content + (1 - g) * prev_weights, kernel), gamma)

    grad = random_grad(output_shape(op, tensors), seed)
    leaves = {k: v.detach().requires_grad_(True) for k, v in tensors.items()}
    exp_out = expected(**leaves)
    exp_grads = dict(zip(leaves, torch.autograd.grad(exp_out, list(leaves.values()), grad)))

    scaled = dict(tensors, memory=tensors["memory"] * scale, keys=tensors["keys"] * scale)
    cast = {k: to(v, dtype, device) for k, v in scaled.items()}
    if dtype == torch.float32 or scale > 1e100:
        assert bool(torch.isinf(cast["keys"].pow(2).sum(-1)).all()), "the squares should overflow"
    out, grads = forward_backward(op, cast, kwargs, backend, grad.to(device=device, dtype=dtype))
    assert_close(out, exp_out.to(device), dtype, f"{op} output")
    for name, g in grads.items():
        assert bool(torch.isfinite(g).all()), f"{op}: non-finite gradient of {name}"
        if name in ("memory", "keys"):
            if dtype == torch.float32 or scale > 1e100:
                continue  # 1 / (|k| |m|) is below the dtype's normal range there
            g = g * scale
        assert_close(g, exp_grads[name].to(device), dtype, f"{op} grad of {name}")


# ------------------------------------------------------------------------------------------------
# bad input: the same error from C++, the reference, meta and fake tensors (and Triton)


def test_bad_input(op, bad):
    case, op_, make_kw, mutate, exc, message, paths = bad
    require_backend("cpp")  # the fake kernels come with the extension too
    tensors, kwargs = valid(op, **make_kw)
    mutate(tensors, kwargs)
    results = {path: run_path(path, op, tensors, kwargs) for path in ALL}
    for path in paths:
        assert results[path] is not None, f"{path}: no error for {case}"
        assert results[path] == (exc, message), f"{path}: {results[path]}"
    assert message.startswith(op + ": ")  # the message names the op, then the argument or setting


def test_bad_input_reference_without_extension(op, bad):
    """The Python checks alone (what runs where the extension is not built)."""
    case, op_, make_kw, mutate, exc, message, paths = bad
    tensors, kwargs = valid(op, **make_kw)
    mutate(tensors, kwargs)
    assert run_path("reference", op, tensors, kwargs) == (exc, message)


def test_bad_input_triton(op, bad):
    """The Triton ops run the Python checks first: the same errors (in the interpreter on CPU tensors)."""
    case, op_, make_kw, mutate, exc, message, paths = bad
    require_backend("triton", "cpu")
    tensors, kwargs = valid(op, **make_kw)
    mutate(tensors, kwargs)
    assert run_path("triton", op, tensors, kwargs) == (exc, message)


def test_valid_inputs_raise_nothing(op, cpp):
    tensors, kwargs = valid(op)
    for path in ALL:
        assert run_path(path, op, tensors, kwargs) is None, path


def test_backward_op_checks_grad(op, cpp, backward_bad):
    op_, args, exc, message = backward_bad
    tensors, kwargs = valid(op)
    a = args(tensors, kwargs)
    fn = getattr(torch.ops.memops, f"_{op}_backward")
    assert error_of(lambda: fn(*a)) == (exc, message)
    meta = [x.to("meta") if isinstance(x, torch.Tensor) else x for x in a]
    assert error_of(lambda: fn(*meta)) == (exc, message)


def test_backward_op_checks_its_saved_output(op, cpp):
    saved = memops.spec.SPECS[op].saved_output
    if saved is None:
        pytest.skip(f"_{op}_backward takes no saved output")
    tensors, kwargs = valid(op)
    shape = output_shape(op, tensors)
    args = list(backward_schema_args(op, tensors, kwargs, f64(*shape)))
    index = memops.spec.SPECS[op].backward.index(saved)
    assert args[index].shape == shape
    args[index] = f64(*shape[:-1], shape[-1] - 1)  # the saved forward output, one short in its last dim
    fn = getattr(torch.ops.memops, f"_{op}_backward")
    real = error_of(lambda: fn(*args))
    fake = error_of(lambda: fn(*[a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]))
    assert real is not None and real[0] is ValueError, real
    assert f" {saved} must have" in real[1] and " grad " not in real[1], real
    assert fake == real, (fake, real)


# ------------------------------------------------------------------------------------------------
# debug mode: value ranges


@pytest.mark.parametrize("backend_name", ["cpp", "reference"])
def test_debug_mode_rejects_bad_values(op, backend_name, debug_bad):
    op_, what, spoil, message = debug_bad
    require_backend(backend_name)
    tensors, kwargs = valid(op)
    spoil(tensors)
    fn = getattr(memops, op)
    # debug off (the default): not checked, the call goes through
    assert error_of(lambda: fn(*tensors.values(), **kwargs, backend=backend_name)) is None
    memops.set_debug(True)
    try:
        err = error_of(lambda: fn(*tensors.values(), **kwargs, backend=backend_name))
    finally:
        memops.set_debug(False)
    assert err is not None and err[0] is ValueError, err
    assert err[1].startswith(message), err
    assert "debug check" in err[1]
    assert error_of(lambda: fn(*tensors.values(), **kwargs, backend=backend_name)) is None  # off again


@pytest.mark.parametrize("backend_name", ["cpp", "triton", "reference"])
def test_debug_mode_accepts_valid_values(op, backend_name):
    require_backend(backend_name)
    memops.set_debug(True)
    try:
        tensors, kwargs = valid(op, mask="empty_row") if op == "content_address" else valid(op)
        if op in ("sharpen", "ntm_address"):
            tensors["gamma"][0, 0] = 1.0  # the bound itself is allowed
        if op == "ntm_address":
            tensors["gate"][0, 0], tensors["gate"][0, 1] = 0.0, 1.0
        if op == "attention_gru":
            tensors["gates"][0, 0], tensors["gates"][0, 1] = 0.0, 1.0
        getattr(memops, op)(*tensors.values(), **kwargs, backend=backend_name)
    finally:
        memops.set_debug(False)


# ------------------------------------------------------------------------------------------------
# GPU only (collected for the cuda targets)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("N", [1, 127, 129, 1000])
def test_half_types(op, backend, device, N, dtype):
    """float16 / bfloat16 storage, float32 accumulation: within the half-type tolerances of the float64
    reference, or within 3x of the reference's own error in that dtype."""
    seed = seed_of("half", op, N)
    tensors, kwargs = make_inputs(op, B=3, H=2, N=_facts(op, N), W=20, S=3, seed=seed, **_variants(op)[0])
    check_against_reference(op, tensors, kwargs, dtype, device, backend, seed=seed)


@pytest.mark.gpu
@pytest.mark.parametrize("N,W", [(1, 20), (3, 20), (127, 20), (128, 20), (129, 20), (4097, 20), (4097, 64),
                                 (8192, 128)])
def test_sizes_past_one_block(op, backend, device, N, W):
    seed = seed_of("sizes", op, N, W)
    variants = ([dict(similarity="cosine", mask="none"), dict(similarity="dot", mask="empty_row")]
                if op == "content_address" else _variants(op))
    for variant in variants:
        tensors, kwargs = make_inputs(op, B=2, H=3, N=_facts(op, N), W=W, S=5, seed=seed, **variant)
        check_against_reference(op, tensors, kwargs, torch.float32, device, backend, seed=seed)


@pytest.mark.gpu
@pytest.mark.cuda_device
def test_device_mismatch_is_a_clear_error(op, backend, device):
    tensors, kwargs = _small(op, device, seed=4, B=2, H=2, N=5, W=3, S=3)
    name = list(tensors)[1]
    tensors[name] = tensors[name].cpu()
    with pytest.raises(ValueError, match=f"{op}: {name} must be on the device of"):
        getattr(memops, op)(*tensors.values(), **kwargs, backend=backend)


@pytest.mark.gpu
def test_bitwise_deterministic(op, backend, device):
    """The same inputs give bitwise the same output and gradients, at a size that splits rows over blocks."""
    seed = seed_of("determinism", op)
    tensors, kwargs = make_inputs(op, B=3, H=2, N=_facts(op, 4097), W=64, S=5, seed=seed, **_variants(op)[0])
    cast = {k: to(v, torch.float32, device) for k, v in tensors.items()}
    kw = {k: to(v, None, device) for k, v in kwargs.items()}

    def once():
        leaves = {k: (v.clone().requires_grad_(True) if v is not None else None) for k, v in cast.items()}
        out = getattr(memops, op)(*leaves.values(), **kw, backend=backend)
        out.backward(random_grad(out.shape, seed, torch.float32, device))
        return [out.detach()] + [v.grad for v in leaves.values() if v is not None]

    for a, b in zip(once(), once()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_triton_agrees_with_cuda(op, dtype):
    require_device("cuda")
    require_backend("cpp", "cuda")
    require_backend("triton", "cuda")
    seed = seed_of("agree", op)
    tensors, kwargs = make_inputs(op, B=4, H=2, N=300, W=20, S=3, seed=seed, **_variants(op)[0])
    a_out, a_grads = check_against_reference(op, tensors, kwargs, dtype, "cuda", "cpp", seed=seed)
    b_out, b_grads = check_against_reference(op, tensors, kwargs, dtype, "cuda", "triton", seed=seed)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(a_out, b_out, **tol)
    for k in a_grads:
        torch.testing.assert_close(a_grads[k], b_grads[k], **tol, msg=lambda m: f"grad of {k}: {m}")


# ------------------------------------------------------------------------------------------------
# property tests (hypothesis): random small shapes and values, the C++ CPU kernels against the
# reference. The default profile is derandomized (the same examples every run, so CI cannot flake);
# HYPOTHESIS_PROFILE=explore draws new ones each run.

settings.register_profile("memops", max_examples=40, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("explore", max_examples=300, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "memops")


@st.composite
def _property_cases(draw, op):
    sizes = dict(B=draw(st.integers(0, 3)), H=draw(st.integers(1, 4)), N=draw(st.integers(1, 12)),
                 W=draw(st.integers(1, 9)), S=2 * draw(st.integers(0, 8)) + 1)
    variant = {}
    if op == "content_address":
        variant = dict(mask=draw(st.sampled_from(["none", "random", "empty_row"])),
                       similarity=draw(st.sampled_from(["cosine", "dot"])))
    if op == "write":
        variant = dict(erase=draw(st.booleans()))
    if op == "attention_gru":
        variant = dict(mask=draw(st.sampled_from(["none", "random", "empty_row"])))
    values = dict(
        seed=draw(st.integers(0, 2 ** 31 - 1)),
        # flat to peaked weightings. Sharper ones (softmax(4 x) with gamma up to 10) hit the known
        # float32 inaccuracy of the sharpen backward (test_sharpen.py::test_peaked_weights_float32_gradient)
        sharpness=draw(st.sampled_from([0.1, 1.0, 2.0])),
        memory_scale=draw(st.sampled_from([0.05, 1.0, 3.0])),
        beta_max=draw(st.sampled_from([0.0, 5.0, 20.0])),
        gamma_max=draw(st.sampled_from([1.0, 3.0, 5.0])),
        zeros=draw(st.booleans()),  # exact zeros in weights / memory rows
    )
    dtype = draw(st.sampled_from(DTYPES))
    if dtype == torch.float32 and op in ("content_address", "ntm_address"):
        # a zero slot's cosine gradient is dsim * k / (|k| eps), rounding noise times 1e8 in float32
        values["zeros"] = False
    return sizes, variant, values, dtype


def _property_inputs(op, sizes, variant, values):
    tensors, kwargs = make_inputs(op, **sizes, seed=values["seed"], **variant)
    gen = torch.Generator().manual_seed(values["seed"] + 7)

    def weighting(shape):
        return torch.softmax(values["sharpness"] * torch.randn(*shape, generator=gen, dtype=torch.float64), -1)

    for name in ("weights", "prev_weights", "kernel"):
        if name in tensors:
            tensors[name] = weighting(tensors[name].shape)
    if "memory" in tensors:
        tensors["memory"] = tensors["memory"] * values["memory_scale"]
    if "beta" in tensors:
        tensors["beta"] = tensors["beta"] / 5 * values["beta_max"]
    if "gamma" in tensors:
        tensors["gamma"] = 1 + (tensors["gamma"] - 1) / 4 * (values["gamma_max"] - 1)
    if values["zeros"]:
        if op in ("sharpen", "shift", "read", "write") and tensors["weights"].shape[-1] > 1:
            tensors["weights"][..., ::2] = 0
        if "memory" in tensors and tensors["memory"].shape[1] > 1:
            tensors["memory"][:, 1] = 0
    return tensors, kwargs


def test_properties(op, cpp):
    @settings(settings.get_profile(PROFILE))
    @given(_property_cases(op))
    def check(case):
        sizes, variant, values, dtype = case
        tensors, kwargs = _property_inputs(op, sizes, variant, values)
        check_against_reference(op, tensors, kwargs, dtype, "cpu", "cpp", seed=values["seed"])

    check()
