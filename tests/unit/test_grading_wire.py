"""The wire between grader and sandbox (issue 24): declared shapes, data only, bounded.

Property: whatever bytes the sandbox sends, :func:`_wire.receive` and :func:`_wire.decode`
give back a plain value or raise :class:`_wire.ProtocolError`, within the wire's limits.
"""

from __future__ import annotations

import threading
from multiprocessing import Pipe

import msgspec
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from initlab.grading import _wire as W


def _round_trip(value, leaves=()):
    rx, tx = Pipe(duplex=False)
    blobs: list[bytes] = []
    node = W.encode(value, blobs, list(leaves))
    W.send(tx, W.Value(1, node, [], len(blobs)), blobs)
    msg, got = W.receive(rx)
    return W.decode(msg.value, got, list(leaves))


def test_plain_values_round_trip_exactly() -> None:
    value = (None, True, 3, 2.5, float("inf"), "é", [1, (2, 3)], {"a": 1, 2: "b"}, ..., 2**63)
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


@pytest.mark.parametrize(
    "value",
    [
        object(),
        np.array([object()]),
        torch.nn.Linear(2, 2),
        1 + 2j,
        np.complex128(1),
        torch.zeros(2, dtype=torch.complex64),
        torch.zeros(2).to(torch.float8_e4m3fn),
        2**70,
        "x" * (W.MAX_STR + 1),
    ],
)
def test_values_outside_the_declared_kinds_are_opaque_and_say_their_type(value) -> None:
    got = _round_trip(value)
    assert isinstance(got, W.Opaque)
    with pytest.raises(TypeError, match="cannot use as data"):
        float(got)


def _refused(send, match: str) -> None:
    """``send(tx)`` in a thread; ``receive`` must refuse what it sends with ``match``."""
    rx, tx = Pipe(duplex=False)

    def quietly() -> None:
        try:
            send(tx)
        except OSError:  # the receiver stopped reading: what it should do
            pass

    sender = threading.Thread(target=quietly, daemon=True)
    sender.start()
    with pytest.raises(W.ProtocolError, match=match):
        W.receive(rx)
    rx.close()
    sender.join()


def test_a_header_over_its_limit_is_refused_before_it_is_decoded() -> None:
    _refused(lambda tx: tx.send_bytes(b"\x90" * (W.HEADER_BYTES + 1)), "over")


def test_array_data_is_bounded_per_message() -> None:
    big = b"\0" * (W.BLOB_BYTES // 2 + 8)
    _refused(lambda tx: W.send(tx, W.Value(1, None, [], 3), [big, big, big]), "array data over")


def test_one_blob_referenced_many_times_is_refused() -> None:
    """The red team's 600 000 references to one array (106 s of decoding) cost one node."""
    blobs = [np.zeros(1000).tobytes()]
    node = W.Seq([W.Arr("ndarray", "float64", [1000], 0)] * 3)
    with pytest.raises(W.ProtocolError, match="already used"):
        W.decode(node, blobs, [])


def test_the_number_of_values_is_bounded() -> None:
    node = W.Seq([1] * (W.MAX_NODES + 1))
    with pytest.raises(W.ProtocolError, match="parts"):
        W.decode(node, [], [])


@pytest.mark.parametrize(
    "arr",
    [
        W.Arr("ndarray", "float8_e4m3fn", [1], 0),
        W.Arr("ndarray", "complex128", [1], 0),
        W.Arr("ndarray", "float64", [2], 0),  # 8 bytes of data for 2 elements
        W.Arr("ndarray", "float64", [-1], 0),
        W.Arr("ndarray", "float64", [1], 5),
        W.Arr("scalar", "bfloat16", [], 0),
        W.Arr("weird", "float64", [1], 0),
    ],
)
def test_malformed_arrays_are_protocol_errors(arr) -> None:
    with pytest.raises(W.ProtocolError):
        W.decode(arr, [np.zeros(1).tobytes()], [])


def test_undeclared_messages_are_protocol_errors() -> None:
    rx, tx = Pipe(duplex=False)
    for payload in (
        msgspec.msgpack.encode({"type": "launch_missiles"}),
        msgspec.msgpack.encode({"type": "value", "id": "1", "value": None}),
        msgspec.msgpack.encode([1, 2, 3]),
        b"\xc1",
    ):
        tx.send_bytes(payload)
        with pytest.raises(W.ProtocolError):
            W.receive(rx)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000), st.lists(st.binary(max_size=64), max_size=4))
def test_any_bytes_give_a_value_or_a_protocol_error(header: bytes, blobs: list[bytes]) -> None:
    """Fuzz: arbitrary header bytes and blobs through receive and decode."""
    rx, tx = Pipe(duplex=False)
    tx.send_bytes(header)
    for b in blobs:
        tx.send_bytes(b)
    tx.close()
    try:
        msg, got = W.receive(rx)
        if isinstance(msg, W.Value):
            W.decode(msg.value, got, [])
    except (W.ProtocolError, EOFError):
        pass


_node = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(),
    lambda inner: st.builds(W.Seq, st.lists(inner, max_size=5), st.booleans())
    | st.builds(W.Map, st.lists(st.tuples(inner, inner), max_size=3))
    | st.builds(W.Leaf, st.integers(-2, 3))
    | st.builds(
        W.Arr,
        st.sampled_from(["ndarray", "scalar", "tensor", "x"]),
        st.sampled_from(sorted(W.DTYPES) + ["complex64", "object", "V8"]),
        st.lists(st.integers(-1, 3), max_size=3),
        st.integers(-1, 3),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_node, st.lists(st.binary(max_size=48), max_size=4))
def test_any_declared_tree_decodes_or_is_a_protocol_error(node, blobs) -> None:
    """Fuzz: every well-typed but hostile tree (bad indices, shapes, dtypes, keys)."""
    try:
        W.decode(node, blobs, [torch.zeros(1)])
    except W.ProtocolError:
        pass


def test_seeds_are_stable_and_distinct() -> None:
    assert W.seed_of("test_q1", 1) == W.seed_of("test_q1", 1) != W.seed_of("test_q1", 2)
    assert 0 <= W.seed_of("x") < 2**32
    assert W.seed_of("test_q6_coordinate_check", 1) == 2137925585  # not Python's salted hash
