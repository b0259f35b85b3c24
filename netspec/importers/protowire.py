"""Protocol Buffers wire format, read without the protobuf package (a `.caffemodel`, a
`.binaryproto`).

Why a reader of our own rather than `protobuf` with a compiled `caffe.proto`: the part of the
format Caffe's weights need is four wire types and a dozen field numbers (below, from
BVLC/caffe's src/caffe/proto/caffe.proto); generated `_pb2` modules are tied to the protobuf
runtime's version, `protobuf` would be one more dependency for one reader, and the python
implementation copies every repeated float into a Python list, where this reader hands out a
NumPy view of the packed bytes (a 240 MB AlexNet reads in a fraction of a second).

Encoding (https://protobuf.dev/programming-guides/encoding/): a message is a sequence of
(key, value); key = field_number << 3 | wire_type, a varint. Wire types: 0 varint, 1 fixed
64-bit, 2 length-delimited (bytes, strings, sub-messages, packed repeated scalars), 5 fixed
32-bit; 3 and 4 (groups) are not used by caffe.proto and are refused.
"""
from __future__ import annotations

import numpy as np


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message; the message says where."""


def read_varint(buf, i: int) -> tuple[int, int]:
    """(value, next index) of the varint at buf[i]."""
    shift = value = 0
    n = len(buf)
    while True:
        if i >= n:
            raise WireError(f"a varint runs past the end at byte {i}")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise WireError(f"a varint longer than 10 bytes ending at byte {i}")


def fields(buf) -> list[tuple[int, int, object]]:
    """The (field number, wire type, value) of one message, in order. value: an int (wire
    types 0, 1, 5: the raw unsigned bits) or a memoryview of the bytes (type 2)."""
    buf = memoryview(buf)
    out, i, n = [], 0, len(buf)
    while i < n:
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise WireError(f"field number 0 at byte {i}: not a protobuf message")
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 1:
            if i + 8 > n:
                raise WireError(f"field {num}: 8 bytes run past the end")
            v, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wt == 5:
            if i + 4 > n:
                raise WireError(f"field {num}: 4 bytes run past the end")
            v, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        elif wt == 2:
            size, i = read_varint(buf, i)
            if i + size > n:
                raise WireError(f"field {num}: {size} bytes run past the end ({n - i} left)")
            v, i = buf[i:i + size], i + size
        else:
            raise WireError(f"field {num}: wire type {wt} (groups or invalid) at byte {i}")
        out.append((num, wt, v))
    return out


def floats(entries: list[tuple[int, int, object]], number: int) -> np.ndarray:
    """A repeated float field, packed (type 2, the proto's [packed = true]) or one 32-bit
    value per key (type 5), in order, as float32."""
    parts = []
    for num, wt, v in entries:
        if num != number:
            continue
        if wt == 2:
            if len(v) % 4:
                raise WireError(f"packed floats of field {number}: {len(v)} bytes, not a "
                                f"multiple of 4")
            parts.append(np.frombuffer(v, dtype="<f4"))
        elif wt == 5:
            parts.append(np.array([v], dtype="<u4").view("<f4"))
        else:
            raise WireError(f"field {number} should hold floats, has wire type {wt}")
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def doubles(entries, number: int) -> np.ndarray:
    parts = []
    for num, wt, v in entries:
        if num == number:
            parts.append(np.frombuffer(v, dtype="<f8") if wt == 2 else
                         np.array([v], dtype="<u8").view("<f8"))
    return np.concatenate(parts) if parts else np.zeros(0, np.float64)


def varints(entries, number: int) -> list[int]:
    """A repeated integer field, packed or not (as unsigned; int64 values are < 2^63 here)."""
    out = []
    for num, wt, v in entries:
        if num != number:
            continue
        if wt == 0:
            out.append(v)
        elif wt == 2:
            i = 0
            while i < len(v):
                x, i = read_varint(v, i)
                out.append(x)
        else:
            raise WireError(f"field {number} should hold integers, has wire type {wt}")
    return out


def string(entries, number: int, default: str = "") -> str:
    found = [v for num, wt, v in entries if num == number and wt == 2]
    return bytes(found[-1]).decode("utf-8", "replace") if found else default


def integer(entries, number: int, default: int | None = None) -> int | None:
    found = [v for num, wt, v in entries if num == number and wt == 0]
    return found[-1] if found else default
