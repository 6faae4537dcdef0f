"""torch.compile(fullgraph=True) of a mini NTM step that calls every op: the same forward results and
gradients as eager, no graph break, and the memops ops (not a decomposition) in the graph. The C++
kernels with inductor (timed) and aot_eager; the Triton kernels (in the interpreter without a GPU);
inductor on a GPU. Each op alone is compiled on every target by tests/ops/faces.py."""

import time

import pytest
import torch

import memops

from helpers import require_backend, require_device
from memops.spec import OPS


def make_step(backend):
    """One NTM step (address -> read -> write), then the memory-network side on the new memory (also
    the scores without softmax, and an attention-GRU episode over the slots), with every op on `backend`."""

    def step(memory, keys, beta, gate, kernel, gamma, prev_weights, erase, add, query, query_beta, ur, uh, bu,
             mask):
        w = memops.ntm_address(memory, keys, beta, gate, kernel, gamma, prev_weights, backend=backend)
        r = memops.read(memory, w, backend=backend)
        memory = memops.write(memory, w, erase, add, backend=backend)
        memory = memops.write(memory, w, None, 0.5 * add, backend=backend)  # the NSE write (erase = None)
        c = memops.content_address(memory, query, query_beta, mask=mask, similarity="dot", backend=backend)
        s = memops.shift(c, kernel, backend=backend)
        p = memops.sharpen(s, gamma, backend=backend)
        r2 = memops.read(memory, p, backend=backend)
        q = memops.content_scores(memory, query, query_beta, mask=mask, backend=backend)  # MemN2N's linear start
        # an episode of DMN+ over the memory's slots as facts, gated by the attention of head 0
        e = memops.attention_gru(memory, 0.5 * memory, ur, uh, bu, c[:, 0], r[:, 0], mask=mask, backend=backend)
        return r, memory, w, p, r2, q, e

    return step


step = make_step("cpp")


def inputs(B=3, H=2, N=10, W=6, S=3, seed=0, noncontiguous=False):
    gen = torch.Generator().manual_seed(seed)

    def randn(*s):
        return torch.randn(*s, generator=gen)

    def rand(*s):
        return torch.rand(*s, generator=gen)

    memory = randn(B, N, W)
    if noncontiguous:  # a transposed view: the compiled graph must not assume contiguous strides
        memory = memory.transpose(1, 2).contiguous().transpose(1, 2)
    mask = rand(B, N) < 0.8
    mask[0] = False  # one fully masked row
    tensors = dict(memory=memory, keys=randn(B, H, W), beta=5 * rand(B, H), gate=rand(B, H),
                   kernel=torch.softmax(randn(B, H, S), -1), gamma=1 + 4 * rand(B, H),
                   prev_weights=torch.softmax(randn(B, H, N), -1), erase=rand(B, H, W), add=randn(B, H, W),
                   query=randn(B, H, W) / W ** 0.5, query_beta=5 * rand(B, H), ur=randn(W, W) / W ** 0.5,
                   uh=randn(W, W) / W ** 0.5, bu=randn(W))
    return tensors, mask


def run(fn, tensors, mask, upstream):
    leaves = {k: v.detach().requires_grad_(True) for k, v in tensors.items()}
    outs = fn(*leaves.values(), mask)
    loss = sum((o * u).sum() for o, u in zip(outs, upstream))
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [o.detach() for o in outs], dict(zip(leaves, grads))


def compare(compiled, tensors, mask, seed=0, step=step):
    gen = torch.Generator().manual_seed(seed + 100)
    shapes_out = [o.shape for o in step(*tensors.values(), mask)]
    device = next(iter(tensors.values())).device
    upstream = [torch.randn(*s, generator=gen).to(device) for s in shapes_out]
    eager_out, eager_grads = run(step, tensors, mask, upstream)
    comp_out, comp_grads = run(compiled, tensors, mask, upstream)
    for i, (a, b) in enumerate(zip(comp_out, eager_out)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"output {i}: {m}")
    for k in eager_grads:
        torch.testing.assert_close(comp_grads[k], eager_grads[k], rtol=1e-5, atol=1e-5,
                                   msg=lambda m: f"grad of {k}: {m}")
    assert torch.equal(eager_out[2].sum(-1) > 0, torch.ones_like(eager_out[2].sum(-1), dtype=torch.bool))
    return eager_out, eager_grads


class GraphRecorder:
    """A torch.compile backend that records each graph's memops ops, then runs aot_eager."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        ops = [n.target for n in gm.graph.nodes if n.op == "call_function"]
        self.graphs.append({getattr(t, "__name__", str(t)) for t in ops})
        from torch._dynamo.backends.debugging import aot_eager
        return aot_eager(gm, example_inputs)


def memops_ops_in(names):
    return {n.split(".")[0] for n in names if n.split(".")[0] in OPS}


def test_inductor_fullgraph(cpp):
    torch._dynamo.reset()
    tensors, mask = inputs(seed=1, noncontiguous=True)
    compiled = torch.compile(step, fullgraph=True, backend="inductor")
    start = time.perf_counter()
    compare(compiled, tensors, mask, seed=1)
    elapsed = time.perf_counter() - start
    # a second call with new values of the same shapes reuses the compiled code
    tensors2, mask2 = inputs(seed=2, noncontiguous=True)
    compare(compiled, tensors2, mask2, seed=2)
    print(f"inductor compile + first run: {elapsed:.1f} s")


def test_aot_eager_fullgraph_one_graph_with_every_op(cpp):
    torch._dynamo.reset()
    recorder = GraphRecorder()
    compiled = torch.compile(step, fullgraph=True, backend=recorder)
    tensors, mask = inputs(seed=3)
    compare(compiled, tensors, mask, seed=3)
    assert len(recorder.graphs) == 1  # no graph break, no recompile
    assert memops_ops_in(recorder.graphs[0]) == set(OPS)


def test_aot_eager_dynamic_shapes(cpp):
    torch._dynamo.reset()
    recorder = GraphRecorder()
    compiled = torch.compile(step, fullgraph=True, dynamic=True, backend=recorder)
    # all sizes distinct within a call (equal sizes would be "duck sized" into one symbol)
    sizes = [dict(B=2, H=3, N=11, W=6, S=5), dict(B=4, H=5, N=9, W=7, S=3), dict(B=6, H=2, N=13, W=4, S=7)]
    graphs_after_first = None
    for seed, size in enumerate(sizes):
        tensors, mask = inputs(seed=seed, **size)
        compare(compiled, tensors, mask, seed=seed)
        graphs_after_first = graphs_after_first or len(recorder.graphs)
    assert len(recorder.graphs) == graphs_after_first  # new sizes did not recompile
    assert all(memops_ops_in(g) == set(OPS) for g in recorder.graphs)


def test_compiled_errors_match_eager(cpp):
    """The fake kernels raise the same error at trace time as the kernels at run time."""
    torch._dynamo.reset()
    tensors, mask = inputs()
    tensors["kernel"] = torch.rand(3, 2, 4)  # even S
    with pytest.raises(ValueError) as eager:
        step(*tensors.values(), mask)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception) as traced:
        compiled(*tensors.values(), mask)
    assert str(eager.value) in str(traced.value)


def test_compile_fullgraph_sees_the_triton_ops():
    """backend="triton": one graph, every op in it as a memops_triton op (in the interpreter they are
    opaque custom ops; on a GPU, triton_op's), the same results and gradients as eager."""
    from torch._dynamo.backends.debugging import aot_eager

    device = "cuda" if torch.cuda.is_available() else "cpu"
    require_backend("triton", device)
    graphs = []

    def recorder(gm, example_inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    triton_step = make_step("triton")
    compiled = torch.compile(triton_step, fullgraph=True, backend=recorder)
    tensors, mask = inputs(seed=5)
    tensors = {k: v.to(device) for k, v in tensors.items()}
    compare(compiled, tensors, mask.to(device), seed=5, step=triton_step)
    assert len(graphs) == 1
    ops = {name.split(".")[1] for name in graphs[0] if name.startswith("memops_triton.")}
    assert ops == set(OPS), graphs[0]


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_compile_fullgraph_inductor_cuda(backend):
    """The same step on CUDA tensors with inductor."""
    require_device("cuda")
    require_backend(backend, "cuda")
    torch._dynamo.reset()
    tensors, mask = inputs(seed=1)
    tensors = {k: v.cuda() for k, v in tensors.items()}
    gpu_step = make_step(backend)
    compiled = torch.compile(gpu_step, fullgraph=True, backend="inductor")
    compare(compiled, tensors, mask.cuda(), seed=1, step=gpu_step)
