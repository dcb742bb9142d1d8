"""TensorBoard event files without TensorFlow: the few protobuf messages and the TFRecord framing.

TensorBoard reads `events.out.tfevents.*` files: TFRecords (length, masked CRC-32C of the length, the
bytes, masked CRC-32C of the bytes) each holding a serialized `tensorflow.Event`. Scalars need only
`Event{wall_time, step, file_version | summary}` and `Summary.Value{tag, simple_value}`, which are
encoded here by hand (protobuf wire format), so the API writes them from database rows on demand and
never imports TensorFlow or a protobuf runtime.
"""
from __future__ import annotations

import io
import struct
from collections.abc import Iterable
from typing import BinaryIO

FILE_VERSION = "brain.Event:2"


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c_python(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses: the reference, a byte at a time (~7 MB/s)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # google-crc32c's C extension (a dependency); its wheel exists for every platform we ship
    from google_crc32c import value as crc32c
except ImportError:  # pragma: no cover - a platform without the wheel
    crc32c = crc32c_python


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data))


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= 0xFFFFFFFFFFFFFFFF  # int64 on the wire: negatives as two's complement
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, what: bytes) -> bytes:
    # Event: wall_time = 1 (double), step = 2 (int64), then file_version = 3 or summary = 5.
    return b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step) + what


def version_event(wall_time: float) -> bytes:
    return _event(wall_time, 0, _length_delimited(3, FILE_VERSION.encode()))


def scalars_event(wall_time: float, step: int, scalars: Iterable[tuple[str, float]]) -> bytes:
    """One Event with a Summary of `simple_value`s (Summary.value = 1; Value.tag = 1, simple_value = 2)."""
    values = b"".join(
        _length_delimited(1, _length_delimited(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
        for tag, value in scalars
    )
    return _event(wall_time, step, _length_delimited(5, values))


def write_event_file(out: BinaryIO, first_wall_time: float,
                     steps: Iterable[tuple[float, int, list[tuple[str, float]]]]) -> None:
    """Write an event file to `out` record by record: the version record, then one record per
    (wall_time, step, scalars). Memory stays one record, however many steps come."""
    out.write(tfrecord(version_event(first_wall_time)))
    for t, step, scalars in steps:
        if scalars:
            out.write(tfrecord(scalars_event(t, step, scalars)))


def event_file(first_wall_time: float, steps: Iterable[tuple[float, int, list[tuple[str, float]]]]) -> bytes:
    """A whole event file as bytes (see `write_event_file`)."""
    buf = io.BytesIO()
    write_event_file(buf, first_wall_time, steps)
    return buf.getvalue()
