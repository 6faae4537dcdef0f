"""How bench_ops.py times: the inputs (memops.testing.sample_inputs), the contenders' calls, the
check against eager (the dtype's row of memops.testing.TOLERANCES, normwise), one row's timings, and
the run over every op x size x pass within the time budget."""

import sys
import time

import torch

import harness
from _ops_sizes import OPS, check_target, traffic_bytes

import memops
from memops import reference
from memops.testing import TOLERANCES, sample_inputs


def make_inputs(op, dims, dtype, device, seed):
    """(tensors, extra, grad): the floating inputs {name: tensor} in the ranges a model gives them
    (never zeros), the other keyword arguments (mask, similarity, eps; erase=None), and a fixed
    random output gradient."""
    tensors, extra = sample_inputs(op.op, **dims, seed=seed, dtype=dtype, device=device, **op.variant)
    extra.update({name: None for name, t in tensors.items() if t is None})  # write's erase=None
    tensors = {name: t for name, t in tensors.items() if t is not None}
    gen = torch.Generator().manual_seed(seed + 1)
    grad = torch.randn(*op.spec.output_shape(tensors), generator=gen).to(device=device, dtype=dtype)
    return tensors, extra, grad


def backend_call(op, backend):
    """memops.<op>(..., backend=backend), the public API a model calls."""
    fn = getattr(memops, op.op)
    return lambda **kw: fn(**kw, backend=backend)


def reference_call(op, compiled_fn=None):
    """memops.reference.<op>, or a torch.compile of it."""
    return compiled_fn or getattr(reference, op.op)


def make_callable(call, tensors, extra, grad, backward):
    """fn() running one forward (and backward) pass of `call` on fresh-grad-free inputs."""
    if not backward:
        return lambda: call(**tensors, **extra)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in tensors.items()}
    values = list(leaves.values())
    return lambda: torch.autograd.grad(call(**leaves, **extra), values, grad)


def close(a, b, dtype):
    """Normwise, with the dtype's row of TOLERANCES: max |a - b| <= atol max(1, max |b|) + rtol max |b|
    for each output (a sanity check, not the accuracy test: `memops check` is that). Elementwise
    would flag the float32 rounding of sums over 4096 slots."""
    tol = TOLERANCES[dtype]
    a = a if isinstance(a, (tuple, list)) else (a,)
    b = b if isinstance(b, (tuple, list)) else (b,)
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return False
        if y.numel():
            top = float(y.double().abs().max())
            if float((x.double() - y.double()).abs().max()) > tol["atol"] * max(1.0, top) + tol["rtol"] * top:
                return False
    return len(a) == len(b)


def one_line(e, limit=300):
    return f"{type(e).__name__}: {' '.join(str(e).split())[:limit]}"


# CUDA errors after which the context is unusable: every later call fails the same way.
_STICKY_CUDA_ERRORS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                       "illegal instruction", "misaligned address", "an illegal", "launch timed out")


def sticky(message):
    return any(s in message for s in _STICKY_CUDA_ERRORS)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device, nbytes, min_run_time):
    """The device's copy bandwidth: dst.copy_(src) of two float32 tensors of `nbytes`, timed as the
    ops are (harness.time_us, median); the bytes moved are read + written, 2 * nbytes.

    Returns {"bytes", "tensor_bytes", "median_us", "gbps"} (GB = 1e9 bytes).
    """
    n = max(1, nbytes // 4)
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    us = harness.time_us(lambda: dst.copy_(src), device, min_run_time=min_run_time)
    moved = 2 * n * 4
    return {"bytes": moved, "tensor_bytes": n * 4, "median_us": us, "gbps": moved / us / 1e3}


def bench_row(calls, tensors, extra, grad, backward, device, dtype, min_run_time, label, errors=None):
    """Time every contender in `calls` on one op/size/pass.

    Returns ({contender: median us}, compile seconds or None, status): status "ok", "MISMATCH" (a
    contender's result differs from eager's) or "ERROR" (a contender raised; it gets no median).
    Each problem is printed and, when `errors` is a list, appended to it as a line.
    """
    errors = [] if errors is None else errors

    def problem(text):
        errors.append(text)
        print(f"  {'error' if 'raised' in text else 'warning'}: {label}: {text}", file=sys.stderr)

    medians, compile_s, status = {}, None, "ok"
    try:
        expected = make_callable(calls["eager"], tensors, extra, grad, backward)()
    except Exception as e:  # the reference itself failed (say, out of memory): time the rest unchecked
        expected, status = None, "ERROR"
        problem(f"eager (the check's reference) raised {one_line(e)}")
    for name, call in calls.items():
        try:
            fn = make_callable(call, tensors, extra, grad, backward)
            t0 = time.perf_counter()
            result = fn()  # the first call: for "compiled", the compilation
            sync(device)
            if name == "compiled":
                compile_s = time.perf_counter() - t0
            if expected is not None and not close(result, expected, dtype):
                status = "MISMATCH" if status == "ok" else status
                problem(f"{name} does not match eager")
            del result
            medians[name] = harness.time_us(fn, device, min_run_time=min_run_time)
        except Exception as e:  # one contender failing (say, compile without a compiler) is a cell, not the run
            status = "ERROR"
            problem(f"{name} raised {one_line(e)}")
            if device.type == "cuda" and not sticky(str(e)):
                torch.cuda.empty_cache()
    return medians, compile_s, status


# ---------------------------------------------------------------------------------------------------
# The run


def run_rows(plan, copy, on_row):
    """Time every op x size x pass of `plan` (bench_ops.make_plan), paper size first, then large:
    under a time budget, what is cut is the large size's tail. Returns (records in run order, seconds
    of torch.compile); on_row(records, seconds of torch.compile so far) after each row."""
    start = time.perf_counter()
    deadline = None if plan.time_budget is None else start + plan.time_budget
    work = [(si, s, oi, o, pi, p) for si, s in enumerate(plan.sizes) for oi, o in enumerate(plan.ops)
            for pi, p in enumerate(plan.passes)]
    compiled_fns, records, inputs_for = {}, [], {}
    compile_total, plain_times, compile_times, fatal = 0.0, [], [], None
    for index, (si, (size_name, dims), oi, op_name, pi, pass_) in enumerate(work):
        op = OPS[op_name]
        record = {"_order": (oi, si, pi), "op": op_name, "size": size_name,
                  "shape": ",".join(f"{k}={v}" for k, v in dims.items()), "dims": dims, "dtype": plan.dtype_name,
                  "pass": pass_, "status": "SKIPPED", "skipped": None, "errors": [], "notes": [], "medians_us": {},
                  "compile_s": None, "bytes": traffic_bytes(op_name, dims, pass_, plan.itemsize), "gbps": {},
                  "bandwidth_fraction": {}, "targets": {}}
        records.append(record)
        now = time.perf_counter()
        if fatal is not None:
            record["skipped"] = f"the CUDA context is unusable after: {fatal}"
        elif deadline is not None and now >= deadline:
            record["skipped"] = f"the time budget ({plan.time_budget:g} s) ran out"
        if record["skipped"]:
            on_row(records, compile_total)
            continue
        label = f"{op_name} {size_name} {pass_}"
        try:
            key = (size_name, op_name)
            if key not in inputs_for:
                inputs_for.clear()  # one op's inputs alive at a time (the large ones are 256 MiB)
                inputs_for[key] = make_inputs(op, dims, plan.dtype, plan.device, plan.seed)
            tensors, extra, grad = inputs_for[key]
            calls = {b: backend_call(op, b) for b in plan.backends}
            calls["eager"] = reference_call(op)
            want_compile = plan.compile and size_name in plan.compile_sizes
            if want_compile and deadline is not None:
                rows_left = len(work) - index
                plain = sum(plain_times) / len(plain_times) if plain_times else 3.0
                compile_cost = sum(compile_times) / len(compile_times) if compile_times else 20.0
                if deadline - now - rows_left * plain < compile_cost:
                    want_compile = False
                    record["notes"].append("torch.compile skipped to stay within the time budget")
                    print(f"  note: {label}: torch.compile skipped to stay within the time budget", file=sys.stderr)
            if want_compile:
                if op_name not in compiled_fns:
                    compiled_fns[op_name] = torch.compile(getattr(reference, op.op), dynamic=False)
                calls["compiled"] = reference_call(op, compiled_fns[op_name])
            medians, compile_s, status = bench_row(calls, tensors, extra, grad, pass_ == "fwd+bwd", plan.device,
                                                   plan.dtype, plan.min_run_time, label=label, errors=record["errors"])
        except Exception as e:  # making the inputs, say: the row fails, the run goes on
            medians, compile_s, status = {}, None, "ERROR"
            record["errors"].append(f"row raised {one_line(e)}")
            print(f"  error: {label}: raised {one_line(e)}", file=sys.stderr)
            inputs_for.clear()
        if plan.device.type == "cuda":
            stuck = [line for line in record["errors"] if sticky(line)]
            if stuck:
                fatal = f"{label}: {stuck[0]}"
        if compile_s is not None:
            compile_times.append(compile_s)
            compile_total += compile_s
        plain_times.append(max(0.0, time.perf_counter() - now - (compile_s or 0.0)))
        finish_record(record, plan, medians, compile_s, status, copy)
        print(f"  {label}: " + ", ".join(f"{c} {medians[c]:,.1f} us" for c in plan.contenders if medians.get(c) is not None)
              + (f" (compile {compile_s:.1f} s)" if compile_s is not None else ""), flush=True)
        on_row(records, compile_total)
    inputs_for.clear()
    return records, compile_total


def finish_record(record, plan, medians, compile_s, status, copy):
    """A timed row's medians, GB/s, fractions of the copy bandwidth and targets."""
    copy_gbps = copy["gbps"] if copy else None
    record.update(status=status, medians_us={c: medians[c] for c in plan.contenders if c in medians},
                  compile_s=None if compile_s is None else round(compile_s, 3))
    for name, us in record["medians_us"].items():
        record["gbps"][name] = record["bytes"] / us / 1e3
        record["bandwidth_fraction"][name] = None if not copy_gbps else record["gbps"][name] / copy_gbps
    for b in plan.backends:
        checked = check_target(plan.device.type, record["size"], record["pass"], b, medians,
                               record["bandwidth_fraction"].get(b) if plan.bandwidth else None)
        if checked is not None:
            criterion, met, text = checked
            record["targets"][b] = {"criterion": criterion, "met": met, "text": text}
