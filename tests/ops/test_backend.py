"""Backend selection: the backend= argument, `with memops.backend(...)`, memops.set_backend, the
MEMOPS_BACKEND variable, "auto", unknown names, available_backends(); and the fallback to the
reference, with one warning, where the extension cannot be loaded (in a subprocess)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import memops
from helpers import EXTENSION_BUILT, make_inputs, require_backend

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Recorder(TorchDispatchMode):
    """Records the namespaces of the ops that reach the dispatcher."""

    def __init__(self):
        super().__init__()
        self.namespaces = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.namespaces.add(func.namespace)
        return func(*args, **(kwargs or {}))


def which(fn):
    """"cpp" if fn() ran a compiled memops op, "triton" if a Triton one, "reference" if plain aten
    ops only."""
    with Recorder() as rec:
        fn()
    assert rec.namespaces, "nothing ran"
    if "memops_triton" in rec.namespaces:
        return "triton"
    return "cpp" if "memops" in rec.namespaces else "reference"


def interpreter():
    """Whether the Triton kernels run on CPU tensors here (triton installed, TRITON_INTERPRET=1)."""
    from memops import _backend

    return _backend._triton_why_not("cpu") is None


def read_call(device="cpu", **kw):
    tensors, _ = make_inputs("read", B=2, H=2, N=4, W=3)
    tensors = {k: v.to(device) for k, v in tensors.items()}
    return lambda: memops.read(*tensors.values(), **kw)


@pytest.fixture
def built():
    require_backend("cpp")


def test_backend_argument(built):
    assert which(read_call(backend="cpp")) == "cpp"
    assert which(read_call(backend="reference")) == "reference"
    assert which(read_call(backend="auto")) == "cpp"
    assert which(read_call()) == "cpp"


@pytest.mark.parametrize("op", ["content_address", "shift", "sharpen", "ntm_address", "read", "write"])
def test_every_op_honours_the_backend_argument(built, op):
    tensors, kwargs = make_inputs(op)
    fn = getattr(memops, op)
    assert which(lambda: fn(*tensors.values(), **kwargs, backend="cpp")) == "cpp"
    assert which(lambda: fn(*tensors.values(), **kwargs, backend="reference")) == "reference"
    with memops.backend("reference"):
        assert which(lambda: fn(*tensors.values(), **kwargs)) == "reference"


def test_auto_picks_cpp_on_cpu_when_built(built):
    assert memops.get_backend() == "auto"
    assert which(read_call()) == "cpp"  # never the Triton interpreter, even where it runs
    expected = ["cpp"] + (["triton"] if interpreter() else []) + ["reference"]
    assert memops.available_backends() == expected
    assert memops.available_backends("cpu") == expected
    assert memops.available_backends(torch.device("cpu")) == expected


def test_available_backends_other_devices():
    from memops import _backend

    assert memops.available_backends("meta") == ["reference"]
    cuda = memops.available_backends("cuda:0")
    expected = (["cpp"] if memops.build_info().get("with_cuda") else []) + (
        ["triton"] if _backend._triton_why_not("cuda") is None else []) + ["reference"]
    assert cuda == expected


def test_cuda_backend_refuses_cpu_tensors(built):
    with pytest.raises(RuntimeError, match="backend 'cuda' runs the CUDA kernels, on CUDA tensors; got cpu"):
        read_call(backend="cuda")()


def test_triton_backend_in_the_interpreter():
    if not interpreter():
        pytest.skip("the Triton interpreter cannot run here (needs triton and TRITON_INTERPRET=1)")
    assert which(read_call(backend="triton")) == "triton"
    with memops.backend("triton"):
        assert which(read_call()) == "triton"
        assert which(read_call(backend="reference")) == "reference"
    memops.set_backend("triton")
    assert which(read_call()) == "triton"


def test_auto_on_meta_runs_the_reference(built):
    out_fn = read_call(device="meta")
    assert which(out_fn) == "reference"
    assert out_fn().shape == (2, 2, 3) and out_fn().device.type == "meta"


def test_context_manager(built):
    with memops.backend("reference"):
        assert memops.get_backend() == "reference"
        assert which(read_call()) == "reference"
        # the argument wins over the context
        assert which(read_call(backend="cpp")) == "cpp"
        with memops.backend("cpp"):
            assert which(read_call()) == "cpp"
        assert memops.get_backend() == "reference"
        assert which(read_call()) == "reference"
    assert memops.get_backend() == "auto"
    assert which(read_call()) == "cpp"


def test_context_manager_restores_after_an_error(built):
    with pytest.raises(KeyError):
        with memops.backend("reference"):
            raise KeyError("boom")
    assert memops.get_backend() == "auto"
    assert which(read_call()) == "cpp"


def test_set_backend(built):
    memops.set_backend("reference")
    assert memops.get_backend() == "reference"
    assert which(read_call()) == "reference"
    assert which(read_call(backend="cpp")) == "cpp"  # the argument wins
    with memops.backend("cpp"):  # and the context
        assert which(read_call()) == "cpp"
    assert which(read_call()) == "reference"
    memops.set_backend(None)
    assert memops.get_backend() == "auto"
    assert which(read_call()) == "cpp"
    memops.set_backend("reference")
    memops.set_backend("auto")
    assert memops.get_backend() == "auto"
    assert which(read_call()) == "cpp"


def test_environment_variable_is_the_lowest_precedence(built, monkeypatch):
    from memops import _backend
    monkeypatch.setattr(_backend, "_ENV_BACKEND", "reference")
    assert memops.get_backend() == "reference"
    assert which(read_call()) == "reference"
    memops.set_backend("cpp")
    assert which(read_call()) == "cpp"


UNKNOWN = "memops: unknown backend 'triton2'; choose one of auto, cpp, cuda, triton, reference, cuda_emu"


def test_unknown_backend_names():
    with pytest.raises(ValueError) as e:
        read_call(backend="triton2")()
    assert str(e.value) == UNKNOWN
    with pytest.raises(ValueError) as e:
        memops.set_backend("triton2")
    assert str(e.value) == UNKNOWN
    assert memops.get_backend() == "auto"
    with pytest.raises(ValueError) as e:
        with memops.backend("triton2"):
            pass
    assert str(e.value) == UNKNOWN
    assert memops.get_backend() == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cpp_on_cuda_without_cuda_kernels_says_why():
    if not EXTENSION_BUILT or memops.build_info()["with_cuda"]:
        pytest.skip("needs a CPU-only build of the extension")
    with pytest.raises(RuntimeError, match="no kernels for cuda tensors"):
        read_call(device="cuda", backend="cpp")()
    assert which(read_call(device="cuda")) == "reference"  # auto falls back


# ------------------------------------------------------------------------------------------------
# a fresh interpreter: no extension, MEMOPS_BACKEND, MEMOPS_DEBUG

WARNING = "memops: the compiled ops could not be loaded"


def run_python(snippet, block_extension=False, **env):
    code = textwrap.dedent(snippet)
    if block_extension:
        code = "import sys\nsys.modules['memops._C'] = None  # as if it were not built\n" + code
    full_env = dict(os.environ)
    for k in ("MEMOPS_BACKEND", "MEMOPS_DEBUG", "TRITON_INTERPRET"):
        full_env.pop(k, None)
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-W", "always", "-c", code], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


FALLBACK = """
    import json, warnings
    import torch
    import memops
    import memops  # a second import must not warn again
    from memops import _library
    m = torch.randn(2, 4, 3, dtype=torch.float64)
    w = torch.softmax(torch.randn(2, 2, 4, dtype=torch.float64), -1)
    out = memops.read(m, w)
    same = torch.equal(out, memops.reference.read(m, w))
    try:
        memops.read(m, w, backend="cpp")
        cpp_error = None
    except RuntimeError as e:
        cpp_error = str(e)
    print(json.dumps(dict(available=memops.available_backends(), built=memops.build_info()["built"],
                          same=same, cpp_error=cpp_error, get=memops.get_backend())))
"""


def test_missing_extension_warns_once_and_falls_back():
    proc = run_python(FALLBACK, block_extension=True)
    assert proc.stderr.count(WARNING) == 1, proc.stderr
    assert "RuntimeWarning" in proc.stderr
    assert "pip install --no-build-isolation -e ." in proc.stderr  # says how to fix it
    assert "MEMOPS_BACKEND=reference" in proc.stderr  # and how to silence it
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["available"] == ["reference"]
    assert result["built"] is False
    assert result["same"] is True
    assert result["get"] == "auto"
    assert "not built" in result["cpp_error"] and "pip install --no-build-isolation -e ." in result["cpp_error"]


def test_missing_extension_with_memops_backend_reference_is_silent():
    proc = run_python(FALLBACK, block_extension=True, MEMOPS_BACKEND="reference")
    assert WARNING not in proc.stderr, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["same"] is True and result["get"] == "reference"


def test_missing_extension_memops_backend_is_case_insensitive_for_the_warning_too():
    proc = run_python(FALLBACK, block_extension=True, MEMOPS_BACKEND="Reference")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["get"] == "reference"
    assert WARNING not in proc.stderr


def test_memops_backend_environment_variable(built):
    proc = run_python("""
        import torch, memops
        from torch.utils._python_dispatch import TorchDispatchMode
        seen = set()
        class R(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                seen.add(func.namespace)
                return func(*args, **(kwargs or {}))
        with R():
            memops.read(torch.randn(1, 3, 2), torch.rand(1, 1, 3))
        print(memops.get_backend(), "memops" in seen)
    """, MEMOPS_BACKEND="reference")
    assert proc.stdout.split() == ["reference", "False"]
    assert WARNING not in proc.stderr


def test_memops_backend_environment_variable_unknown_name_fails_at_import():
    code = "import memops"
    env = dict(os.environ, MEMOPS_BACKEND="fastest")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "ValueError: memops: unknown backend 'fastest'" in proc.stderr


TRITON_CALL = """
    import torch, memops
    m = torch.randn(2, 4, 3)
    w = torch.softmax(torch.randn(2, 2, 4), -1)
    print("auto", torch.equal(memops.read(m, w), memops.reference.read(m, w)) or "close")
    try:
        memops.read(m, w, backend="triton")
        print("triton ran")
    except RuntimeError as e:
        print("error", e)
"""


def test_memops_imports_without_triton_and_says_so_when_asked_for_it():
    proc = run_python("import sys\nsys.modules['triton'] = None  # as if not installed\n" + textwrap.dedent(TRITON_CALL),
                      TRITON_INTERPRET="1")
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("auto")
    assert lines[1].startswith("error memops: backend 'triton' cannot run this call: triton cannot be imported")
    assert "pip install triton" in lines[1]


def test_triton_on_cpu_without_the_interpreter_says_how():
    env = dict(TRITON_INTERPRET="0")
    proc = run_python(TRITON_CALL, **env)
    lines = proc.stdout.strip().splitlines()
    assert lines[1].startswith("error memops: backend 'triton' cannot run this call: they run on CPU tensors "
                               "only in Triton's interpreter (set TRITON_INTERPRET=1")


def test_memops_debug_environment_variable():
    proc = run_python("""
        import torch, memops
        w = torch.rand(1, 1, 4, dtype=torch.float64)
        try:
            memops.sharpen(w, torch.full((1, 1), 0.5, dtype=torch.float64), backend="reference")
            print("no error")
        except ValueError as e:
            print("error", e)
    """, MEMOPS_DEBUG="1")
    assert proc.stdout.startswith("error sharpen: gamma must be >= 1"), proc.stdout


def test_set_debug_flag_round_trip():
    from memops import ops
    assert ops._debug is False
    memops.set_debug(True)
    assert ops._debug is True
    memops.set_debug(False)
    assert ops._debug is False


def test_context_manager_is_per_thread(built):
    """Two threads interleaving `with memops.backend(...)` blocks each see their own choice and leave
    nothing behind (the blocks used to share one process-global setting)."""
    import threading

    barrier = threading.Barrier(2)
    seen = {}

    def worker(name):
        with memops.backend(name):
            barrier.wait()  # both threads are inside their blocks
            seen[name] = (memops.get_backend(), which(read_call()))
            barrier.wait()
        seen[name + " after"] = memops.get_backend()

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("reference", "cpp")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert seen["reference"] == ("reference", "reference") and seen["cpp"] == ("cpp", "cpp")
    assert seen["reference after"] == seen["cpp after"] == "auto"
    assert memops.get_backend() == "auto"


def test_set_backend_is_every_threads_default(built):
    import threading

    memops.set_backend("reference")
    try:
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("b", (memops.get_backend(), which(read_call()))))
        t.start()
        t.join(timeout=60)
        assert out["b"] == ("reference", "reference")
    finally:
        memops.set_backend(None)


def test_torch_func_takes_the_reference_under_auto(built):
    """torch.func cannot transform the compiled ops' C++ autograd: "auto" takes the reference there,
    and an explicit "cpp" says what to do instead."""
    tensors, _ = make_inputs("read", B=2, H=2, N=4, W=3)
    memory, weights = tensors.values()

    def loss(m):
        return memops.read(m, weights).sum()

    grad = torch.func.grad(loss)(memory)
    torch.testing.assert_close(grad, weights.sum(1)[:, :, None].expand_as(memory))
    batched = torch.func.vmap(lambda m, w: memops.read(m[None], w[None])[0])(memory, weights)
    torch.testing.assert_close(batched, weights @ memory)
    with pytest.raises(RuntimeError, match="use backend='reference'"):
        torch.func.grad(lambda m: memops.read(m, weights, backend="cpp").sum())(memory)
    # outside torch.func "auto" is the compiled op again
    assert which(lambda: memops.read(memory, weights)) == "cpp"
