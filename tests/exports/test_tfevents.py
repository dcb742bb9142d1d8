"""The hand-written event-file encoder against TensorBoard's own protobuf classes and record reader."""
from __future__ import annotations

import struct
from pathlib import Path

from trainyard.tfevents import crc32c, crc32c_python, event_file, tfrecord


def test_crc32c_matches_the_castagnoli_check_value() -> None:
    for crc in (crc32c, crc32c_python):
        assert crc(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
        assert crc(b"") == 0
    assert crc32c is not crc32c_python, "the C extension (google-crc32c) is a dependency: it must be used"
    blob = bytes(range(256)) * 41 + b"tail"
    assert all(crc32c(blob[:n]) == crc32c_python(blob[:n]) for n in (1, 7, 8, 9, 63, 64, 65, 4096, len(blob)))


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


def test_a_long_jobs_archive_is_written_in_flat_memory_and_reads_back_whole(tmp_path: Path) -> None:
    """1,000 epochs of 40 variables (200,000 scalars, ~11 MB of event records) stream through: the rows
    arrive one at a time, as from the endpoint's batched cursor, and the event files are spooled to disk."""
    import tarfile
    import tracemalloc
    from datetime import datetime, timezone

    from tensorboard.compat.proto import event_pb2

    from service.api.tensorboard import write_tensorboard_archive

    epochs, n_vars, at = 1000, 40, datetime(2026, 12, 3, tzinfo=timezone.utc)
    metrics = ((e, at, {"loss": 1.0 / e, "val_loss": 2.0 / e, "learning_rate": 0.01}) for e in range(1, epochs + 1))
    diagnostics = ((e, at, [{"layer": f"dense_{i}", "name": "kernel", "grad_norm": float(e), "weight_norm": 1.0,
                             "update_norm": 0.1, "update_ratio": 0.1, "zero_grad_fraction": 0.0}
                            for i in range(n_vars)]) for e in range(1, epochs + 1))
    archive = tmp_path / "tb.tar.gz"
    tracemalloc.start()
    with archive.open("wb") as out:
        write_tensorboard_archive(out, "job_" + "a" * 32, at.timestamp(), metrics, diagnostics)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4_000_000, f"building the archive peaked at {peak / 1e6:.1f} MB"

    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    runs = tmp_path / "x" / ("job_" + "a" * 32)

    def records(run: str) -> list[bytes]:
        """Every record of the run's event file, both CRCs of each checked (TensorBoard's loader would
        check them too, in pure Python: a minute for this file)."""
        data, out, at_byte = next((runs / run).iterdir()).read_bytes(), [], 0
        while at_byte < len(data):
            (length,) = struct.unpack_from("<Q", data, at_byte)
            header, body = data[at_byte:at_byte + 8], data[at_byte + 12:at_byte + 12 + length]
            assert struct.unpack_from("<I", data, at_byte + 8)[0] == _masked(header)
            assert struct.unpack_from("<I", data, at_byte + 12 + length)[0] == _masked(body)
            out.append(body)
            at_byte += 16 + length
        return out

    train = [event_pb2.Event.FromString(r) for r in records("train")[1:]]
    assert [e.step for e in train] == list(range(1, epochs + 1))
    last = {v.tag: v.simple_value for v in train[-1].summary.value}
    assert len(last) == 2 + 5 * n_vars and last["grad_norm/dense_39/kernel"] == float(epochs)
    validation = [event_pb2.Event.FromString(r) for r in records("validation")[1:]]
    assert [(e.step, e.summary.value[0].tag) for e in validation] == [(n, "epoch_loss") for n in range(1, epochs + 1)]


def _masked(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
