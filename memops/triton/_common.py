"""What every memops Triton op file shares: interpreter detection, dtype checks, block sizes."""

import os

import torch
import triton
import triton.language as tl

# Triton reads TRITON_INTERPRET when a kernel is defined; memops' kernels are defined at import.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0").strip() not in ("", "0")

DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# Widest block of one dimension (elements). A row longer than this is processed in a loop of blocks.
MAX_BLOCK = 4096


def check_dtype(op, t):
    """The Triton kernels take float32, float64, float16 and bfloat16 (half types accumulate in float32)."""
    if t.dtype not in DTYPES:
        raise TypeError(f"{op}: the Triton kernels take float32, float64, float16 or bfloat16 tensors, got {t.dtype}")


def check_device(op, t):
    """CUDA tensors; CPU tensors only under the interpreter (TRITON_INTERPRET=1)."""
    if t.device.type == "cuda" or (t.device.type == "cpu" and INTERPRET) or t.device.type == "meta":
        return
    raise RuntimeError(
        f"{op}: the Triton kernels run on CUDA tensors (or on CPU tensors in Triton's interpreter, "
        f"TRITON_INTERPRET=1 set before triton is imported); got a {t.device.type} tensor"
    )


def block(n, cap=MAX_BLOCK):
    """A block size for a dimension of n: the next power of two, at least 16, at most cap."""
    return max(16, min(triton.next_power_of_2(max(int(n), 1)), cap))


def acc_dtype(t):
    """The accumulation dtype for storage dtype t, as a tl dtype (a constexpr kernel argument)."""
    return tl.float64 if t.dtype == torch.float64 else tl.float32


def acc_torch_dtype(t):
    """The same, as a torch dtype (for float workspaces allocated on the host)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def can_launch(t):
    """Whether a kernel may be launched on tensor t. Not on meta tensors, and, under the interpreter, not
    on fake ones (opcheck's fake-tensor test, tracing): there torch.library.wrap_triton hands back the
    interpreted kernel itself, which would run on them. Outside the interpreter wrap_triton captures the
    launch on fake tensors (torch.compile needs it), so it must go ahead."""
    if t.device.type == "meta":
        return False
    if INTERPRET:
        from torch._subclasses.fake_tensor import is_fake

        return not is_fake(t)
    return True


def triton_op(name, *, mutates_args=()):
    """torch.library.triton_op, except under the interpreter: there a plain torch.library.custom_op,
    with the function itself as the fake kernel (its launches skipped on fake tensors, see can_launch).
    triton_op decomposes the op into its kernel launches when torch.compile / AOTDispatcher traces it,
    which only works with real (compiled) Triton kernels; the interpreted ones would be skipped there
    and the traced graph would compute nothing. As a custom_op the op stays opaque in the graph and
    runs eagerly (opcheck's aot_dispatch tests pass)."""
    if not INTERPRET:
        return torch.library.triton_op(name, mutates_args=mutates_args)

    def decorate(fn):
        op = torch.library.custom_op(name, fn, mutates_args=mutates_args)
        op.register_fake(fn)
        return op

    return decorate


# ---------------------------------------------------------------------------------------------------
# Device helpers shared by the op files (the math of csrc/math/common.h and addressing.h).


@triton.jit
def shift_offset(j, S, N):
    """d_j = (j - S // 2) mod N in [0, N), tap j's offset (math::shift_offset; Triton's % truncates
    like C, so negative remainders are wrapped)."""
    d = (j - S // 2) % N
    return tl.where(d < 0, d + N, d)


@triton.jit
def shift_taps(src_row, k_row, i, live, N, S, SIGN: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """sum_j k_row[j] src_row[(i - SIGN d_j) mod N] for the BLOCK slots i of one row (live: i < N):
    SIGN = 1 is the shift, SIGN = -1 its backward to the weights. Taps in order j = 0 .. S - 1, as
    math::shift_row."""
    acc = tl.zeros([BLOCK], dtype=ACC)
    for j in range(S):
        d = shift_offset(j, S, N)
        if SIGN > 0:
            src = i - d
            src = tl.where(src < 0, src + N, src)
        else:
            src = i + d
            src = tl.where(src >= N, src - N, src)
        k = tl.load(k_row + j).to(ACC)
        acc += k * tl.load(src_row + src, mask=live, other=0.0).to(ACC)
    return acc


@triton.jit
def pow_nonneg(x, e):
    """x^e for x >= 0 (sharpen's ratios to the row max), as exp(e log x), with pow's special cases:
    1 at x = 1 for any e (inf and NaN too); at x = 0: 0 for e > 0, 1 for e = 0, inf for e < 0, NaN for a
    NaN e. A NaN x gives NaN."""
    zero = x == 0
    xp = tl.exp(e * tl.log(tl.where(zero, 1.0, x)))
    xp = tl.where(x == 1, 1.0, xp)
    at_zero = tl.where(e > 0, 0.0, tl.where(e == 0, 1.0, tl.where(e < 0, float("inf"), e)))
    return tl.where(zero, at_zero, xp)
