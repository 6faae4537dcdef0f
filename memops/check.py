"""`memops check`: is this build right on this machine?

For every op and every backend that can run on the device (the reference excepted: it is what the
others are held to), compare the forward and the gradient of every floating input with the
reference computed in float64 on the same values, on a few shapes (the NTM paper size and an odd
small one with non-contiguous inputs); then run torch.autograd.gradcheck in float64 on a small shape.
Prints a pass/fail table; the exit code is 0 only if everything passed.

    python -m memops check                       # every non-reference backend on the CPU
    python -m memops check --device cuda --dtype float32
    python -m memops check --backend reference   # the reference in float32 against float64

Inputs are drawn in the ranges the ops see in a model: weights and kernels from a softmax, gamma in
[1, 5], gate, erase in [0, 1], beta in [0, 5] (memops.testing.sample_inputs); the mask drops about
30% of the slots and the whole of batch row 0. Tolerances: memops.testing.TOLERANCES, as the tests. Each op's input is drawn in float64 and cast to the tested dtype; the reference
runs on those cast values in float64, so an error shows the backend's arithmetic only.
"""

import platform
import sys
import time

import torch

from . import _backend, ops
from .testing import GRADCHECK, TOLERANCES, device_name, errors, git_commit, sample_inputs
from ._library import build_info

# ---------------------------------------------------------------------------------------------------
# What is checked

SHAPES = {
    # name: (sizes, non-contiguous inputs)
    "paper": (dict(B=64, H=1, N=128, W=20, S=3), False),  # NTM paper: 128 slots of width 20
    "odd": (dict(B=3, H=3, N=13, W=7, S=3), True),
}
GRADCHECK_SHAPE = dict(B=2, H=2, N=5, W=3, S=3)

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


class Case:
    """One op called one way: `options` fixed keyword arguments, `mask` whether a mask is drawn,
    `wide` a shift width wider than N (the smallest odd S > N)."""

    def __init__(self, name, op, options=None, mask=False, wide=False):
        self.name, self.op, self.options, self.mask, self.wide = name, op, options or {}, mask, wide

    def dims(self, sizes):
        d = dict(sizes)
        if self.wide:
            d["S"] = d["N"] + 1 if d["N"] % 2 == 0 else d["N"] + 2
        return d

    def call(self, tensors, extra, backend):
        return getattr(ops, self.op)(**tensors, **extra, **self.options, backend=backend)


CASES = [
    Case("content_address[cosine,mask]", "content_address", dict(similarity="cosine"), mask=True),
    Case("content_address[dot,mask]", "content_address", dict(similarity="dot"), mask=True),
    Case("content_scores[dot,mask]", "content_scores", dict(similarity="dot"), mask=True),
    Case("content_scores[cosine,mask]", "content_scores", dict(similarity="cosine"), mask=True),
    Case("shift[S=3]", "shift"),
    Case("shift[S>N]", "shift", wide=True),
    Case("sharpen", "sharpen"),
    Case("ntm_address", "ntm_address"),
    Case("read", "read"),
    Case("write[erase]", "write"),
    Case("write[erase=None]", "write", dict(erase=None)),
    Case("attention_gru[mask]", "attention_gru", mask=True),
]


def make_inputs(case, dims, seed):
    """Float64 CPU tensors for `case`, and the mask where the case has one."""
    tensors, options = sample_inputs(case.op, **dims, seed=seed, mask="empty_row" if case.mask else None,
                                     erase="erase" not in case.options)
    tensors = {k: v for k, v in tensors.items() if v is not None}
    extra = {"mask": options["mask"]} if case.mask else {}
    return tensors, extra


def _noncontiguous(t):
    """The same values in a tensor whose last dim has stride 2 (a slice of a wider one)."""
    wide = t.new_zeros(*t.shape[:-1], 2 * t.shape[-1])
    wide[..., ::2] = t
    return wide[..., ::2]


# ---------------------------------------------------------------------------------------------------
# Comparisons


class Result:
    def __init__(self, case, backend, check, ok, max_abs=None, max_rel=None, worst="", tol="", error=""):
        self.case, self.backend, self.check, self.ok = case, backend, check, ok
        self.max_abs, self.max_rel, self.worst, self.tol, self.error = max_abs, max_rel, worst, tol, error


def compare(case, backend, dtype, device, seed):
    """One Result: `backend` in `dtype` against the float64 reference, forward and every gradient."""
    stats = []  # (failed, max rel, max abs, which tensor @ which shape)
    for shape_name, (sizes, strided) in SHAPES.items():
        dims = case.dims(sizes)
        tensors, extra = make_inputs(case, dims, seed)
        tensors = {k: v.to(dtype) for k, v in tensors.items()}  # the values both sides see
        ref_in = {k: v.to(torch.float64).to(device).requires_grad_() for k, v in tensors.items()}
        test_in = {k: (_noncontiguous(v) if strided else v).to(device).requires_grad_()
                   for k, v in tensors.items()}
        extra = {k: v.to(device) for k, v in extra.items()}

        ref_out = case.call(ref_in, extra, "reference")
        gen = torch.Generator().manual_seed(seed + 1)
        grad = torch.randn(ref_out.shape, generator=gen, dtype=torch.float64).to(dtype)
        ref_grads = torch.autograd.grad(ref_out, list(ref_in.values()), grad.to(torch.float64).to(device))

        out = case.call(test_in, extra, backend)
        if not out.requires_grad:
            raise AssertionError(f"the {backend} output does not require grad: the op has no autograd formula")
        g = grad.to(device)
        if strided:
            g = _noncontiguous(g)
        grads = torch.autograd.grad(out, list(test_in.values()), g, allow_unused=True)

        pairs = [("out", out, ref_out)]
        for name, gr, rg in zip(test_in, grads, ref_grads):
            if gr is None:
                raise AssertionError(f"no gradient for {name} at shape {shape_name}")
            pairs.append((f"d_{name}", gr, rg))
        for what, got, want in pairs:
            max_abs, max_rel, ok = errors(got, want, dtype)
            stats.append((not ok, max_rel, max_abs, f"{what} @ {shape_name}"))
    max_abs = max(s[2] for s in stats)
    failed, max_rel, _, where = max(stats)  # a failing tensor first, then the largest relative error
    label = f"{'FAILED' if failed else 'max rel'}: {where}"
    return Result(case.name, backend, str(dtype).replace("torch.", ""), not any(s[0] for s in stats),
                  max_abs, max(s[1] for s in stats), label, _tol(**TOLERANCES[dtype]))


def run_gradcheck(case, backend, device, seed):
    """torch.autograd.gradcheck in float64 on GRADCHECK_SHAPE, every differentiable input at once."""
    dims = case.dims(GRADCHECK_SHAPE)
    tensors, extra = make_inputs(case, dims, seed)
    names = list(tensors)
    inputs = tuple(tensors[k].to(device).requires_grad_() for k in names)
    extra = {k: v.to(device) for k, v in extra.items()}

    def fn(*ts):
        return case.call(dict(zip(names, ts)), extra, backend)

    tol = _tol(**GRADCHECK)
    shape = ",".join(f"{k}={v}" for k, v in dims.items())
    torch.autograd.gradcheck(fn, inputs, **GRADCHECK)  # raises GradcheckError with the jacobians
    return Result(case.name, backend, "gradcheck", True, worst=f"float64 {shape}", tol=tol)


def _guarded(fn, case, backend, check, *args):
    try:
        return fn(case, backend, *args)
    except Exception as e:  # a failing kernel is a row of the table, not a crash of the check
        msg = " ".join(str(e).split())
        if len(msg) > 200:
            msg = msg[:197] + "..."
        return Result(case.name, backend, check, False, error=f"{type(e).__name__}: {msg}")


def run_checks(device="cpu", backends=None, dtypes=(torch.float32, torch.float64), seed=0, gradcheck=True):
    """Every Result for every case × backend × (dtype comparisons, gradcheck)."""
    device = torch.device(device)
    if backends is None:
        backends = [b for b in _backend.available_backends(device) if b != "reference"]
    results = []
    for case in CASES:
        for backend in backends:
            for dtype in dtypes:
                results.append(_guarded(compare, case, backend, str(dtype).replace("torch.", ""),
                                        dtype, device, seed))
            if gradcheck:
                results.append(_guarded(run_gradcheck, case, backend, "gradcheck", device, seed))
    return results


# ---------------------------------------------------------------------------------------------------
# Reporting


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _fmt(x):
    return "-" if x is None else f"{x:.2e}"


def _tol(**kw):
    return " ".join(f"{k}={v:.0e}".replace("e-0", "e-") for k, v in kw.items())


def format_results(results):
    rows = []
    for r in results:
        detail = r.error or r.worst
        rows.append([r.case, r.backend, r.check, _fmt(r.max_abs), _fmt(r.max_rel), r.tol or "-",
                     "pass" if r.ok else "FAIL", detail])
    header = ["op", "backend", "check", "max abs err", "max rel err", "tolerance", "result", "detail"]
    return _table(header, rows)


def header_lines(device, backends, dtypes, seed):
    info = build_info()
    built = (
        f"memops {info['version']} (cuda kernels: {info['with_cuda']}"
        + (f", archs {info['cuda_archs']}" if info.get("cuda_archs") else "")
        + f", openmp: {info['openmp']}, CPU kernels: {info['cpu_capability']}"
        + f", built against torch {info['torch_version']})"
        if info["built"] else f"memops: compiled ops NOT loaded ({info['error']})"
    )
    dev = torch.device(device)
    lines = [
        built,
        f"torch {torch.__version__} (CUDA {torch.version.cuda or '-'}), python {platform.python_version()}, "
        f"commit {git_commit()}",
        f"device: {dev} = {device_name(dev)}"
        + (f", {torch.get_num_threads()} threads" if dev.type == "cpu" else ""),
        f"backends: {', '.join(backends)}; dtypes: {', '.join(str(d).replace('torch.', '') for d in dtypes)}; "
        f"seed {seed}",
        "shapes: " + "; ".join(
            f"{name} ({', '.join(f'{k}={v}' for k, v in sizes.items())}"
            + (", non-contiguous" if strided else "") + ")"
            for name, (sizes, strided) in SHAPES.items()
        ) + "; S>N uses the smallest odd S > N",
        "reference: float64 on the same values; pass: |out - ref| <= atol max(1, max |ref|) + rtol |ref| "
        "everywhere (memops.testing.TOLERANCES); rel err = |out - ref| / max(|ref|, atol / rtol)",
    ]
    return lines


# ---------------------------------------------------------------------------------------------------
# Command line (wired into `python -m memops` by memops/__main__.py)

HELP = "compare every op and backend with the float64 reference, forward and gradients"


def add_arguments(parser):
    parser.add_argument("--device", default="cpu", help="device to check on: cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--backend", nargs="+", metavar="NAME",
                        help="backends to check (default: every one this build has for the device, "
                             "the reference excepted); names: " + ", ".join(_backend.BACKENDS))
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=sorted(DTYPES),
                        metavar="DTYPE", help="dtypes to compare in (default: float32 float64; "
                                              "also float16, bfloat16 where a backend has them)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    parser.add_argument("--no-gradcheck", dest="gradcheck", action="store_false",
                        help="skip torch.autograd.gradcheck")


def _fail(msg):
    print(f"memops check: {msg}", file=sys.stderr)
    return 2


def run(args):
    """Run the checks the parsed `args` ask for; the exit code (0 all passed, 1 a failure, 2 cannot run)."""
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError) as e:
        return _fail(f"unknown device {args.device!r} ({e})")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return _fail(f"device {args.device!r} asked for, but CUDA is not available "
                         f"(torch {torch.__version__}, built with CUDA {torch.version.cuda or 'no'})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            return _fail(f"device {args.device!r} asked for, but there are only "
                         f"{torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        return _fail(f"device type {device.type!r} is not supported; use cpu or cuda")

    available = _backend.available_backends(device)
    if args.backend:
        backends = []
        for name in args.backend:
            if name not in _backend.BACKENDS:
                return _fail(f"unknown backend {name!r}; names: {', '.join(_backend.BACKENDS)} "
                             f"(available on {device.type} in this build: {', '.join(available)})")
            if name == "auto":
                name = _backend.select("auto", torch.empty(0, device=device))
            if name == "cuda_emu" and _backend.emu_why_not(device.type) is None:
                available = available + ["cuda_emu"]  # a test backend: checked only when named
            if name not in available:
                hint = ""
                if name == "cpp" and not build_info()["built"]:
                    hint = f" ({build_info()['error']})"
                return _fail(f"backend {name!r} is not available on {device.type} in this build{hint}; "
                             f"available: {', '.join(available)}")
            if name not in backends:
                backends.append(name)
    else:
        backends = [b for b in available if b != "reference"]
        if not backends:
            return _fail(f"no backend but the reference can run on {device.type} in this build "
                         f"({build_info()}); nothing to check (--backend reference checks the reference "
                         "in low precision)")
    dtypes = [DTYPES[d] for d in dict.fromkeys(args.dtype)]

    for line in header_lines(device, backends, dtypes, args.seed):
        print(line)
    print()
    start = time.perf_counter()
    results = run_checks(device, backends, dtypes, seed=args.seed, gradcheck=args.gradcheck)
    elapsed = time.perf_counter() - start
    print(format_results(results))
    failed = [r for r in results if not r.ok]
    print()
    if failed:
        print(f"FAILED: {len(failed)} of {len(results)} checks ({elapsed:.1f} s)")
        return 1
    print(f"all {len(results)} checks passed ({elapsed:.1f} s)")
    return 0


__all__ = ["run_checks", "format_results", "add_arguments", "run", "CASES", "SHAPES", "TOLERANCES"]
