"""Typed messages with an explicit encoding: how values cross a process boundary.

kdreal's rendezvous and sockets and OSU's SEND buffers carry Python values between
processes. They are encoded here with msgpack, never pickled, so that decoding the
bytes a peer sent can build nothing but plain data:

* ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, lists and dicts (msgpack's
  own types; ``bytearray`` and ``memoryview`` travel as ``bytes``, subclasses of the
  scalar types such as ``IntEnum`` as their base type);
* tuples (extension type 1: the items as an array), so they come back as tuples
  (named tuples as plain ones);
* instances of the dataclasses in the registry (extension type 2: the registered name
  and the values of the class's ``__init__`` fields, in order). The registry is
  explicit: the exchanged records of :mod:`kdlab.verbs` and the Kafka datapaths, plus
  whatever a datapath adds with :func:`register`.

Anything else is refused with :class:`CodecError` when encoding, and bytes that are
not such a value (garbage, an unregistered name, wrong fields) when decoding.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

_TUPLE = 1
_RECORD = 2

_registry: dict[str, type] = {}
_names: dict[type, str] = {}
_builtin_done = False


class CodecError(ValueError):
    """A value that may not be encoded, or bytes that are not an encoded value."""


def register(cls: type, name: str | None = None) -> type:
    """Allow instances of the dataclass ``cls`` on the wire, as ``name`` (default: its qualified name)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"only dataclasses can be registered, got {cls!r}")
    name = name or cls.__qualname__
    if _registry.get(name, cls) is not cls:
        raise ValueError(f"message name {name!r} is already registered for {_registry[name]!r}")
    _registry[name] = cls
    _names[cls] = name
    return cls


def _builtin() -> None:
    """Register the records kdlab exchanges (imported here, when first needed, to avoid import cycles)."""
    global _builtin_done
    if _builtin_done:
        return
    from kdlab import verbs
    from kdlab.kafka import direct, protocol

    for cls in (verbs.QpEndpoint, verbs.RemoteBuffer, *protocol.MESSAGES, direct.SegmentInfo):
        register(cls)
    _builtin_done = True


def registered() -> dict[str, type]:
    """Name -> class of every message type that may be decoded."""
    _builtin()
    return dict(_registry)


def _init_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _default(obj: Any) -> Any:
    """msgpack's hook for what it does not pack itself (``strict_types``: tuples and subclasses come here)."""
    if isinstance(obj, tuple):  # named tuples too, as plain tuples
        return msgpack.ExtType(_TUPLE, _pack(list(obj)))
    name = _names.get(type(obj))
    if name is not None:
        return msgpack.ExtType(_RECORD, _pack([name, [getattr(obj, f) for f in _init_fields(type(obj))]]))
    for base in (bool, int, float, str, bytes, list, dict):
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    raise CodecError(f"cannot encode a {type(obj).__module__}.{type(obj).__qualname__}: not a registered message type")


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_default, strict_types=True, use_bin_type=True)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _TUPLE:
        return tuple(_unpack(data))
    if code == _RECORD:
        name, values = _unpack(data)
        cls = _registry.get(name)
        if cls is None:
            raise CodecError(f"message type {name!r} is not registered")
        names = _init_fields(cls)
        if not isinstance(values, list) or len(values) != len(names):
            raise CodecError(f"message {name!r} needs {len(names)} fields")
        return cls(**dict(zip(names, values, strict=True)))
    raise CodecError(f"unknown extension type {code}")


def _unpack(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False, use_list=True)


def encode(value: Any) -> bytes:
    """``value`` as bytes; :class:`CodecError` if it holds anything but plain data and registered messages."""
    _builtin()
    try:
        return _pack(value)
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as err:
        raise CodecError(f"cannot encode {type(value).__qualname__}: {err}") from err


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The value :func:`encode` made ``data`` from; :class:`CodecError` for anything else."""
    _builtin()
    try:
        return _unpack(data)
    except CodecError:
        raise
    except Exception as err:  # garbage: msgpack's errors, unhashable keys, too deep, bad UTF-8, bad fields
        raise CodecError(f"undecodable message ({type(err).__name__}: {err})") from err
