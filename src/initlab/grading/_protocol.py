"""The wire format between the grader and the sandbox that runs a submission.

A frame is a 4-byte big-endian length and a payload. Two directions, two formats:

* grader -> sandbox (trusted data, chosen by the tests): a pickle. Callables in the arguments
  (``torch.relu``, a test's lambda) are replaced by :class:`Handle` and called back in the grader;
  a ``torch.Generator`` travels as its state.
* sandbox -> grader (untrusted): never a pickle. A JSON header plus binary blobs, each an
  ``.npy`` file written and read with ``allow_pickle=False``. :func:`encode` turns a value into
  a small tagged tree (``{"t": "tensor", ...}``); :func:`decode` rebuilds plain Python, NumPy
  and torch objects from it. Anything else comes back as :class:`Opaque`, whose every use fails
  with a message naming the type the learner returned.

Example:
    >>> blobs = []
    >>> tree = encode((1, [2.5, "a"]), blobs, leaves=[])
    >>> decode(tree, blobs, leaves=[])
    (1, [2.5, 'a'])
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from typing import Any

import numpy as np

MAX_FRAME = 64 << 20  # bytes; a bigger frame from the sandbox is a protocol error
MAX_TEXT = 150  # characters kept of any text that comes from the submission
_MAX_DEPTH = 32
_MAX_ITEMS = 100_000


class ProtocolError(RuntimeError):
    """The sandbox sent something that is not a well-formed frame."""


def short(text: Any, limit: int = MAX_TEXT) -> str:
    """``str(text)`` on one line, cut to ``limit`` characters (text from a submission)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# --- frames ---------------------------------------------------------------------------------


def _read_exact(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> bytes:
    (n,) = struct.unpack(">I", _read_exact(fd, 4))
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes is over the limit of {MAX_FRAME}")
    return _read_exact(fd, n)


def write_frame(fd: int, payload: bytes) -> None:
    data = struct.pack(">I", len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def pack_message(header: dict[str, Any], blobs: list[bytes]) -> bytes:
    """JSON header and blobs -> one payload (sandbox -> grader)."""
    head = json.dumps(header).encode()
    parts = [struct.pack(">II", len(head), len(blobs)), head]
    for b in blobs:
        parts += [struct.pack(">Q", len(b)), b]
    return b"".join(parts)


def unpack_message(payload: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Inverse of :func:`pack_message`; raises :class:`ProtocolError` on malformed input."""
    try:
        n_head, n_blobs = struct.unpack_from(">II", payload, 0)
        pos = 8
        header = json.loads(payload[pos : pos + n_head].decode())
        pos += n_head
        blobs = []
        for _ in range(n_blobs):
            (n,) = struct.unpack_from(">Q", payload, pos)
            pos += 8
            if pos + n > len(payload):
                raise ValueError("blob runs past the frame")
            blobs.append(payload[pos : pos + n])
            pos += n
    except (ValueError, struct.error, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"malformed message from the sandbox: {short(exc)}") from None
    if not isinstance(header, dict):
        raise ProtocolError("malformed message from the sandbox: header is not an object")
    return header, blobs


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


def _swap(obj: Any, callables: list[Any], depth: int = 0) -> Any:
    """``obj`` with callables (at any depth of lists/tuples/dicts) replaced by handles."""
    import torch

    if isinstance(obj, torch.Generator):
        return _GeneratorState(obj.get_state(), str(obj.device))
    if isinstance(obj, torch.Tensor | torch.nn.Module | np.ndarray | np.generic | type):
        return obj
    if depth < _MAX_DEPTH and type(obj) in (list, tuple):
        return type(obj)(_swap(x, callables, depth + 1) for x in obj)
    if depth < _MAX_DEPTH and type(obj) is dict:
        return {k: _swap(v, callables, depth + 1) for k, v in obj.items()}
    if callable(obj):
        callables.append(obj)
        return Handle(len(callables) - 1)
    return obj


class _GeneratorState:
    def __init__(self, state: Any, device: str) -> None:
        self.state, self.device = state, device

    def __reduce__(self) -> tuple[Any, ...]:
        return _make_generator, (self.state, self.device)


def dumps_call(obj: Any, callables: list[Any]) -> bytes:
    """Pickle ``obj`` for the sandbox; append each callable found in it to ``callables``."""
    return pickle.dumps(_swap(obj, callables), protocol=pickle.HIGHEST_PROTOCOL)


def leaves_of(obj: Any, out: list[Any] | None = None, depth: int = 0) -> list[Any]:
    """Tensors, modules and generators in ``obj`` (nested in lists/tuples/dicts), in order."""
    import torch

    out = [] if out is None else out
    if depth > _MAX_DEPTH:
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


# --- sandbox -> grader: tagged data ---------------------------------------------------------


def _npy(arr: np.ndarray, blobs: list[bytes]) -> int:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    blobs.append(buf.getvalue())
    return len(blobs) - 1


def _type_name(obj: Any) -> str:
    t = type(obj)
    full = f"{t.__module__}.{t.__name__}"
    return f"a {short(full if len(full) <= 80 else t.__name__, 80)} object"


def _tensor(t: Any, blobs: list[bytes]) -> dict[str, Any]:
    import torch

    data = t.detach().cpu()
    dtype = str(data.dtype).removeprefix("torch.")
    if data.dtype == torch.bfloat16:
        data = data.float()
    out = {
        "t": "tensor",
        "dtype": dtype,
        "grad": bool(t.requires_grad),
        "param": isinstance(t, torch.nn.Parameter),
        "b": _npy(data.resolve_conj().resolve_neg().numpy(), blobs),
    }
    if t.grad is not None:
        out["g"] = _tensor(t.grad, blobs)
    return out


def encode(obj: Any, blobs: list[bytes], leaves: list[Any], depth: int = 0) -> Any:
    """A JSON-able tagged tree for ``obj`` (runs in the sandbox); big data goes to ``blobs``.

    An object that is one of ``leaves`` (the call's arguments) is sent as its index, so the
    grader can hand back its own object.
    """
    import torch

    for i, leaf in enumerate(leaves):
        if obj is leaf:
            return {"t": "leaf", "i": i}
    if depth > _MAX_DEPTH:
        return {"t": "opaque", "type": "a too deeply nested value"}
    if obj is None or type(obj) in (bool, int, str):
        return obj
    if obj is Ellipsis:
        return {"t": "ellipsis"}
    if type(obj) is float:
        return {"t": "float", "v": repr(obj)}  # keeps nan and inf exact through JSON
    if type(obj) is complex:
        return {"t": "complex", "v": [repr(obj.real), repr(obj.imag)]}
    if isinstance(obj, np.generic) and not isinstance(obj, np.object_ | np.void):
        return {"t": "npscalar", "b": _npy(np.asarray(obj), blobs)}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject or obj.dtype.kind == "V":
            return {"t": "opaque", "type": f"a numpy array of dtype {obj.dtype}"}
        return {"t": "ndarray", "b": _npy(np.ascontiguousarray(obj), blobs)}
    if isinstance(obj, torch.Tensor):
        if obj.is_sparse or obj.layout != torch.strided:
            return {"t": "opaque", "type": "a sparse tensor"}
        return _tensor(obj, blobs)
    if isinstance(obj, list | tuple):
        if len(obj) > _MAX_ITEMS:
            return {"t": "opaque", "type": f"a {type(obj).__name__} of {len(obj)} items"}
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return {"t": kind, "v": [encode(x, blobs, leaves, depth + 1) for x in obj]}
    if isinstance(obj, dict):
        if len(obj) > _MAX_ITEMS:
            return {"t": "opaque", "type": f"a dict of {len(obj)} items"}
        return {
            "t": "dict",
            "v": [
                [encode(k, blobs, leaves, depth + 1), encode(v, blobs, leaves, depth + 1)]
                for k, v in obj.items()
            ],
        }
    if isinstance(obj, bool | int | float | str | complex):  # subclasses: plain values
        for kind in (bool, int, float, complex, str):
            if isinstance(obj, kind):
                return encode(kind(obj), blobs, leaves, depth)
    return {"t": "opaque", "type": _type_name(obj)}


def leaf_state(obj: Any, blobs: list[bytes]) -> Any:
    """The state of a call argument after the call (a tensor, a module, a generator)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return _tensor(obj, blobs)
    if isinstance(obj, torch.nn.Module):
        state = obj.state_dict(keep_vars=True)
        return {"t": "module", "v": [[k, _tensor(v, blobs)] for k, v in state.items()]}
    if isinstance(obj, torch.Generator):
        return {"t": "gen", "b": _npy(obj.get_state().numpy(), blobs)}
    return None


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


def _load(blobs: list[bytes], i: Any) -> np.ndarray:
    if type(i) is not int or not 0 <= i < len(blobs):
        raise ProtocolError("blob index out of range")
    try:
        return np.load(io.BytesIO(blobs[i]), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ProtocolError(f"bad array from the sandbox: {short(exc)}") from None


def _decode_tensor(tree: dict[str, Any], blobs: list[bytes]) -> Any:
    import torch

    arr = _load(blobs, tree.get("b"))
    t = torch.from_numpy(np.array(arr, copy=True))
    dtype = getattr(torch, str(tree.get("dtype", "")), None)
    if isinstance(dtype, torch.dtype) and t.dtype != dtype:
        t = t.to(dtype)
    if tree.get("param"):
        t = torch.nn.Parameter(t, requires_grad=bool(tree.get("grad")))
    elif tree.get("grad") and (t.is_floating_point() or t.is_complex()):
        t.requires_grad_(True)
    if isinstance(tree.get("g"), dict):
        t.grad = _decode_tensor(tree["g"], blobs)
    return t


def decode(tree: Any, blobs: list[bytes], leaves: list[Any], depth: int = 0) -> Any:
    """Rebuild a value from :func:`encode`'s tree (runs in the grader; never unpickles)."""
    if tree is None or type(tree) in (bool, int, str):
        return tree
    if depth > _MAX_DEPTH + 2 or not isinstance(tree, dict):
        raise ProtocolError("malformed value from the sandbox")
    kind = tree.get("t")
    if kind == "leaf":
        i = tree.get("i")
        if type(i) is not int or not 0 <= i < len(leaves):
            raise ProtocolError("bad argument index from the sandbox")
        return leaves[i]
    if kind == "float":
        return float(str(tree.get("v")))
    if kind == "ellipsis":
        return ...
    if kind == "complex":
        re_, im = tree.get("v", [0, 0])
        return complex(float(str(re_)), float(str(im)))
    if kind == "npscalar":
        return _load(blobs, tree.get("b"))[()]
    if kind == "ndarray":
        return _load(blobs, tree.get("b"))
    if kind == "tensor":
        return _decode_tensor(tree, blobs)
    if kind in ("list", "tuple"):
        items = [decode(x, blobs, leaves, depth + 1) for x in tree.get("v", [])]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        out = {}
        for k, v in tree.get("v", []):
            key = decode(k, blobs, leaves, depth + 1)
            if isinstance(key, list | dict | Opaque):
                raise ProtocolError("unhashable dict key from the sandbox")
            out[key] = decode(v, blobs, leaves, depth + 1)
        return out
    if kind == "opaque":
        return Opaque(str(tree.get("type", "an unknown object")))
    raise ProtocolError(f"unknown value tag {short(kind, 30)!r} from the sandbox")


def copy_back(leaf: Any, tree: Any, blobs: list[bytes]) -> None:
    """Copy an argument's new state (from :func:`leaf_state`) into the grader's own object."""
    import torch

    if not isinstance(tree, dict):
        raise ProtocolError("bad argument state from the sandbox")
    with torch.no_grad():
        if isinstance(leaf, torch.Tensor) and tree.get("t") == "tensor":
            _copy_tensor(leaf, _decode_tensor(tree, blobs))
        elif isinstance(leaf, torch.nn.Module) and tree.get("t") == "module":
            mine = leaf.state_dict(keep_vars=True)
            for name, sub in tree.get("v", []):
                if name in mine and isinstance(sub, dict):
                    _copy_tensor(mine[name], _decode_tensor(sub, blobs))
        elif isinstance(leaf, torch.Generator) and tree.get("t") == "gen":
            state = torch.from_numpy(np.array(_load(blobs, tree.get("b")), copy=True))
            try:
                leaf.set_state(state)
            except (RuntimeError, TypeError) as exc:
                raise ProtocolError(f"bad generator state: {short(exc)}") from None
        else:
            raise ProtocolError("argument state of the wrong kind from the sandbox")


def _copy_tensor(mine: Any, new: Any) -> None:
    if mine.shape == new.shape:
        mine.copy_(new.detach().to(mine.dtype))
    else:
        mine.data = new.detach().to(mine.dtype)
    if (mine.is_floating_point() or mine.is_complex()) and mine.is_leaf:
        mine.requires_grad_(bool(new.requires_grad))
    if new.grad is not None:
        if mine.grad is not None and mine.grad.shape == new.grad.shape:
            mine.grad.copy_(new.grad)
        else:
            mine.grad = new.grad.detach().to(mine.dtype)
