"""The one wire between the grader and the sandbox that runs a submission.

Every message is declared here, once, as a ``msgspec`` Struct, and framed by
:class:`multiprocessing.connection.Connection` (a 4-byte length, then the bytes). Two
directions, two trust levels:

* grader -> sandbox (trusted, chosen by the tests): :class:`Setup`, :class:`Get`,
  :class:`Call`, :class:`Reply`. A call's arguments travel as a pickle inside :class:`Call`
  (modules, generators; callables become :class:`Handle`, called back in the grader).
* sandbox -> grader (untrusted): :data:`FromSandbox`, never a pickle. A message is one
  MessagePack *header* frame of at most :data:`HEADER_BYTES`, decoded against the declared
  union (a wrong shape is a :class:`ProtocolError`), followed by ``nblobs`` raw frames that
  hold array data, :data:`BLOB_BYTES` in all. Values are trees of :data:`Node`;
  :func:`decode` rebuilds plain Python, NumPy and torch objects with a :class:`Budget`:
  at most :data:`MAX_NODES` nodes, each blob used at most once, only the dtypes in
  :data:`DTYPES`. So what the grader holds in memory for one message is bounded by
  those limits, whatever the sandbox sends; anything else is :class:`Opaque`, whose every
  use fails with a message naming the type the learner returned.

Example:
    >>> blobs: list[bytes] = []
    >>> node = encode((1, [2.5, "a"]), blobs, leaves=[])
    >>> decode(node, blobs, leaves=[])
    (1, [2.5, 'a'])
"""

from __future__ import annotations

import math
import pickle
from multiprocessing.connection import Connection
from typing import Any

import msgspec
import numpy as np

HEADER_BYTES = 1 << 20  # one header frame from the sandbox
BLOB_BYTES = 64 << 20  # array data of one message from the sandbox, all blobs together
MAX_BLOBS = 4096
MAX_NODES = 100_000  # values (numbers, strings, arrays, containers) in one message
MAX_DEPTH = 32
MAX_TEXT = 150  # characters kept of any text that comes from the submission
MAX_STR = 10_000  # characters of one string value from the sandbox
#: The array dtypes that cross the wire (bfloat16 travels as float32 data). A question asks
#: for numbers, booleans or tensors of these; float8, complex and the rest are opaque.
DTYPES = frozenset("bool uint8 int8 int16 int32 int64 float16 float32 float64 bfloat16".split())


class ProtocolError(RuntimeError):
    """The sandbox sent something that is not a declared, well-formed message."""


def short(text: Any, limit: int = MAX_TEXT) -> str:
    """``str(text)`` on one line, cut to ``limit`` characters (text from a submission)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# --- values ---------------------------------------------------------------------------------


class Seq(msgspec.Struct, tag="seq", array_like=True):
    items: list[Node]
    tuple: bool = False


class Map(msgspec.Struct, tag="map", array_like=True):
    items: list[tuple[Node, Node]]


class Arr(msgspec.Struct, tag="arr", array_like=True):
    """An ndarray, a NumPy scalar (``kind="scalar"``) or a tensor; data in blob ``blob``."""

    kind: str
    dtype: str
    shape: list[int]
    blob: int
    requires_grad: bool = False
    param: bool = False
    grad: Arr | None = None


class Leaf(msgspec.Struct, tag="leaf", array_like=True):
    """The call's argument number ``i``: the grader hands back its own object."""

    i: int


class Ellipsis_(msgspec.Struct, tag="ellipsis", array_like=True):
    pass


class OpaqueNode(msgspec.Struct, tag="opaque", array_like=True):
    what: str


class ModuleState(msgspec.Struct, tag="module", array_like=True):
    tensors: list[tuple[str, Arr]]


class GeneratorState(msgspec.Struct, tag="generator", array_like=True):
    state: Arr


Node = None | bool | int | float | str | Seq | Map | Arr | Leaf | Ellipsis_ | OpaqueNode
State = None | Arr | ModuleState | GeneratorState


# --- messages -------------------------------------------------------------------------------


class Cell(msgspec.Struct, tag="cell"):
    i: int


class Done(msgspec.Struct, tag="done"):
    i: int
    error: str | None = None


class Ready(msgspec.Struct, tag="ready"):
    pass


class Value(msgspec.Struct, tag="value"):
    id: int
    value: Node
    leaves: list[State] = []
    nblobs: int = 0


class Missing(msgspec.Struct, tag="missing"):
    id: int


class IsCallable(msgspec.Struct, tag="callable"):
    id: int


class Raised(msgspec.Struct, tag="raised"):
    id: int
    error: str
    exc_type: str | None = None


class Callback(msgspec.Struct, tag="callback"):
    id: int
    handle: int
    args: Node
    nblobs: int = 0


FromSandbox = Cell | Done | Ready | Value | Missing | IsCallable | Raised | Callback


class Setup(msgspec.Struct, tag="setup"):
    cells: list[str]
    skip: list[int]
    cell_timeout: int


class Get(msgspec.Struct, tag="get"):
    id: int
    name: str


class Call(msgspec.Struct, tag="call"):
    id: int
    name: str
    args: bytes  # pickle of (args, kwargs), made by the grader
    seed: int = 0  # the random generators' seed for this call (grading is deterministic)


class Reply(msgspec.Struct, tag="reply"):
    id: int
    ok: bool
    result: bytes  # pickle of the grader's callable's result, or of its error text


ToSandbox = Setup | Get | Call | Reply

_encoder = msgspec.msgpack.Encoder()
_from_sandbox = msgspec.msgpack.Decoder(FromSandbox)
_to_sandbox = msgspec.msgpack.Decoder(ToSandbox)


def send(conn: Connection, msg: Any, blobs: list[bytes] = ()) -> None:  # type: ignore[assignment]
    """Send a message and its blobs (``msg.nblobs`` must be ``len(blobs)``)."""
    conn.send_bytes(_encoder.encode(msg))
    for b in blobs:
        conn.send_bytes(b)


def receive_request(conn: Connection) -> Any:
    """A message from the grader (in the sandbox; trusted). Raises EOFError at the end."""
    return _to_sandbox.decode(conn.recv_bytes())


def receive(conn: Connection) -> tuple[Any, list[bytes]]:
    """One message from the sandbox and its blobs, within the limits; a header or a blob
    over its limit, a shape not declared in :data:`FromSandbox` or a broken frame is a
    :class:`ProtocolError`. The caller bounds the wait (the sandbox is killed at its deadline,
    which ends a blocked read with EOFError)."""
    try:
        msg = _from_sandbox.decode(conn.recv_bytes(HEADER_BYTES))
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise ProtocolError(f"malformed message from the sandbox: {short(exc)}") from None
    except OSError as exc:  # "bad message length": over the header limit
        raise ProtocolError(f"a message over {HEADER_BYTES} bytes: {short(exc)}") from None
    n = getattr(msg, "nblobs", 0)
    if not 0 <= n <= MAX_BLOBS:
        raise ProtocolError(f"{n} arrays in one message (at most {MAX_BLOBS})")
    blobs, left = [], BLOB_BYTES
    for _ in range(n):
        try:
            b = conn.recv_bytes(max(left, 1))
        except OSError:
            raise ProtocolError(f"array data over {BLOB_BYTES} bytes in one message") from None
        left -= len(b)
        blobs.append(b)
    return msg, blobs


def seed_of(*parts: Any) -> int:
    """A seed in [0, 2**32) from ``parts``, the same in every process and run."""
    import hashlib

    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "big")


def decode_request_payload(data: bytes) -> Any:
    return pickle.loads(data)  # from the grader: trusted


# --- sandbox side: values -> nodes ----------------------------------------------------------


def _blob(arr: np.ndarray, blobs: list[bytes]) -> int:
    blobs.append(np.ascontiguousarray(arr).tobytes())
    return len(blobs) - 1


def _tensor(t: Any, blobs: list[bytes]) -> Arr | OpaqueNode:
    import torch

    data = t.detach().cpu().resolve_conj().resolve_neg()
    dtype = str(data.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        return OpaqueNode(f"a tensor of dtype {dtype}")
    if data.dtype == torch.bfloat16:
        data = data.float()
    grad = None
    if t.is_leaf and t.grad is not None:
        g = _tensor(t.grad, blobs)
        grad = g if isinstance(g, Arr) else None
    return Arr(
        "tensor",
        dtype,
        list(data.shape),
        _blob(data.numpy(), blobs),
        bool(t.requires_grad),
        isinstance(t, torch.nn.Parameter),
        grad,
    )


def encode(obj: Any, blobs: list[bytes], leaves: list[Any], depth: int = 0) -> Any:
    """A :data:`Node` for ``obj`` (runs in the sandbox); array data goes to ``blobs``.

    An object that is one of ``leaves`` (the call's arguments) is sent as its index, so the
    grader can hand back its own object.
    """
    import torch

    for i, leaf in enumerate(leaves):
        if obj is leaf:
            return Leaf(i)
    if depth > MAX_DEPTH:
        return OpaqueNode("a too deeply nested value")
    if obj is None or type(obj) in (bool, float):
        return obj
    if type(obj) is int:
        return obj if -(2**63) <= obj < 2**64 else OpaqueNode("an integer over 64 bits")
    if type(obj) is str:
        return obj if len(obj) <= MAX_STR else OpaqueNode(f"a string of {len(obj)} characters")
    if obj is Ellipsis:
        return Ellipsis_()
    if isinstance(obj, np.generic | np.ndarray) and not isinstance(obj, np.object_):
        dtype = str(obj.dtype)
        if dtype not in DTYPES or dtype == "bfloat16":
            return OpaqueNode(f"a NumPy value of dtype {dtype}")
        kind = "scalar" if isinstance(obj, np.generic) else "ndarray"
        return Arr(kind, dtype, list(np.shape(obj)), _blob(np.asarray(obj), blobs))
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:
            return OpaqueNode("a sparse tensor")
        return _tensor(obj, blobs)
    if type(obj) in (list, tuple):
        if len(obj) > MAX_NODES:
            return OpaqueNode(f"a {type(obj).__name__} of {len(obj)} items")
        items = [encode(x, blobs, leaves, depth + 1) for x in obj]
        return Seq(items, type(obj) is tuple)
    if type(obj) is dict:
        if len(obj) > MAX_NODES:
            return OpaqueNode(f"a dict of {len(obj)} items")
        return Map([(encode(k, blobs, leaves, depth + 1), encode(v, blobs, leaves, depth + 1))
                    for k, v in obj.items()])  # fmt: skip
    for kind in (bool, int, float, str, list, tuple, dict):  # subclasses: as the plain value
        if isinstance(obj, kind):
            return encode(kind(obj), blobs, leaves, depth)
    t = type(obj)
    name = f"{t.__module__}.{t.__qualname__}"
    return OpaqueNode(f"a {short(name if len(name) <= 80 else t.__name__, 80)} object")


def leaf_state(obj: Any, blobs: list[bytes]) -> Any:
    """The state of a call argument after the call (a tensor, a module, a generator)."""
    import torch

    if isinstance(obj, torch.Tensor):
        out = _tensor(obj, blobs)
        return out if isinstance(out, Arr) else None
    if isinstance(obj, torch.nn.Module):
        pairs = [(k, _tensor(v, blobs)) for k, v in obj.state_dict(keep_vars=True).items()]
        return ModuleState([(k, v) for k, v in pairs if isinstance(v, Arr)])
    if isinstance(obj, torch.Generator):
        state = obj.get_state().numpy()
        return GeneratorState(Arr("ndarray", "uint8", [state.size], _blob(state, blobs)))
    return None


# --- grader side: nodes -> values -----------------------------------------------------------


class Opaque:
    """A value the learner returned that cannot cross the sandbox boundary as data."""

    def __init__(self, type_name: str) -> None:
        object.__setattr__(self, "_type", short(type_name, 100))

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"the answer is {self._type}, which the grader cannot use as data")

    def __repr__(self) -> str:
        return f"<{self._type}>"

    __str__ = __repr__
    __call__ = __float__ = __int__ = __index__ = __bool__ = __len__ = __iter__ = _fail
    __getitem__ = __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _fail
    __truediv__ = __rtruediv__ = __pow__ = __lt__ = __le__ = __gt__ = __ge__ = _fail
    __neg__ = __abs__ = __complex__ = __matmul__ = __rmatmul__ = _fail

    def __eq__(self, other: object) -> bool:
        self._fail()
        return False

    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        self._fail()


class Budget:
    """What one decoded message may cost: nodes, and each blob at most once."""

    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs, self.used, self.nodes = blobs, set(), 0

    def node(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ProtocolError(f"a value of more than {MAX_NODES} parts")

    def array(self, a: Arr) -> np.ndarray:
        if a.dtype not in DTYPES:
            raise ProtocolError(f"an array of dtype {short(a.dtype, 20)!r}")
        if type(a.blob) is not int or not 0 <= a.blob < len(self.blobs) or a.blob in self.used:
            raise ProtocolError("an array that refers to a missing or already used blob")
        self.used.add(a.blob)
        if len(a.shape) > MAX_DEPTH or any(d < 0 for d in a.shape):
            raise ProtocolError("an array of a malformed shape")
        dt = np.dtype("float32" if a.dtype == "bfloat16" else a.dtype)
        data = self.blobs[a.blob]
        if math.prod(a.shape) * dt.itemsize != len(data):
            raise ProtocolError("an array whose data does not match its shape")
        return np.frombuffer(data, dtype=dt).reshape(a.shape).copy()


def _to_tensor(a: Arr, budget: Budget) -> Any:
    import torch

    t = torch.from_numpy(budget.array(a))
    if a.dtype == "bfloat16":
        t = t.to(torch.bfloat16)
    if a.param:
        t = torch.nn.Parameter(t, requires_grad=a.requires_grad and t.is_floating_point())
    elif a.requires_grad and t.is_floating_point():
        t.requires_grad_(True)
    if a.grad is not None:
        t.grad = _to_tensor(a.grad, budget)
    return t


def decode(node: Any, blobs: list[bytes], leaves: list[Any], budget: Budget | None = None,
           depth: int = 0) -> Any:  # fmt: skip
    """Rebuild a value from :func:`encode`'s node (runs in the grader; never unpickles)."""
    budget = Budget(blobs) if budget is None else budget
    budget.node()
    if depth > MAX_DEPTH + 2:
        raise ProtocolError("a too deeply nested value")
    if node is None or type(node) in (bool, int, float):
        return node
    if type(node) is str:
        return node if len(node) <= MAX_STR else Opaque("a too long string")
    if isinstance(node, Leaf):
        if not 0 <= node.i < len(leaves):
            raise ProtocolError("an argument index out of range")
        return leaves[node.i]
    if isinstance(node, Ellipsis_):
        return ...
    if isinstance(node, OpaqueNode):
        return Opaque(node.what)
    if isinstance(node, Arr):
        if node.kind == "tensor":
            return _to_tensor(node, budget)
        if node.dtype == "bfloat16" or node.kind not in ("ndarray", "scalar"):
            raise ProtocolError("a NumPy value of an unknown kind")
        arr = budget.array(node)
        return arr[()] if node.kind == "scalar" else arr
    if isinstance(node, Seq):
        items = [decode(x, blobs, leaves, budget, depth + 1) for x in node.items]
        return tuple(items) if node.tuple else items
    if isinstance(node, Map):
        out = {}
        for k, v in node.items:
            key = decode(k, blobs, leaves, budget, depth + 1)
            if isinstance(key, list | dict | Opaque | np.ndarray):
                raise ProtocolError("an unhashable dict key")
            try:
                out[key] = decode(v, blobs, leaves, budget, depth + 1)
            except TypeError:  # e.g. a tensor key
                raise ProtocolError("an unhashable dict key") from None
        return out
    raise ProtocolError("a value of an undeclared kind")


def copy_back(leaf: Any, state: Any, budget: Budget) -> None:
    """Copy an argument's new state (from :func:`leaf_state`) into the grader's own object."""
    import torch

    with torch.no_grad():
        if isinstance(leaf, torch.Tensor) and isinstance(state, Arr):
            _copy_tensor(leaf, _to_tensor(state, budget))
        elif isinstance(leaf, torch.nn.Module) and isinstance(state, ModuleState):
            mine = leaf.state_dict(keep_vars=True)
            for name, sub in state.tensors:
                if name in mine:
                    _copy_tensor(mine[name], _to_tensor(sub, budget))
        elif isinstance(leaf, torch.Generator) and isinstance(state, GeneratorState):
            new = torch.from_numpy(budget.array(state.state))
            try:
                leaf.set_state(new)
            except (RuntimeError, TypeError) as exc:
                raise ProtocolError(f"a bad generator state: {short(exc)}") from None
        elif state is not None:
            raise ProtocolError("an argument state of the wrong kind")


def _copy_tensor(dst: Any, src: Any) -> None:
    if dst.shape != src.shape:
        raise ProtocolError(f"an argument came back with shape {tuple(src.shape)}")
    dst.copy_(src.to(dst.dtype))


# --- grader -> sandbox: pickles with handles ------------------------------------------------


class Handle:
    """Stands for a callable of the grader's; calling it inside the sandbox calls back."""

    caller: Any = None  # set by the sandbox driver: caller(handle_id, args, kwargs)

    def __init__(self, ident: int) -> None:
        self.ident = ident

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return Handle.caller(self.ident, args, kwargs)

    def __repr__(self) -> str:
        return f"<grader's function #{self.ident}>"


def _make_generator(state: Any, device: str) -> Any:
    import torch

    g = torch.Generator(device=device)
    g.set_state(state)
    return g


class _GeneratorPickle:
    def __init__(self, state: Any, device: str) -> None:
        self.state, self.device = state, device

    def __reduce__(self) -> tuple[Any, ...]:
        return _make_generator, (self.state, self.device)


def _swap(obj: Any, callables: list[Any], depth: int = 0) -> Any:
    """``obj`` with callables (at any depth of lists/tuples/dicts) replaced by handles."""
    import torch

    if isinstance(obj, torch.Generator):
        return _GeneratorPickle(obj.get_state(), str(obj.device))
    if isinstance(obj, torch.Tensor | torch.nn.Module | np.ndarray | np.generic | type):
        return obj
    if depth < MAX_DEPTH and type(obj) in (list, tuple):
        return type(obj)(_swap(x, callables, depth + 1) for x in obj)
    if depth < MAX_DEPTH and type(obj) is dict:
        return {k: _swap(v, callables, depth + 1) for k, v in obj.items()}
    if callable(obj):
        callables.append(obj)
        return Handle(len(callables) - 1)
    return obj


def dumps_call(obj: Any, callables: list[Any]) -> bytes:
    """Pickle ``obj`` for the sandbox; append each callable found in it to ``callables``."""
    return pickle.dumps(_swap(obj, callables), protocol=pickle.HIGHEST_PROTOCOL)


def leaves_of(obj: Any, out: list[Any] | None = None, depth: int = 0) -> list[Any]:
    """Tensors, modules and generators in ``obj`` (nested in lists/tuples/dicts), in order."""
    import torch

    out = [] if out is None else out
    if depth > MAX_DEPTH:
        return out
    if isinstance(obj, torch.Tensor | torch.nn.Module | torch.Generator):
        out.append(obj)
    elif isinstance(obj, list | tuple):
        for x in obj:
            leaves_of(x, out, depth + 1)
    elif isinstance(obj, dict):
        for x in obj.values():
            leaves_of(x, out, depth + 1)
    return out
