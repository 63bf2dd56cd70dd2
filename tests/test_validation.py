"""Validation right after loading: models onnxruntime refuses as invalid are refused by tflq with
the node (or tensor, or file) named, exit 1; resource limits and numerics are errors, not crashes."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T, helper, numpy_helper

from tests.conftest import importorskip
from tflq.cli import main
from tflq.config import ConvertConfig
from tflq.errors import InvalidModelError, ResourceLimitError, TflqError
from tflq.pipeline import convert


def _model(nodes, inits=(), x_shape=(1, 3, 8, 8), outputs=None, opset=17):
    ins = [helper.make_tensor_value_info("x", T.FLOAT, list(x_shape))]
    outs = outputs if outputs is not None else [helper.make_tensor_value_info("y", T.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", ins, outs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _w(*shape, dtype=np.float32, name="w", value=None):
    arr = np.full(shape, value, dtype) if value is not None else np.random.default_rng(0).normal(size=shape).astype(dtype)
    return numpy_helper.from_array(arr, name)


def _conv(**attrs):
    return helper.make_node("Conv", ["x", "w"], ["y"], name="the_conv", **attrs)


def _tensor_with(name, mutate):
    t = _w(4, 3, 3, 3, name=name)
    mutate(t)
    return t


def _dup_attr():
    node = _conv(group=1)
    node.attribute.extend([helper.make_attribute("group", 1)])
    return node


W = _w(4, 3, 3, 3)
# (id, model, what the message must name, onnxruntime refuses it too)
INVALID = [
    ("conv_kernel_larger_than_input", _model([_conv()], [_w(4, 3, 9, 9)]), "the_conv", True),
    ("group_not_dividing", _model([_conv(group=2)], [W]), "the_conv", True),
    ("group_zero", _model([_conv(group=0)], [W]), "the_conv", True),
    ("weight_channels", _model([_conv()], [_w(4, 2, 3, 3)]), "the_conv", True),
    ("bias_length", _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="the_conv")],
                           [W, _w(5, name="b")]), "the_conv", True),
    ("kernel_shape_disagrees", _model([_conv(kernel_shape=[2, 2])], [W]), "the_conv", True),
    ("unknown_auto_pad", _model([_conv(auto_pad="FOO")], [W]), "the_conv", True),
    ("duplicated_attribute", _model([_dup_attr()], [W]), "the_conv", True),
    ("maxpool_kernel_too_large", _model([helper.make_node("MaxPool", ["x"], ["y"], name="the_pool",
                                                          kernel_shape=[9, 9])]), "the_pool", False),
    ("reshape_count", _model([helper.make_node("Reshape", ["x", "s"], ["y"], name="the_reshape")],
                             [numpy_helper.from_array(np.array([1, 5], np.int64), "s")]), "the_reshape", True),
    ("convtranspose_output_padding", _model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="the_convt", strides=[2, 2],
                          output_padding=[2, 2])], [_w(3, 4, 3, 3)]), "the_convt", True),
    ("zero_size_weights", _model([_conv()], [_w(0, 3, 3, 3)]), "the_conv", False),
    ("no_outputs", _model([helper.make_node("Relu", ["x"], ["y"], name="r")], outputs=[]), "no outputs", True),
    ("int64_conv_weights", _model([_conv()], [_w(4, 3, 3, 3, dtype=np.int64)]), "the_conv", True),
    ("self_loop", _model([helper.make_node("Add", ["x", "y"], ["y"], name="the_add")]), "the_add", True),
    ("two_producers", _model([helper.make_node("Relu", ["x"], ["y"], name="a"),
                              helper.make_node("Relu", ["x"], ["y"], name="b")]), "'b'", True),
    ("unproduced_output", _model([helper.make_node("Relu", ["x"], ["z"], name="a")]), "'y'", True),
    ("dangling_input", _model([helper.make_node("Add", ["x", "ghost"], ["y"], name="the_add")]), "ghost", True),
    ("raw_data_short", _model([_conv()], [_tensor_with("w", lambda t: setattr(t, "raw_data", t.raw_data[:10]))]),
     "'w'", True),
    ("negative_dims", _model([_conv()], [_tensor_with("w", lambda t: t.dims.__setitem__(0, -4))]), "'w'", True),
    ("conv_rank2_weight", _model([_conv()], [_w(4, 3)]), "the_conv", True),
    ("zero_strides", _model([_conv(strides=[0, 0])], [W]), "the_conv", True),
    ("zero_block_size", _model([helper.make_node("SpaceToDepth", ["x"], ["y"], name="s2d", blocksize=0)]),
     "s2d", True),
    ("constant_without_value", _model([helper.make_node("Constant", [], ["c"], name="k"),
                                       helper.make_node("Add", ["x", "c"], ["y"], name="a")]), "node 'k'", True),
    ("string_tensor", _model([helper.make_node("Identity", ["x"], ["y"], name="i")],
                             [helper.make_tensor("s", T.STRING, [1], [b"hi"])]), "'s'", False),
    ("resize_scale_zero", _model([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="the_resize")],
                                 [numpy_helper.from_array(np.array([1, 1, 0, 0], np.float32), "sc")]),
     "the_resize", False),
    ("resize_scale_nan", _model([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="the_resize")],
                                [numpy_helper.from_array(np.array([1, 1, np.nan, 2], np.float32), "sc")]),
     "the_resize", False),
    ("nan_weights", _model([_conv()], [_w(4, 3, 3, 3, value=np.nan)]), "the_conv", False),
    ("leaky_relu_alpha_nan", _model([helper.make_node("LeakyRelu", ["x"], ["y"], name="lr", alpha=float("nan"))]),
     "'lr'", False),
    ("batchnorm_negative_variance", _model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn")],
        [_w(3, name="s"), _w(3, name="b"), _w(3, name="m"), _w(3, name="v", value=-1.0)]), "'bn'", False),
    ("gemm_contracted_dims", _model([helper.make_node("Flatten", ["x"], ["f"], name="flat"),
                                     helper.make_node("Gemm", ["f", "fc"], ["y"], name="the_gemm", transB=1)],
                                    [_w(5, 100, name="fc")]), "the_gemm", True),
    ("qdq_axis_out_of_range", _model(
        [helper.make_node("QuantizeLinear", ["x", "qs", "qz"], ["q"], name="the_q", axis=5),
         helper.make_node("DequantizeLinear", ["q", "qs", "qz"], ["y"], name="the_dq", axis=5)],
        [_w(3, name="qs", value=0.1), numpy_helper.from_array(np.zeros(3, np.int8), "qz")]), "the_q", True),
]


def _ort_refuses(model) -> bool:
    ort = importorskip("onnxruntime")
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.zeros((1, 3, 8, 8), np.float32)})
    except Exception:  # noqa: BLE001 - any refusal (INVALID_GRAPH, INVALID_ARGUMENT, FAIL)
        return True
    return False


@pytest.mark.parametrize("name,model,named,ort_refuses", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_model_is_refused_naming_the_node(name, model, named, ort_refuses, tmp_path):
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    if ort_refuses:
        assert _ort_refuses(model), f"{name}: onnxruntime accepts this model; the case is wrong"
    with pytest.raises(TflqError) as info:
        convert(ConvertConfig(model=path))
    text = str(info.value) + " ".join(str(d) for d in info.value.diagnostics)
    assert named in text, text
    result = CliRunner().invoke(main, ["convert", path, "-o", str(tmp_path / "o.tflite")])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.startswith("Error: ") and not (tmp_path / "o.tflite").exists()


def test_external_data_shorter_than_declared_names_the_data_file(tmp_path):
    model = _model([_conv()], [W])
    path = str(tmp_path / "ext.onnx")
    onnx.save(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    data = tmp_path / "weights.bin"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(InvalidModelError, match="weights.bin"):
        convert(ConvertConfig(model=path))


def test_loop_with_a_huge_trip_count_is_refused_not_folded(tmp_path):
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Add", ["v", "one"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", T.INT64, []), helper.make_tensor_value_info("c", T.BOOL, []),
                 helper.make_tensor_value_info("v", T.FLOAT, [1])],
        [helper.make_tensor_value_info("c_out", T.BOOL, []), helper.make_tensor_value_info("v_out", T.FLOAT, [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    nodes = [helper.make_node("Loop", ["m", "", "v0"], ["v"], body=body, name="big_loop"),
             helper.make_node("Add", ["x", "v"], ["y"], name="a")]
    model = _model(nodes, [numpy_helper.from_array(np.array(10 ** 15, np.int64), "m"),
                           numpy_helper.from_array(np.zeros(1, np.float32), "v0")], x_shape=(1, 1))
    path = str(tmp_path / "loop.onnx")
    onnx.save(model, path)
    with pytest.raises(ResourceLimitError, match="big_loop"):
        convert(ConvertConfig(model=path))


def test_tensor_byte_limit_and_int32_dimensions(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], x_shape=(1, 3, "h", "w"))
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    shape = {"x": (1, 3, 64, 64)}
    with pytest.raises(ResourceLimitError, match="max-tensor-bytes"):
        convert(ConvertConfig(model=path, input_shapes=shape, max_tensor_bytes=1000))
    assert convert(ConvertConfig(model=path, input_shapes=shape, max_tensor_bytes=10 ** 6)).tflite
    huge = CliRunner().invoke(main, ["convert", path, "-o", str(tmp_path / "o.tflite"),
                                     "--input-shape", f"x:1,3,{2 ** 31},2"])
    assert huge.exit_code == 1 and "int32" in huge.output, huge.output
    big = CliRunner().invoke(main, ["convert", path, "-o", str(tmp_path / "o.tflite"),
                                    "--input-shape", "x:1,3,60000,60000"])
    assert big.exit_code == 1 and "max-tensor-bytes" in big.output, big.output


def test_nan_produced_while_folding_names_the_node_and_no_warning_is_printed(tmp_path):
    nodes = [helper.make_node("Log", ["neg"], ["l"], name="log_of_negative"),
             helper.make_node("Add", ["x", "l"], ["y"], name="a")]
    model = _model(nodes, [_w(1, name="neg", value=-1.0)], x_shape=(1, 1))
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    result = CliRunner().invoke(main, ["convert", path, "-o", str(tmp_path / "o.tflite")])
    assert result.exit_code == 1 and "log_of_negative" in result.output and "NaN" in result.output
    assert "Warning" not in result.output, result.output


def test_names_with_terminal_escapes_are_printed_escaped(tmp_path):
    evil = "bad\n\x1b[31mError: forged\x1b[0m"
    model = _model([helper.make_node("Bernoulli", ["x"], ["y"], name=evil)])
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    result = CliRunner().invoke(main, ["convert", path, "-o", str(tmp_path / "o.tflite")])
    assert result.exit_code == 1
    assert "\x1b" not in result.output and "\\x1b[31m" in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error")] == \
        [result.output.splitlines()[0]]


def test_inspect_errors_name_the_file(tmp_path):
    path = tmp_path / "broken.tflite"
    path.write_bytes(b"\x18\x00\x00\x00TFL3" + b"\xff" * 40)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1 and "broken.tflite" in result.output and "Traceback" not in result.output


def test_out_of_memory_is_an_input_error_not_a_bug(tmp_path, monkeypatch):
    import tflq.pipeline

    def exhaust(config):
        raise MemoryError()

    monkeypatch.setattr(tflq.pipeline, "convert", exhaust)
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")])
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    result = CliRunner().invoke(main, ["convert", path, "-o", str(tmp_path / "o.tflite")])
    assert result.exit_code == 1 and "out of memory" in result.output and "max-tensor-bytes" in result.output


def test_log_lines_escape_control_characters():
    import logging

    from tflq.cli import _PrintableFormatter

    record = logging.LogRecord("tflq", logging.WARNING, __file__, 1, "input '%s'", ("a\nb\x1b[2J",), None)
    assert _PrintableFormatter("%(levelname)s: %(message)s").format(record) == "WARNING: input 'a\\nb\\x1b[2J'"


@pytest.mark.parametrize("node", [
    helper.make_node("Conv", ["x", "w"], ["y"], strides=[2 ** 40, 2 ** 40], name="the_op"),
    helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2 ** 31, 2 ** 31], name="the_op"),
], ids=["conv_strides", "pool_strides"])
def test_attributes_beyond_int32_are_refused_naming_the_node(node, tmp_path):
    path = str(tmp_path / "m.onnx")
    onnx.save(_model([node], [W] if node.op_type == "Conv" else []), path)
    result = CliRunner().invoke(main, ["convert", path, "-o", str(tmp_path / "o.tflite")])
    assert result.exit_code == 1 and "the_op" in result.output and "int32" in result.output, result.output


def _non_tensor_inputs():
    x = helper.make_tensor_value_info("x", T.FLOAT, [1, 4])
    seq = helper.make_tensor_sequence_value_info("s", T.FLOAT, [1, 4])
    opt = helper.make_value_info("o", helper.make_optional_type_proto(helper.make_tensor_type_proto(T.FLOAT, [1, 4])))
    relu = helper.make_node("Relu", ["x"], ["y"], name="r")
    y = helper.make_tensor_value_info("y", T.FLOAT, None)
    return [("sequence_passed_through", [relu], [x, seq], [y, seq], "'s'"),
            ("optional_input", [helper.make_node("OptionalGetElement", ["o"], ["y"], name="oge")], [opt], [y], "'o'")]


@pytest.mark.parametrize("name,nodes,inputs,outputs,named", _non_tensor_inputs(),
                         ids=[c[0] for c in _non_tensor_inputs()])
def test_graph_inputs_that_are_not_tensors_are_refused_by_name(name, nodes, inputs, outputs, named, tmp_path):
    """A sequence or optional graph input met the shape lookup outside any node: an internal error
    ('NoneType' object has no attribute 'name') instead of a line naming the input."""
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    result = CliRunner().invoke(main, ["convert", path, "-o", str(tmp_path / "o.tflite")])
    assert result.exit_code == 1, result.output
    assert "Internal error" not in result.output and "Traceback" not in result.output, result.output
    assert f"{named}: graph input of " in result.output, result.output
    assert not (tmp_path / "o.tflite").exists()


def test_a_shape_asked_outside_any_node_names_the_tensor():
    """Every refusal names its subject: the import context asked for an unknown shape with no node
    being imported (a graph output) raises a TflqError naming the tensor, not an AttributeError."""
    from tflq.errors import Unsupported
    from tflq.frontend.onnx_loader import ImportContext
    from tflq.ir.graph import Graph

    ctx = ImportContext(Graph(), {}, {}, {}, 17)
    with pytest.raises(Unsupported) as info:
        ctx.shape("mystery")
    assert isinstance(info.value, TflqError)
    assert info.value.diagnostic.node == "mystery" and "'mystery'" in str(info.value)
    ctx.unknown_shapes["later"] = "it follows node 'nz' (NonZero)"
    with pytest.raises(Unsupported, match="'later'.*NonZero"):
        ctx.shape("later")
    import pickle

    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value) and again.diagnostic == info.value.diagnostic


@pytest.mark.parametrize("as_constant_nodes", [False, True], ids=["initializers", "constant_nodes"])
def test_a_constant_range_past_the_limit_is_refused_before_shape_inference(as_constant_nodes, tmp_path):
    """Range(0, 10^12) into a Cast: ONNX's data propagation computed the Range's values during shape
    inference, without bound (minutes, then the OOM killer); now refused at once, naming the node."""
    import time

    values = {"start": np.array(0, np.int64), "limit": np.array(10 ** 12, np.int64), "delta": np.array(1, np.int64)}
    nodes = [helper.make_node("Range", list(values), ["r"], name="the_range"),
             helper.make_node("Cast", ["r"], ["rf"], to=T.FLOAT, name="cast"),
             helper.make_node("Add", ["x", "rf"], ["y"], name="add")]
    inits = [numpy_helper.from_array(v, n) for n, v in values.items()]
    if as_constant_nodes:
        nodes = [helper.make_node("Constant", [], [n], value=numpy_helper.from_array(v, n)) for n, v in values.items()] + nodes
        inits = []
    path = str(tmp_path / "m.onnx")
    onnx.save(_model(nodes, inits), path)
    start = time.perf_counter()
    with pytest.raises(ResourceLimitError, match="node 'the_range' \\(Range\\).*max-tensor-bytes"):
        convert(ConvertConfig(model=path))
    assert time.perf_counter() - start < 10


def test_input_shapes_beyond_int32_or_the_byte_limit_are_refused(tmp_path):
    """--input-shape input:999999999999999999999,... was an internal error (protobuf's 'Value out of
    range'); an input above --max-tensor-bytes is refused before shape inference propagates it."""
    path = str(tmp_path / "m.onnx")
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], x_shape=("n", 3, 8, 8))
    onnx.save(model, path)
    result = CliRunner().invoke(main, ["convert", path, "-o", str(tmp_path / "o.tflite"),
                                       "--input-shape", "x:999999999999999999999,3,8,8"])
    assert result.exit_code == 1 and "1 to 2147483647" in result.output, result.output
    with pytest.raises(ResourceLimitError, match="input 'x'.*1 to 2147483647"):
        convert(ConvertConfig(model=path, input_shapes={"x": (10 ** 21, 3, 8, 8)}))
    with pytest.raises(ResourceLimitError, match="tensor 'x' of shape \\[100000, 3, 8, 8\\]"):
        convert(ConvertConfig(model=path, input_shapes={"x": (100000, 3, 8, 8)}, max_tensor_bytes=10 ** 6))


@pytest.mark.parametrize("op,values", [
    ("Tile", {"v": np.ones(1, np.float32), "repeats": np.array([2 ** 40], np.int64)}),
    ("ConstantOfShape", {"shape": np.array([2 ** 20, 2 ** 20], np.int64)}),
    ("Expand", {"v": np.ones(1, np.float32), "shape": np.array([2 ** 20, 2 ** 20], np.int64)}),
], ids=["tile", "constant_of_shape", "expand"])
def test_constant_generators_past_the_limit_are_refused_at_once(op, values, tmp_path):
    """The mutation fuzz's Tile([1.0], [2^40]) into a Cast: shape inference's data propagation
    took 24 GB until the OOM killer ended the test run."""
    import time

    nodes = [helper.make_node(op, list(values), ["g"], name="the_generator"),
             helper.make_node("Cast", ["g"], ["gf"], to=T.FLOAT, name="cast"),
             helper.make_node("Relu", ["x"], ["y"], name="relu")]
    model = _model(nodes, [numpy_helper.from_array(v, n) for n, v in values.items()],
                   outputs=[helper.make_tensor_value_info("y", T.FLOAT, None),
                            helper.make_tensor_value_info("gf", T.FLOAT, None)])
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    start = time.perf_counter()
    with pytest.raises(ResourceLimitError, match=f"node 'the_generator' \\({op}\\).*max-tensor-bytes"):
        convert(ConvertConfig(model=path))
    assert time.perf_counter() - start < 10


def test_files_read_whole_must_be_regular_files(tmp_path):
    """--stats, tflq inspect/check and tflq eval's .tflite read their file whole: /dev/zero grew
    until the OOM killer ended tflq (24 GB), and a FIFO blocked forever. Each is now one line
    naming the file (a FIFO here: the same check, without risking the machine's memory)."""
    import signal

    from tests.test_mutation_fuzz import SAMPLES

    fifo = tmp_path / "f.npz"
    os.mkfifo(fifo)
    sample = os.path.join(SAMPLES, "digits_cnn.onnx")
    commands = [["convert", sample, "-o", str(tmp_path / "o.tflite"), "--mode", "full", "--stats", str(fifo)],
                ["inspect", str(fifo)], ["check", str(fifo), "--target", "tflm"],
                ["eval", sample, str(fifo), "--data", os.path.join(SAMPLES, "digits_calib")],
                ["convert", str(fifo), "-o", str(tmp_path / "o.tflite")]]

    class Blocked(Exception):  # (not TimeoutError: an OSError, which a reader may catch)
        pass

    def expire(signum, frame):
        raise Blocked("blocked reading the FIFO")

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        for args in commands:
            signal.alarm(20)
            result = CliRunner().invoke(main, args)
            signal.alarm(0)
            assert result.exit_code == 1, (args, result.output, result.exception)
            assert f"{fifo}: is a FIFO, not a file" in result.output, (args, result.output)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not (tmp_path / "o.tflite").exists()
