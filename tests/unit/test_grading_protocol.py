"""The wire format between grader and sandbox (issue 14): data only, never a pickle back."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch

from initlab.grading import _protocol as P


def _round_trip(value, leaves=()):
    blobs: list[bytes] = []
    tree = P.encode(value, blobs, list(leaves))
    header, blobs2 = P.unpack_message(P.pack_message({"v": tree}, blobs))
    return P.decode(header["v"], blobs2, list(leaves))


def test_plain_values_round_trip_exactly() -> None:
    value = (None, True, 3, 2.5, float("inf"), "é", 1 - 2j, [1, (2, 3)], {"a": 1, 2: "b"}, ...)
    assert _round_trip(value) == value
    nan = _round_trip(float("nan"))
    assert isinstance(nan, float) and nan != nan


def test_numpy_and_torch_keep_dtype_shape_and_flags() -> None:
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    b = _round_trip(a)
    assert b.dtype == np.int16 and (b == a).all()
    s = _round_trip(np.float32(1.5))
    assert type(s) is np.float32 and s == 1.5
    p = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    q = _round_trip(p)
    assert isinstance(q, torch.nn.Parameter) and q.requires_grad and q.dtype == torch.float64
    assert torch.equal(q.detach(), p.detach()) and q is not p
    h = _round_trip(torch.ones(2, dtype=torch.bfloat16))
    assert h.dtype == torch.bfloat16


def test_an_argument_comes_back_as_the_graders_own_object() -> None:
    t = torch.zeros(4)
    out = _round_trip([t, 1], leaves=[t])
    assert out[0] is t


def test_unsupported_values_are_opaque_and_say_their_type() -> None:
    class Model:
        pass

    for value in (Model(), np.array([object()]), torch.nn.Linear(2, 2)):
        got = _round_trip(value)
        assert isinstance(got, P.Opaque)
        with pytest.raises(TypeError, match="cannot use as data"):
            float(got)
    assert "Model" in repr(_round_trip(Model()))


def test_decode_never_unpickles() -> None:
    """An object array (which only a pickle can carry) and unknown tags are refused."""
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(P.ProtocolError):
        P.decode({"t": "ndarray", "b": 0}, [buf.getvalue()], [])
    with pytest.raises(P.ProtocolError):
        P.decode({"t": "pickle", "v": pickle.dumps(1).hex()}, [], [])
    with pytest.raises(P.ProtocolError):
        P.unpack_message(b"\x00\x00\x00\x05\x00\x00\x00\x00{oops")


def test_argument_state_is_copied_back_in_place() -> None:
    mine = torch.nn.Linear(3, 2)
    theirs = torch.nn.Linear(3, 2)
    weight, ptr = mine.weight, mine.weight.data_ptr()
    blobs: list[bytes] = []
    P.copy_back(mine, P.leaf_state(theirs, blobs), blobs)
    assert mine.weight is weight and mine.weight.data_ptr() == ptr
    assert torch.equal(mine.weight.detach(), theirs.weight.detach()) and mine.weight.requires_grad
    g, h = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    blobs = []
    P.copy_back(g, P.leaf_state(h, blobs), blobs)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=h))


def test_callables_become_handles_and_generators_travel_as_state() -> None:
    calls: list = []
    g = torch.Generator().manual_seed(5)
    args = pickle.loads(P.dumps_call(("call", "f", (torch.relu, [lambda z: z], g)), calls))
    relu, (fn,), g2 = args[2]
    assert isinstance(relu, P.Handle) and isinstance(fn, P.Handle) and calls[0] is torch.relu
    assert g2 is not g and torch.equal(g2.get_state(), g.get_state())


def test_text_from_a_submission_is_cut() -> None:
    assert len(P.short("x" * 10_000)) == P.MAX_TEXT
    assert P.short("a\nb\tc") == "a b c"
