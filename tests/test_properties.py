"""Property tests (hypothesis): random small shapes and values, every op, cpp vs the reference,
forward and every gradient.

Hypothesis draws the shapes, the dtype, the variant (mask, similarity, erase) and how the values are
spread (sharp or flat weightings, memory scale, beta and gamma ranges, exact zeros); torch draws the
values from a seed hypothesis picks. The default profile is derandomized (the same examples on every
run, so CI cannot flake); HYPOTHESIS_PROFILE=explore draws new ones each run.
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import DTYPES, check_against_reference, make_inputs, require_backend

settings.register_profile("memops", max_examples=40, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=300, deadline=None, print_blob=True)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "memops")


@st.composite
def cases(draw, op):
    sizes = dict(B=draw(st.integers(0, 3)), H=draw(st.integers(1, 4)), N=draw(st.integers(1, 12)),
                 W=draw(st.integers(1, 9)), S=2 * draw(st.integers(0, 8)) + 1)
    variant = {}
    if op == "content_address":
        variant = dict(mask=draw(st.sampled_from(["none", "random", "empty_row"])),
                       similarity=draw(st.sampled_from(["cosine", "dot"])))
    if op == "write":
        variant = dict(erase=draw(st.booleans()))
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


def build(op, sizes, variant, values):
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


def check(op, case):
    sizes, variant, values, dtype = case
    tensors, kwargs = build(op, sizes, variant, values)
    check_against_reference(op, tensors, kwargs, dtype, "cpu", "cpp", seed=values["seed"])


@pytest.fixture(autouse=True)
def _needs_extension():
    require_backend("cpp")


@settings(settings.get_profile(PROFILE))
@given(cases("content_address"))
def test_content_address(case):
    check("content_address", case)


@settings(settings.get_profile(PROFILE))
@given(cases("shift"))
def test_shift(case):
    check("shift", case)


@settings(settings.get_profile(PROFILE))
@given(cases("sharpen"))
def test_sharpen(case):
    check("sharpen", case)


@settings(settings.get_profile(PROFILE))
@given(cases("ntm_address"))
def test_ntm_address(case):
    check("ntm_address", case)


@settings(settings.get_profile(PROFILE))
@given(cases("read"))
def test_read(case):
    check("read", case)


@settings(settings.get_profile(PROFILE))
@given(cases("write"))
def test_write(case):
    check("write", case)
