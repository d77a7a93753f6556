"""Canonical byte encoding of ledger objects: a `Writer`, a bounds-checked `Reader`, field checks."""

from __future__ import annotations

import math
import struct
from operator import itemgetter
from types import TracebackType

from dfl_ray.ledger.errors import DecodeError

# No field of a ledger object comes near these; they stop a hostile length prefix from making
# the reader slice or loop far beyond what an honest object needs.
MAX_FIELD_BYTES = 1 << 20
MAX_COUNT = 1 << 16
MAX_TAG_BYTES = 64

# Integers are stored in SQLite's signed 64-bit INTEGER, so "u64" fields stop at 2**63 - 1.
MAX_INT = (1 << 63) - 1
MAX_U32 = (1 << 32) - 1

_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")


class Writer:
    """Appends canonical fields; `getvalue()` returns the bytes written so far.

    Layout rules (spec section 3): a length-prefixed domain tag first, then the fields in a
    fixed order; unsigned integers fixed-width big-endian; floats IEEE-754 binary64 big-endian;
    every byte string and text length-prefixed (u32); sequences count-prefixed (u32); maps as
    sequences sorted by key. Each accepted encoding decodes to exactly one object and
    re-encodes to the same bytes, so a signature or hash over the encoding pins down the object.
    """

    def __init__(self, tag: bytes) -> None:
        if not isinstance(tag, bytes) or not 0 < len(tag) <= MAX_TAG_BYTES:
            raise ValueError(f"domain tag must be 1..{MAX_TAG_BYTES} bytes, got {tag!r}")
        self._parts: list[bytes] = [_U8.pack(len(tag)), tag]

    @classmethod
    def resume(cls, encoded: bytes) -> Writer:
        """Continue after `encoded`, the output of another Writer.

        Signed objects encode as their signed bytes followed by the signature (and, for blocks,
        the endorsements), so the signed bytes are a prefix of the full encoding.
        """
        if not isinstance(encoded, bytes):
            raise TypeError(f"encoded must be bytes, got {type(encoded).__name__}")
        writer = cls.__new__(cls)
        writer._parts = [encoded]
        return writer

    def u32(self, value: int) -> Writer:
        require_uint("u32 field", value, MAX_U32)
        self._parts.append(_U32.pack(value))
        return self

    def u64(self, value: int) -> Writer:
        require_uint("u64 field", value, MAX_INT)
        self._parts.append(_U64.pack(value))
        return self

    def f64(self, value: float) -> Writer:
        require_finite("f64 field", value)
        self._parts.append(_F64.pack(value))
        return self

    def blob(self, value: bytes) -> Writer:
        if not isinstance(value, bytes):
            raise TypeError(f"blob field must be bytes, got {type(value).__name__}")
        if len(value) > MAX_FIELD_BYTES:
            raise ValueError(f"blob field of {len(value)} bytes exceeds {MAX_FIELD_BYTES}")
        self._parts.append(_U32.pack(len(value)))
        self._parts.append(value)
        return self

    def text(self, value: str) -> Writer:
        if not isinstance(value, str):
            raise TypeError(f"text field must be str, got {type(value).__name__}")
        return self.blob(value.encode("utf-8"))

    def count(self, n: int) -> Writer:
        """Start a sequence of `n` items; the caller writes the items next."""
        require_uint("sequence length", n, MAX_COUNT)
        self._parts.append(_U32.pack(n))
        return self

    def blob_list(self, values: tuple[bytes, ...]) -> Writer:
        """A counted sequence of blobs."""
        self.count(len(values))
        for value in values:
            self.blob(value)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads fields back in the order they were written; raises only `DecodeError`."""

    def __init__(self, data: bytes, tag: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"expected bytes to decode, got {type(data).__name__}")
        if isinstance(data, bytes):
            self._data = data
        else:
            # One copy of a small object up front lets every field be read straight from
            # `bytes`, and lets decoders keep slices of the input as their cached encoding.
            try:
                self._data = memoryview(data).cast("B").tobytes()
            except TypeError as err:
                raise DecodeError(f"input is not a contiguous byte buffer: {err}") from err
        self._pos = 0
        got = self._take(self._unpack(_U8))
        if got != tag:
            raise DecodeError(f"expected tag {tag!r}, got {got!r}")

    @property
    def data(self) -> bytes:
        """The whole input, as bytes."""
        return self._data

    @property
    def offset(self) -> int:
        """Bytes read so far: `data[:offset]` is the encoding of the fields read."""
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _need(self, n: int) -> int:
        end = self._pos + n
        if end > len(self._data):
            raise DecodeError(
                f"truncated input: need {n} bytes at offset {self._pos}, {self.remaining} left"
            )
        return end

    def _take(self, n: int) -> bytes:
        end = self._need(n)
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def _unpack(self, fmt: struct.Struct) -> int:
        end = self._need(fmt.size)
        value: int = fmt.unpack_from(self._data, self._pos)[0]
        self._pos = end
        return value

    def u32(self) -> int:
        return self._unpack(_U32)

    def u64(self) -> int:
        return self._unpack(_U64)

    def f64(self) -> float:
        end = self._need(_F64.size)
        value: float = _F64.unpack_from(self._data, self._pos)[0]
        self._pos = end
        return value

    def blob(self) -> bytes:
        n = self.u32()
        if n > MAX_FIELD_BYTES:
            raise DecodeError(f"length prefix {n} exceeds the cap of {MAX_FIELD_BYTES} bytes")
        return self._take(n)

    def text(self) -> str:
        raw = self.blob()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DecodeError(f"text field is not valid UTF-8: {err}") from err

    def count(self) -> int:
        n = self.u32()
        # Every item takes at least one byte, so a count above what is left is a lie; checking
        # it here bounds the caller's loop by the input size.
        if n > MAX_COUNT or n > self.remaining:
            raise DecodeError(f"sequence length {n} is impossible with {self.remaining} bytes left")
        return n

    def finish(self) -> None:
        if self.remaining:
            raise DecodeError(f"{self.remaining} trailing bytes after the encoded object")


Field = int | str
"""A field of a `FixedLayout`: "u32", "u64", "f64", or a blob of exactly that many bytes."""

_FIXED_CODES = {"u32": "I", "u64": "Q", "f64": "d"}


class FixedLayout:
    """The encoding of an object whose fields all have fixed sizes, read in one struct call.

    Many ledger objects (receipts always, transactions in two variants) encode to a fixed
    layout once every blob has its required size. `unpack` reads such an encoding field by
    field without a `Reader`: it returns the field values when `data` is exactly this layout
    (size, tag and every blob's length prefix), else None, and the caller falls back to the
    `Reader`, which then names what is wrong. An object whose blobs have the sizes listed here
    encodes to exactly this layout, so both paths accept the same inputs.
    """

    def __init__(self, tag: bytes, fields: tuple[Field, ...]) -> None:
        Writer(tag)  # the same tag rules
        fmt = [">B", f"{len(tag)}s"]
        constants: list[tuple[int, object]] = [(0, len(tag)), (1, tag)]
        values: list[int] = []
        for field in fields:
            if isinstance(field, str):
                if field not in _FIXED_CODES:
                    raise ValueError(f"unknown fixed field {field!r}")
                fmt.append(_FIXED_CODES[field])
            else:
                require_uint("blob size", field, MAX_FIELD_BYTES)
                constants.append((len(fmt), field))
                fmt += ["I", f"{field}s"]
            values.append(len(fmt) - 1)
        self._struct = struct.Struct("".join(fmt))
        self._constants = tuple(value for _, value in constants)
        self._get_constants = itemgetter(*(i for i, _ in constants))
        self._get_values = itemgetter(*values)

    @property
    def size(self) -> int:
        return self._struct.size

    def unpack(self, data: object) -> tuple[object, ...] | None:
        if type(data) is not bytes or len(data) != self._struct.size:
            return None
        raw = self._struct.unpack(data)
        if self._get_constants(raw) != self._constants:
            return None
        values: tuple[object, ...] = self._get_values(raw)
        return values


def remember(obj: object, **cached: object) -> None:
    """Fill `obj`'s cached properties with values already known (encodings of decoded bytes).

    `functools.cached_property` keeps its value in the instance `__dict__`, which a frozen
    dataclass leaves writable, so this is exactly what computing them would store. Each value
    must be what the property would compute; decoders pass slices of the very bytes they
    decoded, which re-encode to themselves (see `Writer`).
    """
    vars(obj).update(cached)


class decoding:
    """Turn a field check that fails while decoding `kind` into a `DecodeError`.

    Named and used like a function (`with decoding("receipt"):`), but a class: it wraps every
    object a block decodes (a hundred per block), where a generator-based context manager
    costs more than the field checks it wraps.
    """

    __slots__ = ("_kind",)

    def __init__(self, kind: str) -> None:
        self._kind = kind

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, ValueError | TypeError) and not isinstance(exc, DecodeError):
            raise DecodeError(f"{self._kind}: {exc}") from exc


def require_bytes(name: str, value: object, sizes: tuple[int, ...]) -> None:
    """`value` must be `bytes` (not bytearray: objects are hashable and immutable) of a listed size."""
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {type(value).__name__}")
    if len(value) not in sizes:
        allowed = " or ".join(str(s) for s in sizes)
        raise ValueError(f"{name} must be {allowed} bytes, got {len(value)}")


def require_uint(name: str, value: object, maximum: int, minimum: int = 0) -> None:
    # bool is an int subclass; True as a sequence number is always a bug.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be in [{minimum}, {maximum}], got {value}")


def require_finite(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    # NaN compares false with everything, so a NaN expiry would never expire.
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


def require_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if len(value.encode("utf-8")) > MAX_FIELD_BYTES:
        raise ValueError(f"{name} is longer than {MAX_FIELD_BYTES} bytes")
