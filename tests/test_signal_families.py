"""Reduced cases from probing exported speech, recurrent, 1-D signal, detection/segmentation and
control-flow models (torch.onnx.export of wav2vec2-style extractors, KWS CNNs, conformer conv
modules, mel front ends, TCNs, vocoders, YOLO decodes, UNets), each judged against onnxruntime on
the worst sample, with the file run in LiteRT."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import save_model, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.errors import UnsupportedModelError
from tflq.pipeline import convert


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                                           for n, s in inputs.items()],
                              [helper.make_tensor_value_info(n, t, s) for n, (t, s) in outputs.items()],
                              list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("ftype", [TensorProto.DOUBLE, TensorProto.FLOAT16])
def test_float64_and_float16_values_compute_in_float32(ftype, tmp_path):
    """YOLOv8's anchor grid traced from torch.arange(h) + 0.5 is float64 in the export: Casts to
    double feed a Concat with the float32 class scores and the graph output is double. Float-to-float
    Casts were aliases but the values kept their ONNX type, so the file held a FLOAT64 ADD and
    CONCATENATION next to float32 ones and LiteRT refused it at prepare (concatenation.cc: output
    FLOAT64 != input FLOAT32; add.cc FLOAT32 != FLOAT16 for float16). Every float value now
    computes in float32 and the note says so of a double output; a float16 output stays float16
    (a CAST of the float32 result), as tests/test_float16.py checks of float16 models."""
    np_type = helper.tensor_dtype_to_np_dtype(ftype)
    nodes = [helper.make_node("Cast", ["x"], ["xd"], to=ftype),
             helper.make_node("Add", ["xd", "anchor"], ["box"]),
             helper.make_node("Sigmoid", ["x"], ["score"]),
             helper.make_node("Cast", ["score"], ["scored"], to=ftype),
             helper.make_node("Concat", ["box", "scored"], ["y"], axis=1)]
    anchor = numpy_helper.from_array((np.arange(6) + 0.5).astype(np_type).reshape(1, 6), "anchor")
    path = save_model(_model(nodes, {"x": [1, 6]}, {"y": (ftype, [1, 12])}, [anchor]), tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(0, 2, (1, 6)).astype(np.float32)} for _ in range(4)]
    report = convert(ConvertConfig(model=path))
    if ftype == TensorProto.DOUBLE:
        assert any("output 'y'" in n and "float32" in n for n in report.notes), report.notes
    else:
        assert report.op_counts.get("CAST") == 1, report.op_counts
    assert worst_sqnr_db(path, report.tflite, feeds) >= (100.0 if ftype == TensorProto.DOUBLE else 60.0)
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=feeds))
    assert worst_sqnr_db(path, report.tflite, feeds) >= 30.0


def _sequence_info(name: str) -> onnx.ValueInfoProto:
    return helper.make_value_info(name, helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [1, 4])))


def _list_in_a_loop(opset: int) -> onnx.ModelProto:
    """What torch.jit.script makes of `ys = []; for t in range(3): h = tanh(h @ W + x[t]);
    ys.append(h)`, then torch.stack(ys, 1), ys[-1] * len(ys) and torch.unbind(x)[1]: a
    SequenceEmpty carried through a Loop with a SequenceInsert per iteration, read by
    ConcatFromSequence(new_axis=1), SequenceAt, SequenceLength; and SplitToSequence(keepdims=0)."""
    rng = np.random.default_rng(0)
    body = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["xt"], axis=0),
         helper.make_node("MatMul", ["h", "W"], ["hw"]), helper.make_node("Add", ["hw", "xt"], ["s"]),
         helper.make_node("Tanh", ["s"], ["h2"]), helper.make_node("SequenceInsert", ["ys", "h2"], ["ys2"]),
         helper.make_node("Identity", ["c"], ["c2"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 4]),
                 _sequence_info("ys")],
        [helper.make_tensor_value_info("c2", TensorProto.BOOL, []),
         helper.make_tensor_value_info("h2", TensorProto.FLOAT, [1, 4]),
         _sequence_info("ys2")])
    nodes = [helper.make_node("SequenceEmpty", [], ["empty"], dtype=TensorProto.FLOAT),
             helper.make_node("Loop", ["trips", "", "h0", "empty"], ["hT", "hs"], body=body),
             helper.make_node("ConcatFromSequence", ["hs"], ["stacked"], axis=1, new_axis=1),
             helper.make_node("SequenceAt", ["hs", "minus1"], ["last"]),
             helper.make_node("SequenceLength", ["hs"], ["n"]),
             helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["last", "nf"], ["scaled"]),
             helper.make_node("SplitToSequence", ["x"], ["steps"], axis=0, keepdims=0),
             helper.make_node("SequenceAt", ["steps", "one"], ["x1"]),
             helper.make_node("Add", ["scaled", "x1"], ["y"])]
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (4, 4)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array(3, np.int64), "trips"),
             numpy_helper.from_array(np.array(-1, np.int64), "minus1"),
             numpy_helper.from_array(np.array(1, np.int64), "one")]
    return _model(nodes, {"x": [3, 1, 4], "h0": [1, 4]},
                  {"stacked": (TensorProto.FLOAT, [1, 3, 4]), "y": (TensorProto.FLOAT, [1, 4])}, inits, opset)


@pytest.mark.parametrize("opset", [13, 17])  # Loop carries sequences from opset 13
def test_a_list_appended_in_a_scripted_loop(opset, tmp_path):
    """A scripted LSTMCell loop that appends to a list (the streaming form of a speech encoder) was
    refused (SequenceInsert, ConcatFromSequence: no converter) although the Loop unrolls: once it
    does, every sequence is a known list of tensors, and its readers become Concat and Identity."""
    path = save_model(_list_in_a_loop(opset), tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(0, 1, (3, 1, 4)).astype(np.float32),
              "h0": rng.normal(0, 1, (1, 4)).astype(np.float32)} for _ in range(4)]
    report = convert(ConvertConfig(model=path))
    assert worst_sqnr_db(path, report.tflite, feeds) >= 100.0
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=feeds))
    assert worst_sqnr_db(path, report.tflite, feeds) >= 25.0


def test_a_sequence_read_at_a_data_dependent_position_is_named(tmp_path):
    model = _list_in_a_loop(17)
    graph = model.graph
    at = next(n for n in graph.node if n.op_type == "SequenceAt" and n.input[1] == "one")
    graph.node.insert(0, helper.make_node("ArgMax", ["h0"], ["where"], name="argmax", axis=1, keepdims=0))
    graph.node.insert(1, helper.make_node("Squeeze", ["where"], ["where0"], name="squeeze"))
    at.input[1], at.name = "where0", "pick"
    path = save_model(model, tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic.node, diagnostic.reason_code) == ("pick", "data_dependent_sequence")


def test_a_sequence_graph_output_is_named(tmp_path):
    model = _list_in_a_loop(17)
    model.graph.output.append(helper.make_value_info("hs", helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [1, 4]))))
    path = save_model(model, tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModelError) as info:  # it was an internal error
        convert(ConvertConfig(model=path))
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.reason_code == "sequence_output" and "'hs'" in diagnostic.message


def _stft_model(signal_shape, onesided: int, window: bool) -> onnx.ModelProto:
    """torch.stft(x, 64, hop_length=16, window=hann, return_complex=False) as torch exports it
    (a [batch, length] signal, opset 17), then power = re^2 + im^2 and a mel-like MatMul + Log."""
    rng = np.random.default_rng(0)
    n = 64
    bins = n // 2 + 1 if onesided else n
    inputs = ["x", "step", "window" if window else "", "length"]
    nodes = [helper.make_node("STFT", inputs, ["spec"], name="stft", onesided=onesided),
             helper.make_node("Mul", ["spec", "spec"], ["sq"]),
             helper.make_node("ReduceSum", ["sq", "last"], ["power"], keepdims=0),
             helper.make_node("MatMul", ["power", "fb"], ["mel"]),
             helper.make_node("Add", ["mel", "eps"], ["mel_eps"]),
             helper.make_node("Log", ["mel_eps"], ["y"])]
    inits = [numpy_helper.from_array(np.array(16, np.int64), "step"),
             numpy_helper.from_array(np.array(n, np.int64), "length"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(rng.uniform(0, 1, (bins, 10)).astype(np.float32), "fb"),
             numpy_helper.from_array(np.array(1e-3, np.float32), "eps")]
    if window:
        inits.append(numpy_helper.from_array((0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32),
                                             "window"))
    frames = (signal_shape[1] - n) // 16 + 1
    return _model(nodes, {"x": list(signal_shape)}, {"y": (TensorProto.FLOAT, [1, frames, 10])}, inits)


@pytest.mark.parametrize("signal_shape, onesided, window", [((1, 400), 1, True), ((1, 400, 1), 1, False),
                                                           ((1, 400, 2), 0, True)])
def test_stft_is_a_convolution_with_the_dft_basis(signal_shape, onesided, window, tmp_path):
    """torch.stft exports as STFT (torchaudio's Spectrogram and MelSpectrogram too): it had no
    converter. With a constant step, window and frame length it is a strided Conv of the windowed
    cos/-sin basis, integer in full int8."""
    path = save_model(_stft_model(signal_shape, onesided, window), tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(0, 1, signal_shape).astype(np.float32)} for _ in range(4)]
    report = convert(ConvertConfig(model=path))
    assert worst_sqnr_db(path, report.tflite, feeds) >= 80.0
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=feeds))
    assert not report.float_ops
    assert worst_sqnr_db(path, report.tflite, feeds) >= 30.0


def test_stft_with_a_computed_window_is_named(tmp_path):
    model = _stft_model((1, 400), 1, True)
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "window"))
    model.graph.input.append(helper.make_tensor_value_info("window", TensorProto.FLOAT, [64]))
    path = save_model(model, tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic.node, diagnostic.reason_code) == ("stft", "data_dependent_stft")


@pytest.mark.parametrize("opset", [11, 16])
def test_scan_rnn_below_opset_13(opset, tmp_path):
    """An RNN cell written as a Scan (h = tanh(x_t W + h U), every h stacked on axis 1) in an
    opset 9-12 model: its stacked outputs were opset-13 Unsqueezes (axes as an input), each refused
    as invalid there; they follow the model's opset, as an unrolled Loop's do."""
    rng = np.random.default_rng(0)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["xt", "W"], ["a"]), helper.make_node("MatMul", ["h", "U"], ["b"]),
         helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Tanh", ["s"], ["h2"]),
         helper.make_node("Identity", ["h2"], ["yt"])],
        "body", [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 8]),
                 helper.make_tensor_value_info("xt", TensorProto.FLOAT, [1, 6])],
        [helper.make_tensor_value_info("h2", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("yt", TensorProto.FLOAT, [1, 8])])
    nodes = [helper.make_node("Scan", ["h0", "x"], ["hT", "y"], num_scan_inputs=1, body=body,
                              scan_output_axes=[1])]
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, (6, 8)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, 0.4, (8, 8)).astype(np.float32), "U")]
    model = _model(nodes, {"h0": [1, 8], "x": [5, 1, 6]},
                   {"hT": (TensorProto.FLOAT, [1, 8]), "y": (TensorProto.FLOAT, [1, 5, 8])}, inits, opset)
    path = save_model(model, tmp_path / "m.onnx")
    feeds = [{"h0": rng.normal(0, 1, (1, 8)).astype(np.float32),
              "x": rng.normal(0, 1, (5, 1, 6)).astype(np.float32)} for _ in range(4)]
    report = convert(ConvertConfig(model=path))
    assert worst_sqnr_db(path, report.tflite, feeds) >= 100.0
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=feeds))
    assert worst_sqnr_db(path, report.tflite, feeds) >= 25.0


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("lens_input", [True, False])
def test_recurrent_sequence_lens_shorter_than_the_sequence(kind, lens_input, tmp_path):
    """torch's pack_padded_sequence exports as the recurrent node's sequence_lens (a lengths graph
    input, int32): refused unless every length was the full sequence. Past its length an entry
    outputs 0 and keeps its state (the reverse direction starts at its last valid step), which a
    per-step 0/1 mask computed in the file reproduces; Y and Y_h of both directions, batch 2."""
    rng = np.random.default_rng(0)
    gates, steps, batch, width, hidden = {"LSTM": 4, "GRU": 3, "RNN": 1}[kind], 6, 2, 3, 5
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (2, gates * hidden, width)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, 0.5, (2, gates * hidden, hidden)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.normal(0, 0.2, (2, 2 * gates * hidden)).astype(np.float32), "B")]
    inputs = {"x": [steps, batch, width]}
    if not lens_input:
        inits.append(numpy_helper.from_array(np.array([4, 6], np.int32), "lens"))
    attrs = {"linear_before_reset": 1} if kind == "GRU" else {}
    nodes = [helper.make_node(kind, ["x", "W", "R", "B", "lens"], ["y", "y_h"], hidden_size=hidden,
                              direction="bidirectional", **attrs)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, inputs["x"])]
        + ([helper.make_tensor_value_info("lens", TensorProto.INT32, [batch])] if lens_input else []),
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, 2, batch, hidden]),
         helper.make_tensor_value_info("y_h", TensorProto.FLOAT, [2, batch, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    path = save_model(model, tmp_path / "m.onnx")
    feeds = []
    for lens in ([6, 3], [1, 6], [0, 5], [6, 6]) if lens_input else ([4, 6],) * 4:
        feed = {"x": rng.normal(0, 1, (steps, batch, width)).astype(np.float32)}
        if lens_input:
            feed["lens"] = np.array(lens, np.int32)
        feeds.append(feed)
    report = convert(ConvertConfig(model=path))
    assert worst_sqnr_db(path, report.tflite, feeds) >= 100.0
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=feeds))
    assert worst_sqnr_db(path, report.tflite, feeds) >= 25.0
