"""ONNX LSTM, GRU and RNN, unrolled (tflq.ops.recurrent): float against onnxruntime on the worst of
8 inputs, weights-only and full int8 files that LiteRT runs (full int8 SQNR checked against a
floor and printed by `-s`), the streaming pattern (state in, state out), batch-first layout, and a
CRNN (conv front-end, bidirectional LSTM, per-frame Gemm head)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import litert_interpreter, run_onnxruntime
from tflq.config import ConvertConfig
from tflq.ir.quant import sqnr_db
from tflq.pipeline import convert

FLOAT_SQNR_DB = 80.0
# Full int8 on the worst of 8 random samples: typically 25-35 dB, down to ~15 dB where one
# sample drives a small output (Y_h of a bidirectional GRU) past the calibrated range.
INT8_SQNR_FLOOR_DB = 12.0
SAMPLES = 8
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_model(kind: str, steps: int, batch: int, inputs: int, hidden: int, seed: int,
                    direction: str = "forward", states: bool = False, outputs=("Y",),
                    layout: int = 0, **attrs) -> onnx.ModelProto:
    """One LSTM/GRU/RNN node with seeded weights; `states` makes initial_h (and initial_c) graph
    inputs, as a streaming model that feeds its last state back in."""
    rng = np.random.default_rng(seed)
    d = 2 if direction == "bidirectional" else 1
    g = GATES[kind]
    scale = 1 / np.sqrt(hidden)
    inits = [numpy_helper.from_array(rng.uniform(-scale, scale, shape).astype(np.float32), name)
             for name, shape in (("W", (d, g * hidden, inputs)), ("R", (d, g * hidden, hidden)),
                                 ("B", (d, 2 * g * hidden)))]
    x_shape = [steps, batch, inputs] if layout == 0 else [batch, steps, inputs]
    state_shape = [d, batch, hidden] if layout == 0 else [batch, d, hidden]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    names = ["X", "W", "R", "B"]
    if states:
        names += ["", "initial_h"] + (["initial_c"] if kind == "LSTM" else [])
        graph_inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, state_shape)
                         for n in names[5:]]
    all_outputs = ["Y", "Y_h", "Y_c"][:3 if kind == "LSTM" else 2]
    node_outputs = [n if n in outputs else "" for n in all_outputs]
    while not node_outputs[-1]:
        node_outputs.pop()
    node = helper.make_node(kind, names, node_outputs, hidden_size=hidden, direction=direction,
                            layout=layout, **attrs)
    graph = helper.make_graph([node], kind.lower(), graph_inputs,
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def time_major_equivalent(model: onnx.ModelProto) -> onnx.ModelProto:
    """The layout=1 model as a layout=0 one with Transposes around it (onnxruntime runs only layout 0)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    node = m.graph.node[0]
    layout = next(a for a in node.attribute if a.name == "layout")
    layout.i = 0
    renamed = []
    for i, name in enumerate(node.input):
        if name == "X":
            renamed.append(helper.make_node("Transpose", ["X"], ["X_tm"], perm=[1, 0, 2]))
            node.input[i] = "X_tm"
        elif name in ("initial_h", "initial_c"):
            renamed.append(helper.make_node("Transpose", [name], [f"{name}_tm"], perm=[1, 0, 2]))
            node.input[i] = f"{name}_tm"
    after = []
    for i, name in enumerate(node.output):
        if name:
            node.output[i] = f"{name}_tm"
            perm = [2, 0, 1, 3] if name == "Y" else [1, 0, 2]
            after.append(helper.make_node("Transpose", [f"{name}_tm"], [name], perm=perm))
    nodes = renamed + [node] + after
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.value_info[:]
    return m


def _samples(model: onnx.ModelProto, count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    def sample(name, shape):  # states as a running model leaves them: hidden states in (-1, 1)
        value = rng.standard_normal(shape)
        return np.tanh(value) if name.startswith("initial") else value

    return [{n: sample(n, s).astype(np.float32) for n, s in shapes.items()} for _ in range(count)]


def run_file(tflite: bytes, model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    """Run in LiteRT; 3-D sequence inputs keep the ONNX order, 4-D I/O is NHWC; 8-bit I/O is
    (de)quantized with the file's parameters."""
    interpreter = litert_interpreter(tflite)
    by_name = {d["name"]: d for d in interpreter.get_input_details()}
    for vi in model.graph.input:
        detail = by_name[vi.name]
        value = feeds[vi.name]
        if value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)
        if detail["dtype"] != np.float32:
            scale, zp = detail["quantization"]
            value = np.round(value / scale) + zp
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(value.astype(detail["dtype"])))
    interpreter.invoke()
    outs = {d["name"]: d for d in interpreter.get_output_details()}
    results = []
    for vi in model.graph.output:
        detail = outs[vi.name]
        value = interpreter.get_tensor(detail["index"])
        if detail["dtype"] != np.float32:
            scale, zp = detail["quantization"]
            value = (value.astype(np.float32) - zp) * scale
        if value.ndim == 4:  # 4-D outputs are NHWC by default (Y [T, D, B, H] too)
            value = value.transpose(0, 3, 1, 2)
        results.append(value)
    return results


def worst_sqnr(oracle, model, tflite: bytes, samples) -> float:
    worst = float("inf")
    for feeds in samples:
        for e, a in zip(run_onnxruntime(oracle, feeds), run_file(tflite, model, feeds)):
            assert a.shape == e.shape
            worst = min(worst, sqnr_db(e, a))
    return worst


def check_model(model: onnx.ModelProto, tmp_path, oracle=None, int8_floor=INT8_SQNR_FLOOR_DB) -> dict:
    """Float >= 80 dB on the worst of 8 samples; weights-only and full int8 run in LiteRT."""
    path = str(tmp_path / "model.onnx")
    onnx.save(model, path)
    oracle = oracle if oracle is not None else model
    samples = _samples(model, SAMPLES, seed=11)
    report = convert(ConvertConfig(model=path))
    result = {"float": worst_sqnr(oracle, model, report.tflite, samples),
              "transposes": report.op_counts.get("TRANSPOSE", 0), "seconds": report.seconds}
    assert result["float"] >= FLOAT_SQNR_DB, result
    weights = convert(ConvertConfig(model=path, mode="weights-only", dtype="int8", min_weight_elements=16))
    result["weights_only"] = worst_sqnr(oracle, model, weights.tflite, samples[:2])
    assert result["weights_only"] >= 30.0, result
    full = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=_samples(model, 32, seed=12)))
    assert not full.float_ops, [op.reason for op in full.float_ops]  # integer throughout
    result["int8"] = worst_sqnr(oracle, model, full.tflite, samples)
    print(f"\n{model.graph.name}: {result}")
    assert result["int8"] >= int8_floor, result
    return result


CELLS = [
    ("LSTM", dict(steps=6, batch=1, inputs=8, hidden=16)),
    ("LSTM", dict(steps=3, batch=3, inputs=5, hidden=8, direction="reverse", outputs=("Y", "Y_h", "Y_c"))),
    ("LSTM", dict(steps=10, batch=2, inputs=6, hidden=12, direction="bidirectional", outputs=("Y", "Y_h"))),
    ("LSTM", dict(steps=4, batch=2, inputs=4, hidden=8, outputs=("Y_h",),
                  activations=["Sigmoid", "Relu", "Tanh"])),
    ("GRU", dict(steps=7, batch=1, inputs=8, hidden=16, outputs=("Y", "Y_h"))),
    ("GRU", dict(steps=5, batch=2, inputs=6, hidden=10, linear_before_reset=1)),
    ("GRU", dict(steps=4, batch=3, inputs=5, hidden=8, direction="bidirectional", linear_before_reset=1,
                 outputs=("Y", "Y_h"))),
    ("GRU", dict(steps=6, batch=2, inputs=4, hidden=8, direction="reverse")),
    ("RNN", dict(steps=8, batch=2, inputs=6, hidden=12, outputs=("Y", "Y_h"))),
    ("RNN", dict(steps=5, batch=1, inputs=4, hidden=8, direction="bidirectional")),
    ("RNN", dict(steps=4, batch=2, inputs=5, hidden=6, activations=["Relu"])),
    # Keras LSTMs through tf2onnx: hard_sigmoid gates
    ("LSTM", dict(steps=5, batch=2, inputs=6, hidden=8, direction="bidirectional",
                  activations=["HardSigmoid", "Tanh", "Tanh"] * 2, activation_alpha=[0.2, 0.25],
                  activation_beta=[0.5, 0.45])),
    ("GRU", dict(steps=4, batch=1, inputs=5, hidden=8, activations=["LeakyRelu", "ScaledTanh"],
                 activation_alpha=[0.1, 0.9], activation_beta=[1.2])),
    ("RNN", dict(steps=4, batch=2, inputs=5, hidden=6, activations=["Affine"], activation_alpha=[0.5],
                 activation_beta=[0.1])),
]


@pytest.mark.parametrize("kind,attrs", CELLS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CELLS)])
def test_recurrent_cell(kind, attrs, tmp_path):
    check_model(recurrent_model(kind, seed=CELLS.index((kind, attrs)), **attrs), tmp_path)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_streaming_state_in_state_out(kind, tmp_path):
    """initial_h/initial_c are graph inputs and Y_h/Y_c graph outputs: one chunk of a stream."""
    outputs = ("Y", "Y_h", "Y_c") if kind == "LSTM" else ("Y", "Y_h")
    model = recurrent_model(kind, steps=4, batch=1, inputs=8, hidden=16, seed=21, states=True,
                            outputs=outputs, direction="bidirectional" if kind == "GRU" else "forward",
                            **({"linear_before_reset": 1} if kind == "GRU" else {}))
    check_model(model, tmp_path)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_batch_first_layout(kind, tmp_path):
    """layout=1 ([B, T, I]); the oracle is onnxruntime on the equivalent time-major model."""
    model = recurrent_model(kind, steps=5, batch=2, inputs=6, hidden=8, seed=31, states=True,
                            direction="bidirectional", outputs=("Y", "Y_h"), layout=1)
    check_model(model, tmp_path, oracle=time_major_equivalent(model))


def crnn_model(seed: int = 41) -> onnx.ModelProto:
    """Text-line recognizer: [1, 1, 16, 40] image -> Conv/BN/ReLU, MaxPool (height to 1), a 1-D conv,
    Squeeze -> Transpose to [W, N, C] -> bidirectional LSTM -> Transpose/Reshape -> MatMul+Add head
    -> [W, N, classes] (the shape a CTC decoder reads)."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def normal(shape, fan_in):
        return rng.normal(0, np.sqrt(2.0 / fan_in), shape)

    c1, c2, hidden, classes = 8, 16, 16, 11
    nodes.append(helper.make_node("Conv", ["img", const("w1", normal((c1, 1, 3, 3), 9)), const("b1", np.zeros(c1))],
                                  ["c1"], pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("BatchNormalization", ["c1", const("g1", rng.uniform(0.5, 1.5, c1)),
                                                         const("be1", rng.normal(0, 0.2, c1)),
                                                         const("m1", rng.normal(0, 0.2, c1)),
                                                         const("v1", rng.uniform(0.5, 1.5, c1))], ["bn1"]))
    nodes.append(helper.make_node("Relu", ["bn1"], ["r1"]))
    nodes.append(helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[4, 2], strides=[4, 2]))
    nodes.append(helper.make_node("Conv", ["p1", const("w2", normal((c2, c1, 4, 3), c1 * 12)),
                                           const("b2", rng.normal(0, 0.1, c2))], ["c2"], pads=[0, 1, 0, 1]))
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    nodes.append(helper.make_node("Squeeze", ["r2", const("axes", [2]).replace("axes", "axes")], ["seq_ncw"]))
    inits[-1] = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes.append(helper.make_node("Conv", ["seq_ncw", const("w3", normal((c2, c2, 3), c2 * 3)),
                                           const("b3", np.zeros(c2))], ["c3"], pads=[1, 1]))
    nodes.append(helper.make_node("Relu", ["c3"], ["r3"]))
    nodes.append(helper.make_node("Transpose", ["r3"], ["seq"], perm=[2, 0, 1]))  # [W, N, C]
    scale = 1 / np.sqrt(hidden)
    nodes.append(helper.make_node(
        "LSTM", ["seq", const("W", rng.uniform(-scale, scale, (2, 4 * hidden, c2))),
                 const("R", rng.uniform(-scale, scale, (2, 4 * hidden, hidden))),
                 const("B", rng.uniform(-scale, scale, (2, 8 * hidden)))],
        ["lstm_y"], hidden_size=hidden, direction="bidirectional"))
    nodes.append(helper.make_node("Transpose", ["lstm_y"], ["y_t"], perm=[0, 2, 1, 3]))  # [W, N, 2, H]
    nodes.append(helper.make_node("Reshape", ["y_t", "shape"], ["features"]))
    inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape"))
    nodes.append(helper.make_node("MatMul", ["features", const("head", rng.normal(0, scale, (2 * hidden, classes)))],
                                  ["logits_mm"]))
    nodes.append(helper.make_node("Add", ["logits_mm", const("head_b", rng.normal(0, 0.1, classes))], ["logits"]))
    graph = helper.make_graph(nodes, "crnn", [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 1, 16, 40])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def test_crnn(tmp_path):
    result = check_model(crnn_model(), tmp_path)
    assert result["transposes"] <= 1  # the bidirectional [W, 2, N, H] -> [W, N, 2, H] permutation


@pytest.mark.parametrize("attrs,reason", [
    (dict(clip=3.0), "recurrent_clip"),
    (dict(input_forget=1), "lstm_input_forget"),
    (dict(activations=["Softsign", "Tanh", "Tanh"]), "recurrent_activation"),
    (dict(activations=["HardSigmoid", "Tanh", "Tanh"]), "recurrent_activation"),  # no alpha/beta
    (dict(sequence_lens=[2, 4]), "recurrent_sequence_lens"),  # 4 > the 3 steps (shorter ones run)
])
def test_unsupported_variants_are_named(attrs, reason, tmp_path):
    from tflq.errors import UnsupportedModelError

    lens = attrs.pop("sequence_lens", None)
    model = recurrent_model("LSTM", steps=3, batch=2, inputs=4, hidden=4, seed=51, **attrs)
    if lens is not None:
        node = model.graph.node[0]
        node.input.append("lens")
        model.graph.initializer.append(numpy_helper.from_array(np.array(lens, np.int32), "lens"))
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    assert [d.reason_code for d in info.value.diagnostics] == [reason]
