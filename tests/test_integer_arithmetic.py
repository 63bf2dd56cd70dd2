"""Length arithmetic as sequence models write it, on int64 (Speech2Text's subsampled lengths,
(sum(attention_mask) - 1) // 2 + 1 twice, from its attention mask): LiteRT has no int64
division, so the ONNX Div of int64 was refused ("div_type"); tflq computes it from int64
FLOOR_MOD and float32 estimates corrected in int64, exactly, and in full int8 those float ops
stay float, as the same arithmetic written in float by torch ((length.float() / 3).floor().long())
does: quantized, a grid's rounding made other lengths of it. Against onnxruntime: the lengths
exactly, a float output computed with them within quantization error."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import run_litert, run_onnxruntime, save_model
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

T = 300


def _lengths_model() -> onnx.ModelProto:
    one, two, axis = (numpy_helper.from_array(np.array(v, np.int64), n)
                      for v, n in ((1, "one"), (2, "two"), ([1], "axis")))
    three = numpy_helper.from_array(np.array(3.0, np.float32), "three")
    nodes = [helper.make_node("ReduceSum", ["attention_mask", "axis"], ["length"], keepdims=1)]
    value = "length"
    for step in range(2):  # two stride-2 convolutions: (length - 1) // 2 + 1
        nodes += [helper.make_node("Sub", [value, "one"], [f"less{step}"]),
                  helper.make_node("Div", [f"less{step}", "two"], [f"half{step}"]),
                  helper.make_node("Add", [f"half{step}", "one"], [f"sub{step}"])]
        value = f"sub{step}"
    # torch's (length.float() / 3).floor().long(), the same arithmetic written in float
    nodes += [helper.make_node("Cast", ["length"], ["length_f"], to=TensorProto.FLOAT),
              helper.make_node("Div", ["length_f", "three"], ["third_f"]),
              helper.make_node("Floor", ["third_f"], ["floor_f"]),
              helper.make_node("Cast", ["floor_f"], ["thirds"], to=TensorProto.INT64)]
    nodes += [helper.make_node("Identity", [value], ["lengths"]),
              helper.make_node("Cast", [value], ["length_float"], to=TensorProto.FLOAT),
              helper.make_node("Mul", ["x", "length_float"], ["scaled"]),
              helper.make_node("Tanh", ["scaled"], ["y"])]
    graph = helper.make_graph(
        nodes, "lengths",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, T])],
        [helper.make_tensor_value_info("lengths", TensorProto.INT64, [1, 1]),
         helper.make_tensor_value_info("thirds", TensorProto.INT64, [1, 1]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [one, two, axis, three])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _samples(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 0.01, (1, 4)).astype(np.float32),
             "attention_mask": (np.arange(T)[None] < rng.integers(1, T + 1)).astype(np.int64)}
            for _ in range(count)]


def test_int64_lengths_exact(tmp_path):
    path = save_model(_lengths_model(), tmp_path / "lengths.onnx")
    held = _samples(1, 24) + [{"x": np.full((1, 4), 0.01, np.float32),
                              "attention_mask": (np.arange(T)[None] < k).astype(np.int64)} for k in (1, 2, 3, T)]
    for config in (dict(), dict(mode="full", dtype="int8", calib=_samples(2, 16)),
                   dict(mode="full", dtype="uint8", calib=_samples(2, 16))):
        report = convert(ConvertConfig(model=path, **config))
        if config:
            assert {op.kind for op in report.float_ops if "integers that become integers" in op.reason} == {"DIV"}
        for sample in held:
            want, got = run_onnxruntime(path, sample), run_litert(report.tflite, list(sample.values()))
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            assert sqnr_db(want[2], got[2]) > (80 if not config else 10)


BUCKETS, EXACT, MAX_DISTANCE = 8, 4, 16


def _bucket_model() -> onnx.ModelProto:
    """T5's log-spaced relative position buckets of run-time positions (LongT5's transient-global
    attention computes them from the attention mask): |p| below EXACT is its own bucket, beyond it
    EXACT + log(|p| / EXACT) / log(MAX_DISTANCE / EXACT) * (BUCKETS - EXACT), cast to int64 and
    clamped, gathering a learned bias that is added to x. log(|p| / EXACT) is -inf at p = 0, the
    Where then picks the exact bucket: float, and onnxruntime, compute through the -inf."""
    consts = {"exact": np.array(EXACT, np.int64), "exact_f": np.array(float(EXACT), np.float32),
              "log_ratio": np.array(np.log(MAX_DISTANCE / EXACT), np.float32),
              "span": np.array(float(BUCKETS - EXACT), np.float32), "top": np.array(BUCKETS - 1, np.int64),
              "bias": np.random.default_rng(3).normal(0, 1, (BUCKETS, 4)).astype(np.float32)}
    nodes = [helper.make_node("Abs", ["position"], ["distance"]),
             helper.make_node("Less", ["distance", "exact"], ["small"]),
             helper.make_node("Cast", ["distance"], ["distance_f"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["distance_f", "exact_f"], ["ratio"]),
             helper.make_node("Log", ["ratio"], ["log"]),
             helper.make_node("Div", ["log", "log_ratio"], ["scaled"]),
             helper.make_node("Mul", ["scaled", "span"], ["spread"]),
             helper.make_node("Cast", ["spread"], ["spread_i"], to=TensorProto.INT64),
             helper.make_node("Add", ["spread_i", "exact"], ["large"]),
             helper.make_node("Min", ["large", "top"], ["clamped"]),
             helper.make_node("Where", ["small", "distance", "clamped"], ["bucket"]),
             helper.make_node("Gather", ["bias", "bucket"], ["position_bias"]),
             helper.make_node("Add", ["x", "position_bias"], ["y"])]
    graph = helper.make_graph(
        nodes, "buckets",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 12, 4]),
         helper.make_tensor_value_info("position", TensorProto.INT64, [1, 12])],
        [helper.make_tensor_value_info("bucket", TensorProto.INT64, [1, 12]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12, 4])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _bucket_samples(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (1, 12, 4)).astype(np.float32),
             "position": np.concatenate([[0, 0], rng.integers(-40, 41, 10)])[None].astype(np.int64)}
            for _ in range(count)]


def test_relative_position_buckets_exact(tmp_path):
    """The buckets exactly, in float and full int8/uint8: int64 Abs (which LiteRT's ABS has no
    kernel for: a file with one failed to prepare) is MAXIMUM(x, NEG(x)); the float arithmetic
    between the int64 positions and buckets stays float, and calibration no longer records its
    tensors, whose log(0) = -inf stopped it ('holds Inf values') though no grid is made for them."""
    path = save_model(_bucket_model(), tmp_path / "buckets.onnx")
    held = _bucket_samples(1, 8)
    for config in (dict(), dict(mode="full", dtype="int8", calib=_bucket_samples(2, 8)),
                   dict(mode="full", dtype="uint8", calib=_bucket_samples(2, 8))):
        report = convert(ConvertConfig(model=path, **config))
        assert "ABS" not in report.op_counts
        if config:
            assert {op.kind for op in report.float_ops} >= {"LOG", "DIV", "MUL"}
        for sample in held:
            want, got = run_onnxruntime(path, sample), run_litert(report.tflite, list(sample.values()))
            np.testing.assert_array_equal(got[0], want[0])
            assert sqnr_db(want[1], got[1]) > (80 if not config else 25)
