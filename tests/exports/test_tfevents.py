"""The hand-written event-file encoder against TensorBoard's own protobuf classes and record reader."""
from __future__ import annotations

import struct
from pathlib import Path

from service.tfevents import crc32c, event_file, tfrecord


def test_crc32c_matches_the_castagnoli_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    assert crc32c(b"") == 0


def test_records_decode_as_tensorboard_events(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    data = event_file(1700000000.5, [(1700000001.0, 1, [("epoch_loss", 0.5), ("grad_norm/dense_1/kernel", 2.0)]),
                                     (1700000002.0, 2, []),  # nothing to say: no record
                                     (1700000003.0, 3, [("epoch_loss", -1.25)])])
    path = tmp_path / "events.out.tfevents.1.test"
    path.write_bytes(data)
    events = list(EventFileLoader(str(path)).Load())  # checks both CRCs of every record
    assert events[0].file_version == "brain.Event:2" and events[0].wall_time == 1700000000.5
    # The loader turns simple_value scalars into the tensor form TensorBoard serves.
    got = [(e.step, e.wall_time, [(v.tag, v.tensor.float_val[0]) for v in e.summary.value]) for e in events[1:]]
    assert got == [(1, 1700000001.0, [("epoch_loss", 0.5), ("grad_norm/dense_1/kernel", 2.0)]),
                   (3, 1700000003.0, [("epoch_loss", -1.25)])]


def test_tfrecord_framing() -> None:
    record = tfrecord(b"abc")
    assert struct.unpack("<Q", record[:8])[0] == 3 and record[12:15] == b"abc" and len(record) == 19
