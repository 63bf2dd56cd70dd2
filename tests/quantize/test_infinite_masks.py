"""Full quantization of attention under a constant causal mask of -inf (torch's
nn.Transformer.generate_square_subsequent_mask, as the TorchScript exporter writes it) or of
finfo(float32).min (the dynamo exporter's, and transformers'): the sum holding -inf stopped
calibration ("tensor 'm' (output of ADD ...) holds Inf values"), and finfo.min kept the ADD and the
SOFTMAX float. Both now run integer, the fill quantized onto the range the softmax resolves, and
the -inf file is as accurate as the finfo.min one. Judged against onnxruntime's float output on the
worst of 16 held-out samples, with each calibration engine."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import save_graph, save_model, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.errors import CalibrationError
from tflq.pipeline import convert

T = 32
# measured worst of 16: uint8 30.3, int8 25.7, int16x8 45.0 dB (the finfo.min mask's float ADD and
# SOFTMAX before: 36.0 (with a float BATCH_MATMUL after them: uint8 has none for 8 x 8 bits), 26.3,
# 45.3; the sum's grid ending at its calibrated top, below what a held-out score reached: int8 21.5)
FLOORS = {"uint8": 27.0, "int8": 23.0, "int16x8": 40.0}


def _causal(tmp_path, fill: float, mask: np.ndarray | None = None, extra_reader: bool = False) -> str:
    if mask is None:
        mask = np.triu(np.full((T, T), fill, np.float32), 1)
    w = np.random.default_rng(0).standard_normal((T, T)).astype(np.float32) / 4
    nodes = [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Add", ["s", "mask"], ["m"]),
             helper.make_node("Softmax", ["m"], ["p"], axis=-1)]
    nodes += [helper.make_node("MatMul", ["p", "x"], ["y"])]  # the weights applied to the values
    if extra_reader:  # the mask also read by something that is not a masked softmax
        nodes[-1].output[0] = "a"
        nodes += [helper.make_node("Mul", ["a", "mask"], ["y"])]
    return save_graph(tmp_path / "causal.onnx", nodes, {"x": [1, T, T]}, "y",
                      [numpy_helper.from_array(w, "w"), numpy_helper.from_array(mask, "mask")], opset=17)


def _samples(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, T, T)).astype(np.float32)} for _ in range(count)]


@pytest.mark.parametrize("engine", ["onnxruntime", "numpy"])
@pytest.mark.parametrize("dtype", sorted(FLOORS))
def test_causal_mask_runs_integer(dtype, engine, tmp_path):
    worst = {}
    for label, fill in (("-inf", -np.inf), ("finfo.min", float(np.finfo(np.float32).min))):
        path = _causal(tmp_path, fill)
        report = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=_samples(1, 8),
                                       calib_engine=engine))
        assert not {op.kind for op in report.float_ops} & {"ADD", "SOFTMAX"}, report.to_text()
        assert report.calibration["engine"] == engine
        worst[label] = worst_sqnr_db(path, report.tflite, _samples(2, 16))
        assert worst[label] >= FLOORS[dtype], f"{label} {dtype}: worst {worst[label]:.1f} dB"
    assert worst["-inf"] >= worst["finfo.min"] - 0.1, worst


def test_fully_masked_row_still_refused(tmp_path):
    """A row of -inf only is NaN in onnxruntime's softmax: no finite fill computes that, so the
    sum's infinity is reported as before, naming the tensor."""
    mask = np.triu(np.full((T, T), -np.inf, np.float32), 1)
    mask[3] = -np.inf
    path = _causal(tmp_path, 0.0, mask=mask)
    with pytest.raises(CalibrationError, match="tensor 'm' .*holds Inf values"):
        convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=_samples(1, 2)))


def test_mask_read_elsewhere_still_refused(tmp_path):
    """The fill changes only where the softmax ignores it; another reader of the -inf constant
    would see the change, so the constant stays and calibration reports the infinity."""
    path = _causal(tmp_path, -np.inf, extra_reader=True)
    with pytest.raises(CalibrationError, match="holds Inf values"):
        convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=_samples(1, 2)))


def test_weights_only_keeps_minus_infinity(tmp_path):
    """Only full quantization replaces the fill (float arithmetic takes -inf as it is)."""
    path = _causal(tmp_path, -np.inf)
    report = convert(ConvertConfig(model=path, mode="weights-only", dtype="int8", min_weight_elements=256))
    assert worst_sqnr_db(path, report.tflite, _samples(2, 4)) >= 30.0


# measured worst of 16: uint8 30.0, int8 29.3 integer (34.9 and 30.1 with the masks, their sums and
# the softmax float, as when the merged mask was not narrowed), int16x8 44.7 (float: no SELECT_V2)
PADDED_FLOORS = {"uint8": 27.0, "int8": 26.0, "int16x8": 40.0}


@pytest.mark.parametrize("dtype", sorted(PADDED_FLOORS))
def test_causal_and_key_padding_masks(dtype, tmp_path):
    """nn.TransformerDecoder with tgt_mask and tgt_key_padding_mask: the padding mask is
    Where(padding, -inf, 0), reshaped and added to the causal constant before the scores (torch's
    merge_masks); it stopped calibration as the causal mask alone did, then stayed float."""
    rng = np.random.default_rng(3)
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w"], ["s"]), n("Where", ["pad", "minus_inf", "zero"], ["padding"]),
             n("Reshape", ["padding", "shape"], ["padding3"]), n("Add", ["causal", "padding3"], ["merged"]),
             n("Add", ["s", "merged"], ["m"]), n("Softmax", ["m"], ["p"], axis=-1), n("MatMul", ["p", "x"], ["y"])]
    inits = [numpy_helper.from_array((rng.standard_normal((T, T)) / 4).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(-np.inf, np.float32), "minus_inf"),
             numpy_helper.from_array(np.zeros((1, T), np.float32), "zero"),
             numpy_helper.from_array(np.array([1, 1, T], np.int64), "shape"),
             numpy_helper.from_array(np.triu(np.full((T, T), -np.inf, np.float32), 1), "causal")]
    graph = helper.make_graph(nodes, "padded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, T]),
                                                helper.make_tensor_value_info("pad", TensorProto.BOOL, [1, T])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, T])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = save_model(model, tmp_path / "padded.onnx")

    def samples(seed, count):
        r = np.random.default_rng(seed)
        out = []
        for _ in range(count):
            pad = np.zeros((1, T), bool)
            pad[:, int(r.integers(1, T + 1)):] = True  # the first position is never padding
            out.append({"x": r.standard_normal((1, T, T)).astype(np.float32), "pad": pad})
        return out

    report = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=samples(1, 8)))
    if dtype != "int16x8":  # the merged mask is narrowed like its constants: all integer
        assert not {op.kind for op in report.float_ops} & {"ADD", "SELECT_V2", "SOFTMAX"}, report.to_text()
    worst = worst_sqnr_db(path, report.tflite, samples(2, 16))
    assert worst >= PADDED_FLOORS[dtype], f"{dtype}: worst {worst:.1f} dB"
