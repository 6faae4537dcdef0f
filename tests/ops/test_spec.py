"""memops.spec is the one table of each op's arguments in Python; csrc/ops.cpp declares the same
schemas to the dispatcher. They must agree, name for name, for the C++ ops and the Triton twins."""

import pytest
import torch

from helpers import require_backend
from memops.spec import SPECS


def schema_names(op):
    return [a.name for a in op.default._schema.arguments]


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_registered_schemas_match_the_spec(backend, name):
    require_backend(backend)
    lib = torch.ops.memops if backend == "cpp" else torch.ops.memops_triton
    spec = SPECS[name]
    assert schema_names(getattr(lib, name)) == list(spec.inputs + spec.options)
    assert schema_names(getattr(lib, f"_{name}_backward")) == list(spec.backward)
    returns = getattr(lib, f"_{name}_backward").default._schema.returns
    assert len(returns) == len(spec.inputs)  # one gradient per floating input


def test_dims_name_every_letter_of_the_output():
    for spec in SPECS.values():
        letters = set("".join(dims for _, dims in spec.tensors))
        assert set(spec.out) <= letters, spec.name
        assert spec.saved_output in (None, "out", "weights"), spec.name
