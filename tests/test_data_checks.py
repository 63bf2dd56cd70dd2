"""Calibration files and statistics files are checked before use; each error names the file."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest

import tflq
from tflq.errors import CalibrationError

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "sample_models", "digits_cnn.onnx")
CALIB = os.path.join(os.path.dirname(__file__), "..", "sample_models", "digits_calib")


def _full(calib=None, stats=()):
    return tflq.convert(SAMPLE, None, mode="full", calib=calib, stats=tuple(stats))


def _npy_bytes(shape, dtype=np.float32) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(shape, dtype))
    return buffer.getvalue()


def _sample_shape():
    first = sorted(f for f in os.listdir(CALIB) if f.endswith(".npy"))[0]
    return np.load(os.path.join(CALIB, first), mmap_mode="r").shape[1:]


@pytest.mark.parametrize("tamper", ["short", "rows_declared", "negative"])
def test_corrupt_npy_headers_are_refused_naming_the_file(tmp_path, tamper):
    shape = (2,) + _sample_shape()
    data = _npy_bytes(shape)
    if tamper == "short":
        data = data[:-10]
    else:
        header = f"{shape}".encode()
        new = (f"({10 ** 9}," if tamper == "rows_declared" else "(-2,").encode() + header[header.index(b",") + 1:]
        data = data.replace(header, new.ljust(len(header)) if len(new) <= len(header) else new)
    (tmp_path / "bad.npy").write_bytes(data)
    with pytest.raises(CalibrationError, match="bad.npy"):
        _full(str(tmp_path))


def test_fifo_and_symlink_loop_and_wrong_subfolder_are_named(tmp_path):
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "a.npy")
    with pytest.raises(CalibrationError, match="a.npy: is a FIFO"):
        _full(str(fifo_dir))
    loop_dir = tmp_path / "loop"
    loop_dir.mkdir()
    os.symlink(loop_dir / "b.npy", loop_dir / "a.npy")
    os.symlink(loop_dir / "a.npy", loop_dir / "b.npy")
    with pytest.raises(CalibrationError, match="symlink loop"):
        _full(str(loop_dir))
    wrong = tmp_path / "wrong"
    (wrong / "images").mkdir(parents=True)
    np.save(wrong / "images" / "a.npy", np.zeros((1,) + _sample_shape(), np.float32))
    with pytest.raises(CalibrationError, match="subfolders .*images.* not named after"):
        _full(str(wrong))


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stats") / "s.npz"
    tflq.convert(SAMPLE, None, mode="full", calib=CALIB, calib_samples=4, save_stats=str(path))
    return path


def _tampered(stats_file, tmp_path, **changes):
    with np.load(stats_file, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    for key, change in changes.items():
        data[key] = change(data[key].copy())
    path = tmp_path / "tampered.npz"
    np.savez(path, **data)
    return str(path)


def _set_first(value):
    def change(arr):
        arr.reshape(-1)[0] = value
        return arr
    return change


@pytest.mark.parametrize("changes,match", [
    ({"minimum": lambda a: a[:-1]}, "shape"),
    ({"minimum": _set_first(np.nan)}, "not finite"),
    ({"minimum": _set_first(1e30)}, "minimum > maximum"),
    ({"counts": _set_first(-5)}, "negative counts"),
    ({"counts": lambda a: a.astype(np.float32)}, "type"),
    ({"samples": lambda a: np.array(-1)}, "negative counts"),
    ({"format": lambda a: np.array(99)}, "format 99"),
], ids=["sizes", "nan", "min_above_max", "negative_counts", "wrong_type", "negative_samples", "version"])
def test_tampered_statistics_are_refused_naming_the_file(stats_file, tmp_path, changes, match):
    assert _full(stats=[str(stats_file)]).tflite  # the untampered file loads
    with pytest.raises(CalibrationError, match=f"tampered.npz.*{match}"):
        _full(stats=[_tampered(stats_file, tmp_path, **changes)])


def test_calib_samples_reads_only_the_rows_it_uses(tmp_path):
    """A 20 MB .npy with --calib-samples 3: the file is memory-mapped, so far less than the file is
    allocated (a full np.load would allocate all 20 MB)."""
    import tracemalloc

    from tflq.calibration.sources import InputSpec, load_samples

    rows = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(20_000, 256))
    rows[:] = 1.0
    rows.flush()
    del rows
    tracemalloc.start()
    try:
        samples = list(load_samples(str(tmp_path), [InputSpec("x", (1, 256), np.float32)], 3))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(samples) == 3 and peak < 2 * 1024 ** 2, peak
