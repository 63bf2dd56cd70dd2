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


def _embedding_model(path) -> str:
    """Token ids (int64, [1, 6]) into a 10-row embedding, directly and through an int32 Cast into a
    second table of 7 rows: the tighter bound, [-7, 6], holds for the input."""
    from onnx import helper, numpy_helper

    from tests.conftest import save_model

    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("Cast", ["ids"], ["ids32"], to=6),
             helper.make_node("Gather", ["small", "ids32"], ["s"]),
             helper.make_node("Add", ["e", "s"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", 7, [1, 6])],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [numpy_helper.from_array(rng.normal(size=(10, 4)).astype(np.float32), "table"),
                               numpy_helper.from_array(rng.normal(size=(7, 4)).astype(np.float32), "small")])
    return save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.mark.parametrize("bad", [7, -8, 10**12])
def test_token_ids_outside_the_embedding_are_refused_naming_file_row_and_node(tmp_path, bad):
    """An id the model's Gather does not define (ONNX fails on it, the TFLite file's FLOOR_MOD
    would read another row) is a data error: the file, the row and the node are named, nothing
    is written; negative ids within the table count from its end, as in ONNX."""
    from click.testing import CliRunner

    from tflq.cli import main

    model = _embedding_model(tmp_path / "embed.onnx")
    calib = tmp_path / "calib"
    calib.mkdir()
    good = np.array([[[0, 6, -7, -1, 3, 2]], [[1, 1, 1, 1, 1, 1]]], np.int64)
    np.save(calib / "a.npy", good)
    assert tflq.convert(model, None, mode="full", calib=str(calib)).calibration["samples"] == 2  # in range

    ids = good.copy()
    ids[1, 0, 4] = bad
    np.save(calib / "b.npy", ids)
    with pytest.raises(CalibrationError) as error:
        tflq.convert(model, None, mode="full", calib=str(calib))
    message = str(error.value)
    assert "b.npy" in message and "row 1 of input 'ids'" in message and f"holds {bad}" in message
    assert "outside [-7, 6]" in message and "(Gather) indexes 7 entries" in message

    # Python samples too
    with pytest.raises(CalibrationError, match=f"holds {bad}, outside"):
        tflq.convert(model, None, mode="full", calib=[{"ids": ids[1]}])

    out = tmp_path / "out.tflite"
    result = CliRunner().invoke(main, ["convert", model, "-o", str(out), "--mode", "full", "--calib", str(calib)])
    assert result.exit_code == 1 and "outside [-7, 6]" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("rows", [None, 3])
def test_channels_last_samples_get_a_hint_that_reorders_them(tmp_path, rows):
    """Samples saved channels-last (as data prepared for TensorFlow is) are refused with the one
    call that fixes them; applying that call to the same data converts."""
    shape = _sample_shape()  # (C, H, W) of one sample
    x = np.random.default_rng(0).standard_normal(((rows,) if rows else ()) + shape).astype(np.float32)
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "a.npy", np.moveaxis(x, -3, -1))
    with pytest.raises(CalibrationError, match=r"a\.npy: .*channels-last.*np\.moveaxis\(a, -1, -3\)"):
        _full(str(bad))
    good = tmp_path / "good"
    good.mkdir()
    np.save(good / "a.npy", np.moveaxis(np.load(bad / "a.npy"), -1, -3))
    assert _full(str(good)).tflite


def test_a_wrong_shape_that_is_not_channels_last_gets_no_hint(tmp_path):
    c, h, w = _sample_shape()
    np.save(tmp_path / "a.npy", np.zeros((2, c, h + 1, w), np.float32))
    with pytest.raises(CalibrationError, match="does not fit") as error:
        _full(str(tmp_path))
    assert "channels-last" not in str(error.value)
