"""The Triton kernels on CPU tensors, in Triton's interpreter (TRITON_INTERPRET=1, which conftest.py
sets on machines without a GPU): every op against the reference, forward and every gradient, float32
and float64, on the small shapes that break block kernels, plus non-contiguous inputs and opcheck.

The edge-value tests of tests/test_<op>.py also run backend="triton" in the interpreter (conftest.py
deselects only their full grids). The interpreter runs a kernel's every program in numpy, slowly, so
the grid here is pairwise (every pair of parameter values appears in some case; helpers.covering)
rather than the full product. On a GPU this
file skips: there the full grids of tests/test_<op>.py run backend="triton" on CUDA tensors, with
tests/test_gpu.py.
"""

import pytest
import torch

from helpers import (OPS, backward_schema_args, check_against_reference, check_noncontiguous, covering,
                     gradcheck_op, make_inputs, output_shape, random_grad, require_backend, requires_grad, run_opcheck,
                     schema_args, seed_of)

DTYPES = (torch.float32, torch.float64)


@pytest.fixture(autouse=True)
def _interpreter():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the Triton kernels are tested on it (test_<op>.py, test_gpu.py)")
    require_backend("triton", "cpu")


def cases(op):
    full = {"dtype": DTYPES, "N": (1, 3, 127, 129)}
    rest = {"H": (1, 3), "B": (0, 1, 2), "W": (1, 20)}
    if op in ("shift", "ntm_address"):
        rest["S"] = (1, 3, 5, "wide")
    if op == "content_address":
        rest["variant"] = tuple((m, s) for m in ("none", "random", "empty_row") for s in ("cosine", "dot"))
    if op == "write":
        rest["erase"] = (True, False)
    return covering(full, rest)


def case_id(row):
    return "-".join(f"{k}{v}" if k != "dtype" else str(v)[6:] for k, v in row.items())


def build(op, row):
    N = row["N"]
    S = row.get("S", 3)
    if S == "wide":
        S = N + 1 if N % 2 == 0 else N + 2
    kw = dict(B=row["B"], H=row["H"], N=N, W=row["W"], S=S)
    if op == "content_address":
        kw["mask"], kw["similarity"] = row["variant"]
    if op == "write":
        kw["erase"] = row["erase"]
    seed = seed_of("triton", op, tuple(sorted(kw.items())))
    tensors, kwargs = make_inputs(op, seed=seed, **kw)
    return tensors, kwargs, seed


@pytest.mark.parametrize("op,row", [(op, row) for op in OPS for row in cases(op)],
                         ids=[f"{op}-{case_id(row)}" for op in OPS for row in cases(op)])
def test_matches_reference(op, row):
    tensors, kwargs, seed = build(op, row)
    check_against_reference(op, tensors, kwargs, row["dtype"], "cpu", "triton", seed=seed)


@pytest.mark.parametrize("kind", ["sliced", "transposed", "expanded"])
@pytest.mark.parametrize("op", OPS)
def test_noncontiguous(op, kind):
    kw = dict(mask="random") if op == "content_address" else {}
    tensors, kwargs = make_inputs(op, B=3, H=2, N=9, W=5, S=3, seed=11, **kw)
    check_noncontiguous(op, tensors, kwargs, kind, torch.float64, "cpu", "triton", seed=11)


def test_write_without_erase_noncontiguous():
    tensors, kwargs = make_inputs("write", B=3, H=2, N=9, W=5, seed=12, erase=False)
    check_noncontiguous("write", tensors, kwargs, "transposed", torch.float64, "cpu", "triton", seed=12)


def test_fully_masked_row_is_zero_with_zero_gradients():
    tensors, kwargs = make_inputs("content_address", B=2, H=2, N=7, W=4, seed=5, mask="empty_row")
    leaves = {k: v.detach().requires_grad_(True) for k, v in tensors.items()}
    import memops

    out = memops.content_address(*leaves.values(), **kwargs, backend="triton")
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    out.backward(random_grad(out.shape, 5))
    assert torch.equal(leaves["keys"].grad[0], torch.zeros_like(leaves["keys"].grad[0]))
    assert torch.equal(leaves["memory"].grad[0], torch.zeros_like(leaves["memory"].grad[0]))


@pytest.mark.parametrize("op", OPS)
def test_gradcheck(op):
    """torch.autograd.gradcheck in float64 (one seed: each numerical Jacobian is hundreds of
    interpreted launches; the reference comparisons above cover more values)."""
    kw = dict(mask="empty_row") if op == "content_address" else {}
    tensors, kwargs = make_inputs(op, B=2, H=2, N=5, W=3, S=3, seed=0, **kw)
    gradcheck_op(op, tensors, kwargs, "triton")


@pytest.mark.parametrize("op", OPS)
def test_opcheck(op):
    """torch.library.opcheck of the Triton forward op (schema, autograd registration, fake tensors,
    AOT dispatch), and of its backward op."""
    kw = dict(mask="random") if op == "content_address" else {}
    tensors, kwargs = make_inputs(op, B=2, H=2, N=5, W=3, S=3, seed=3, **kw)
    lib = torch.ops.memops_triton
    run_opcheck(op, schema_args(op, requires_grad(tensors), kwargs), lib)
    grad = random_grad(output_shape(op, tensors), 3)
    run_opcheck("_" + op + "_backward", backward_schema_args(op, tensors, kwargs, grad, lib), lib)


def test_compile_fullgraph_sees_the_triton_ops():
    """torch.compile(fullgraph=True) of a mini NTM step on backend="triton": one graph, every op in it
    as a memops_triton op (in the interpreter they are opaque custom ops; on a GPU, triton_op's), the
    same results and gradients as eager."""
    from torch._dynamo.backends.debugging import aot_eager

    from test_compile import compare, inputs, make_step

    graphs = []

    def recorder(gm, example_inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    step = make_step("triton")
    compiled = torch.compile(step, fullgraph=True, backend=recorder)
    tensors, mask = inputs(seed=5)
    compare(compiled, tensors, mask, seed=5, step=step)
    assert len(graphs) == 1
    ops = {name.split(".")[1] for name in graphs[0] if name.startswith("memops_triton.")}
    assert ops == set(OPS), graphs[0]


SMALL_TILES = {  # module globals of memops/triton/<op>.py, shrunk so that rows and widths span blocks
    "content_address": dict(_TILE=64, _ROW_CAP=16),
    "ntm_address": dict(_ROW_CAP=16),
    "sharpen": dict(_ROW_CAP=16),
    "shift": dict(_ROW_CAP=16, _TILE=64),
    "read": dict(_TILE=64, _MAX_H=2, _MAX_W=16),
    "write": dict(_TILE=64, _TILE_BWD=64, _MAX_W=16, _MAX_W_BWD=8),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_multi_block_paths(op, dtype, monkeypatch):
    """With the tiles shrunk, N = 129 slots and W = 40 take several blocks: the chunked paths (per-chunk
    partials and their combine, row loops, column tiles) that the GPU sizes take, at interpreter cost."""
    import importlib

    for name in {"content_address", "ntm_address"} if op == "ntm_address" else {op}:
        module = importlib.import_module(f"memops.triton.{name}")
        for attr, value in SMALL_TILES[name].items():
            assert hasattr(module, attr), (name, attr)
            monkeypatch.setattr(module, attr, value)
    variants = ([dict(mask="random", similarity="cosine"), dict(mask="empty_row", similarity="dot")]
                if op == "content_address" else [dict(erase=True), dict(erase=False)] if op == "write" else [{}])
    for variant in variants:
        seed = seed_of("multi-block", op, tuple(variant.items()))
        tensors, kwargs = make_inputs(op, B=2, H=3, N=129, W=40, S=5, seed=seed, **variant)
        check_against_reference(op, tensors, kwargs, dtype, "cpu", "triton", seed=seed)
