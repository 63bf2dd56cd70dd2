"""Calibration data readers: every source kind, batching, normalization, and every bad-input case."""
from __future__ import annotations

from dataclasses import replace

import logging
import operator
import sys
import threading

import numpy as np
import pytest

from tflq.errors import CalibrationError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Layout, Tensor
from tflq.calibration.sources import DEFAULT_LIMIT, InputSpec, graph_input_specs, load_samples
from tests.conftest import importorskip

F32 = np.float32
SPEC = InputSpec("x", (1, 3, 4, 4), F32)


def rng_data(*shape, seed=0, dtype=F32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def collect(data) -> list[dict[str, np.ndarray]]:
    return list(data)


def assert_one_line_error(excinfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ---- .npy directories ------------------------------------------------------------------------


def test_npy_directory_one_sample_per_file_in_sorted_order(tmp_path):
    arrays = {name: rng_data(1, 3, 4, 4, seed=i) for i, name in enumerate(["b.npy", "a.npy", "c.npy"])}
    for name, arr in arrays.items():
        np.save(tmp_path / name, arr)
    (tmp_path / "README.txt").write_text("ignored")
    data = load_samples(tmp_path, [SPEC], None)
    samples = collect(data)
    assert len(data) == 3
    for sample, name in zip(samples, ["a.npy", "b.npy", "c.npy"]):
        assert set(sample) == {"x"}
        assert sample["x"].dtype == F32 and sample["x"].shape == (1, 3, 4, 4)
        np.testing.assert_array_equal(sample["x"], arrays[name])


def test_batch_file_is_split_into_samples(tmp_path):
    batch = rng_data(5, 3, 4, 4)
    np.save(tmp_path / "batch.npy", batch)
    samples = collect(load_samples(tmp_path, [SPEC], None))
    assert len(samples) == 5
    for k, sample in enumerate(samples):
        np.testing.assert_array_equal(sample["x"], batch[k:k + 1])


def test_sample_without_batch_axis_and_stacked_samples(tmp_path):
    single = rng_data(3, 4, 4, seed=1)
    stacked = rng_data(2, 1, 3, 4, 4, seed=2)
    np.save(tmp_path / "a_single.npy", single)
    np.save(tmp_path / "b_stacked.npy", stacked)
    samples = collect(load_samples(tmp_path, [SPEC], None))
    assert len(samples) == 3
    np.testing.assert_array_equal(samples[0]["x"], single[None])
    np.testing.assert_array_equal(samples[1]["x"], stacked[0])
    np.testing.assert_array_equal(samples[2]["x"], stacked[1])


def test_model_batch_groups_rows_and_warns_about_leftovers(tmp_path, caplog):
    spec = InputSpec("x", (2, 3), F32)
    rows = rng_data(3, 3)
    np.save(tmp_path / "a.npy", rows)
    np.save(tmp_path / "b.npy", rng_data(2, 3, seed=1))
    with caplog.at_level(logging.WARNING):
        data = load_samples(tmp_path, [spec], None)
    samples = collect(data)
    assert len(data) == 2 and len(samples) == 2
    np.testing.assert_array_equal(samples[0]["x"], rows[:2])
    np.testing.assert_array_equal(samples[1]["x"], np.concatenate([rows[2:], np.load(tmp_path / "b.npy")[:1]]))
    assert "left over" in caplog.text


def test_single_npy_file_float64_is_cast_only_when_asked(tmp_path):
    arr = rng_data(4, 3, 4, 4, dtype=np.float64)
    path = tmp_path / "data.npy"
    np.save(path, arr)
    with pytest.raises(CalibrationError, match="data.npy.*float64.*--calib-convert"):
        load_samples(str(path), [SPEC], None)
    samples = collect(load_samples(str(path), [replace(SPEC, convert=True)], None))
    assert len(samples) == 4
    assert samples[2]["x"].dtype == F32
    np.testing.assert_array_equal(samples[2]["x"], arr[2:3].astype(F32))


def test_limit_and_default_limit(tmp_path):
    spec = InputSpec("x", (1, 2), F32)
    np.save(tmp_path / "many.npy", rng_data(DEFAULT_LIMIT + 7, 2))
    assert len(load_samples(tmp_path, [spec], None)) == DEFAULT_LIMIT == 500
    limited = load_samples(tmp_path, [spec], 3)
    assert len(limited) == 3 and len(collect(limited)) == 3


def test_files_after_the_limit_are_not_read(tmp_path):
    np.save(tmp_path / "a.npy", rng_data(1, 3, 4, 4))
    (tmp_path / "b.npy").write_bytes(b"not an npy file")
    assert len(collect(load_samples(tmp_path, [SPEC], 1))) == 1


def test_file_data_can_be_iterated_twice(tmp_path):
    np.save(tmp_path / "a.npy", rng_data(2, 3, 4, 4))
    data = load_samples(tmp_path, [SPEC], None)
    first, second = collect(data), collect(data)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a["x"], b["x"])


def _readers() -> list:
    return [t for t in threading.enumerate() if t.name == "tflq-calibration-reader"]


def test_files_are_read_ahead_in_order_with_errors_where_they_were_and_no_thread_left(tmp_path):
    """Files are read by a thread a few samples ahead of the consumer: the same samples in the
    same order; a file holding NaN fails at its own place (after the samples before it); a
    consumer that stops early, or never starts, leaves no reading thread."""
    arrays = [rng_data(1, 3, 4, 4, seed=k) for k in range(6)]
    for k, array in enumerate(arrays):
        np.save(tmp_path / f"{k}.npy", array)
    got = collect(load_samples(tmp_path, [SPEC], None))
    assert [g["x"].tobytes() for g in got] == [a.tobytes() for a in arrays] and not _readers()

    iterator = iter(load_samples(tmp_path, [SPEC], None))
    assert next(iterator)["x"].tobytes() == arrays[0].tobytes() and len(_readers()) == 1
    iterator.close()  # (what a loop that breaks, or an error, does to it)
    assert not _readers()
    iter(load_samples(tmp_path, [SPEC], None))
    assert not _readers()

    arrays[3][0, 1, 2, 3] = np.nan  # (found as the file is read, unlike a bad shape)
    np.save(tmp_path / "3.npy", arrays[3])
    seen = []
    with pytest.raises(CalibrationError, match="3.npy"):
        for sample in load_samples(tmp_path, [SPEC], None):
            seen.append(sample)
    assert len(seen) == 3 and not _readers()


def test_integer_input_takes_safely_castable_integers_when_asked(tmp_path):
    spec = InputSpec("ids", (1, 5), np.int64)
    np.save(tmp_path / "ids.npy", np.arange(10, dtype=np.int32).reshape(2, 5))
    with pytest.raises(CalibrationError, match="ids.npy.*int32"):
        load_samples(tmp_path, [spec], None)
    samples = collect(load_samples(tmp_path, [replace(spec, convert=True)], None))
    assert samples[1]["ids"].dtype == np.int64
    np.testing.assert_array_equal(samples[1]["ids"], [[5, 6, 7, 8, 9]])


# ---- multi-input -----------------------------------------------------------------------------

SPECS2 = [InputSpec("a", (1, 2), F32), InputSpec("b", (1, 3), F32)]


def test_subdirectory_per_input(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a_all = rng_data(4, 2, seed=1)
    b_all = rng_data(4, 3, seed=2)
    np.save(tmp_path / "a" / "all.npy", a_all)
    np.save(tmp_path / "b" / "part1.npy", b_all[:2])
    np.save(tmp_path / "b" / "part2.npy", b_all[2:])
    samples = collect(load_samples(tmp_path, SPECS2, None))
    assert len(samples) == 4
    for k, sample in enumerate(samples):
        np.testing.assert_array_equal(sample["a"], a_all[k:k + 1])
        np.testing.assert_array_equal(sample["b"], b_all[k:k + 1])


def test_npz_files_keyed_by_input_name(tmp_path):
    a, b = rng_data(3, 2, seed=1), rng_data(3, 3, seed=2)
    np.savez(tmp_path / "x.npz", a=a, b=b, labels=np.arange(3))
    np.savez_compressed(tmp_path / "y.npz", a=a[:1] * 2, b=b[:1] * 2)
    samples = collect(load_samples(tmp_path, SPECS2, None))
    assert len(samples) == 4
    np.testing.assert_array_equal(samples[1]["a"], a[1:2])
    np.testing.assert_array_equal(samples[3]["b"], b[:1] * 2)


def test_single_input_npz_with_any_single_key(tmp_path):
    arr = rng_data(2, 3, 4, 4)
    np.savez(tmp_path / "data.npz", arr)  # stored as 'arr_0'
    samples = collect(load_samples(tmp_path / "data.npz", [SPEC], None))
    np.testing.assert_array_equal(samples[1]["x"], arr[1:2])


# ---- Python iterables ------------------------------------------------------------------------


def test_python_iterable_of_dicts_is_validated_lazily():
    items = [{"a": rng_data(1, 2, seed=k), "b": rng_data(1, 3, seed=k + 10)} for k in range(3)]
    data = load_samples(items, SPECS2, None)
    with pytest.raises(TypeError):
        len(data)
    assert operator.length_hint(data) == 3
    samples = collect(data)
    assert len(samples) == 3
    np.testing.assert_array_equal(samples[2]["b"], items[2]["b"])

    def bad():
        yield {"a": rng_data(1, 2), "b": rng_data(1, 3)}
        yield {"a": rng_data(1, 2), "b": rng_data(1, 4)}

    data = load_samples(bad(), SPECS2, None)
    iterator = iter(data)
    next(iterator)
    with pytest.raises(CalibrationError) as excinfo:
        next(iterator)
    assert_one_line_error(excinfo, "calibration sample 1", "'b'", "[1, 3]")


def test_python_iterable_bare_arrays_generator_and_limit():
    gen = (rng_data(1, 3, 4, 4, seed=k) for k in range(10))
    samples = collect(load_samples(gen, [SPEC], 4))
    assert len(samples) == 4
    np.testing.assert_array_equal(samples[3]["x"], rng_data(1, 3, 4, 4, seed=3))


def test_python_items_leftover_rows_warn(caplog):
    spec = InputSpec("x", (2, 3), F32)
    with caplog.at_level(logging.WARNING):
        samples = collect(load_samples([rng_data(3, 3)], [spec], None))
    assert len(samples) == 1
    assert "left over" in caplog.text


def test_python_single_dict_with_a_batch():
    batch = rng_data(3, 3, 4, 4)
    samples = collect(load_samples({"x": batch}, [SPEC], None))
    assert len(samples) == 3


@pytest.mark.parametrize("item, fragments", [
    ({"a": np.zeros((1, 2), F32)}, ["no array for input 'b'"]),
    ({"a": np.zeros((1, 2), F32), "b": np.zeros((1, 3), F32), "c": 1}, ["unknown input", "'c'"]),
    ({"a": np.zeros((1, 2), np.int64), "b": np.zeros((1, 3), F32)}, ["integer data", "'a'"]),
    ({"a": np.full((1, 2), np.nan, F32), "b": np.zeros((1, 3), F32)}, ["NaN or Inf", "'a'"]),
    ({"a": np.zeros((2, 2), F32), "b": np.zeros((1, 3), F32)}, ["different numbers of samples"]),
])
def test_bad_python_items(item, fragments):
    with pytest.raises(CalibrationError) as excinfo:
        collect(load_samples([item], SPECS2, None))
    assert_one_line_error(excinfo, "calibration sample 0", *fragments)


# ---- images ----------------------------------------------------------------------------------


def save_image(path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture
def pillow():
    return importorskip("PIL")


def test_images_nchw_with_normalization(tmp_path, pillow):
    pixels = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)  # H=4, W=5, RGB
    save_image(tmp_path / "img.png", pixels)
    spec = InputSpec("x", (1, 3, 4, 5), F32)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)
    samples = collect(load_samples(tmp_path, [spec], None, mean=mean, std=std, scale=1 / 255))
    expected = ((pixels.astype(np.float64) / 255 - np.array(mean)) / np.array(std)).transpose(2, 0, 1)[None]
    assert samples[0]["x"].dtype == F32
    np.testing.assert_allclose(samples[0]["x"], expected, rtol=1e-5, atol=1e-5)


def test_images_nhwc_grayscale_uint8_and_resize(tmp_path, pillow):
    gray = np.full((6, 6, 3), 77, np.uint8)  # R = G = B, so luminance is 77 exactly
    save_image(tmp_path / "a.png", gray)
    save_image(tmp_path / "b.jpg", np.full((10, 20, 3), 200, np.uint8))
    nhwc = collect(load_samples(tmp_path, [InputSpec("x", (1, 3, 3, 1), F32)], None))
    assert [s["x"].shape for s in nhwc] == [(1, 3, 3, 1), (1, 3, 3, 1)]
    np.testing.assert_array_equal(nhwc[0]["x"], np.full((1, 3, 3, 1), 77, F32))
    np.testing.assert_allclose(nhwc[1]["x"], 200, atol=3)  # JPEG is lossy
    raw = collect(load_samples(tmp_path / "a.png", [InputSpec("x", (1, 3, 2, 2), np.uint8)], None))
    assert raw[0]["x"].dtype == np.uint8
    np.testing.assert_array_equal(raw[0]["x"], np.full((1, 3, 2, 2), 77, np.uint8))


def test_unreadable_image(tmp_path, pillow):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [SPEC], None)
    assert_one_line_error(excinfo, "broken.png", "not a readable image")


def test_truncated_image_fails_when_decoded(tmp_path, pillow):
    save_image(tmp_path / "img.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3)))
    data = (tmp_path / "img.png").read_bytes()
    (tmp_path / "img.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(CalibrationError) as excinfo:
        collect(load_samples(tmp_path, [SPEC], None))
    assert_one_line_error(excinfo, "img.png")


def test_images_need_a_4d_input_with_1_or_3_channels(tmp_path, pillow):
    save_image(tmp_path / "img.png", np.zeros((4, 4, 3)))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [InputSpec("x", (1, 5, 4, 4), F32)], None)
    assert_one_line_error(excinfo, "img.png", "1 or 3 channels", "[1, 5, 4, 4]")
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [InputSpec("x", (1, 48), F32)], None)
    assert_one_line_error(excinfo, "img.png", "4-D input")
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [SPEC], None, mean=(1.0, 2.0))
    assert_one_line_error(excinfo, "--mean", "3 channel")


def test_missing_pillow_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "img.png").write_bytes(b"whatever")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [SPEC], None)
    assert_one_line_error(excinfo, "pip install tflq[images]")


# ---- bad inputs ------------------------------------------------------------------------------


def test_wrong_shape_names_file_and_expected_shape(tmp_path):
    np.save(tmp_path / "bad.npy", rng_data(1, 3, 5, 5))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [SPEC], None)
    assert_one_line_error(excinfo, "bad.npy", "[1, 3, 5, 5]", "'x'", "[1, 3, 4, 4]", "[N, 3, 4, 4]")


def test_integer_data_for_float_input(tmp_path):
    np.save(tmp_path / "ints.npy", np.zeros((1, 3, 4, 4), np.int64))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [SPEC], None)
    assert_one_line_error(excinfo, "ints.npy", "integer data", "float32", "[1, 3, 4, 4]")


def test_unsafe_integer_cast_is_an_error(tmp_path):
    np.save(tmp_path / "ids.npy", np.zeros((1, 5), np.int64))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [InputSpec("ids", (1, 5), np.int32)], None)
    assert_one_line_error(excinfo, "ids.npy", "int64", "int32")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_name_the_file_and_row(tmp_path, bad_value):
    arr = rng_data(3, 3, 4, 4)
    arr[2, 1, 0, 0] = bad_value
    np.save(tmp_path / "data.npy", arr)
    data = load_samples(tmp_path, [SPEC], None)
    with pytest.raises(CalibrationError) as excinfo:
        collect(data)
    assert_one_line_error(excinfo, "data.npy", "row 2", "NaN or Inf")


def test_empty_directory(tmp_path):
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [SPEC], None)
    assert_one_line_error(excinfo, str(tmp_path), "no calibration files")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CalibrationError):
        load_samples(tmp_path, [SPEC], None)


def test_empty_array_file(tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 3, 4, 4), F32))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [SPEC], None)
    assert_one_line_error(excinfo, "0 row(s)", "[1, 3, 4, 4]")


def test_missing_path():
    with pytest.raises(CalibrationError) as excinfo:
        load_samples("/no/such/calibration/dir", [SPEC], None)
    assert_one_line_error(excinfo, "/no/such/calibration/dir", "no such file")


def test_corrupt_npy_and_npz(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path / "bad.npy", [SPEC], None)
    assert_one_line_error(excinfo, "bad.npy", "not a readable .npy")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path / "bad.npz", [SPEC], None)
    assert_one_line_error(excinfo, "bad.npz", "not a readable .npz")


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [SPEC], None)
    assert_one_line_error(excinfo, "obj.npy")


def test_npz_missing_input_names_file_and_keys(tmp_path):
    np.savez(tmp_path / "x.npz", a=rng_data(1, 2), other=rng_data(1, 3))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, SPECS2, None)
    assert_one_line_error(excinfo, "x.npz", "'b'", "[1, 3]", "'other'")


def test_multi_input_plain_npy_directory_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", rng_data(1, 2))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, SPECS2, None)
    assert_one_line_error(excinfo, "subdirectory named after it", ".npz")


def test_missing_input_subdirectory(tmp_path):
    (tmp_path / "a").mkdir()
    np.save(tmp_path / "a" / "0.npy", rng_data(1, 2))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, SPECS2, None)
    assert_one_line_error(excinfo, "['b']")


def test_inputs_with_different_sample_counts(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "a" / "0.npy", rng_data(3, 2))
    np.save(tmp_path / "b" / "0.npy", rng_data(2, 3))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, SPECS2, None)
    assert_one_line_error(excinfo, "different numbers of samples", "'a': 3", "'b': 2")
    assert len(load_samples(tmp_path, SPECS2, 2)) == 2  # both have enough for the limit


def test_mixed_npz_and_npy(tmp_path):
    np.save(tmp_path / "a.npy", rng_data(1, 3, 4, 4))
    np.savez(tmp_path / "b.npz", x=rng_data(1, 3, 4, 4))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [SPEC], None)
    assert_one_line_error(excinfo, "mixes .npz")


def test_normalization_without_images_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", rng_data(1, 3, 4, 4))
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(tmp_path, [SPEC], None, mean=0.5)
    assert_one_line_error(excinfo, "images only")
    with pytest.raises(CalibrationError):
        load_samples([rng_data(1, 3, 4, 4)], [SPEC], None, std=2.0)


@pytest.mark.parametrize("kwargs", [{"std": 0.0}, {"scale": -1.0}, {"mean": "abc"}])
def test_invalid_normalization_values(tmp_path, kwargs):
    with pytest.raises(CalibrationError):
        load_samples(tmp_path, [SPEC], None, **kwargs)


def test_bad_limit_and_source_type(tmp_path):
    with pytest.raises(CalibrationError):
        load_samples(tmp_path, [SPEC], 0)
    with pytest.raises(CalibrationError) as excinfo:
        load_samples(42, [SPEC], None)
    assert_one_line_error(excinfo, "int")


# ---- specs from a graph ----------------------------------------------------------------------


def test_graph_input_specs_maps_nhwc_back_to_onnx_layout():
    graph = Graph()
    graph.add_tensor(Tensor("image", DType.FLOAT32, (1, 8, 6, 3), layout=Layout.NHWC))
    graph.add_tensor(Tensor("ids", DType.INT64, (1, 5)))
    graph.inputs = ["image", "ids"]
    assert graph_input_specs(graph) == [InputSpec("image", (1, 3, 8, 6), F32),
                                        InputSpec("ids", (1, 5), np.int64)]
