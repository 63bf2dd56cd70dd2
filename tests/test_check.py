"""`tflq check`: each kind of violation, found in a file built (or patched) to contain it, and where
a runtime can say so, the runtime agrees (LiteRT refuses the file, XNNPACK leaves the op)."""
from __future__ import annotations

import json

import flatbuffers
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from tests.conftest import importorskip
from tests.delegation import xnnpack_delegation
from tflq._generated.tflite.Model import ModelT
from tflq.checker import NOTE, VIOLATION, check_model
from tflq.backend.tflite_reader import read_tflite
from tflq.cli import main
from tflq.config import ConvertConfig
from tflq.pipeline import convert
from tflq.targets import get_target

SAMPLE = "sample_models/digits_cnn.onnx"
SAMPLE_CALIB = "sample_models/digits_calib"
N = helper.make_node


def _model(path, nodes, shape=(1, 4, 6, 6), inits=(), opset=17, out_type=1) -> str:
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", 1, list(shape))],
                              [helper.make_tensor_value_info(nodes[-1].output[0], out_type, None)], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _int8(path, shape=(1, 4, 6, 6), **options) -> bytes:
    calib = [{"x": np.random.default_rng(s).uniform(-2, 2, shape).astype(np.float32)} for s in range(8)]
    return convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib, **options)).tflite


def _patched(data: bytes, edit) -> bytes:
    """The file with `edit(ModelT)` applied: another converter's file, with the flaw put in."""
    model = ModelT.InitFromPackedBuf(data, 0)
    edit(model)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor(model: ModelT, name: str):
    return next(t for t in model.subgraphs[0].tensors if t.name.decode() == name)


def _op_output(model: ModelT, kind: str):
    """The output tensor of the first op of `kind`."""
    info_ops = read_tflite(_repacked(model)).ops
    k = next(i for i, o in enumerate(info_ops) if o.kind == kind)
    return model.subgraphs[0].tensors[model.subgraphs[0].operators[k].outputs[0]]


def _repacked(model: ModelT) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _codes(data: bytes, target: str, severity: str = VIOLATION) -> set[tuple[str, str]]:
    return {(f.code, f.kind) for f in check_model(read_tflite(data), get_target(target)) if f.severity == severity}


def _refused_by_litert(data: bytes, delegate: bool = False) -> bool:
    litert = importorskip("ai_edge_litert.interpreter")
    resolver = litert.OpResolverType.BUILTIN if delegate else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = litert.Interpreter(model_content=data, num_threads=1, experimental_op_resolver_type=resolver)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError):
        return True
    return False


def test_missing_kernel(tmp_path):
    data = convert(ConvertConfig(model=_model(tmp_path / "g.onnx", [N("Gelu", ["x"], ["y"])], opset=20))).tflite
    assert _codes(data, "tflm") == {("missing_kernel", "GELU")}
    assert _codes(data, "litert") == set()


def test_op_version_beyond_the_kernel(tmp_path):
    data = convert(ConvertConfig(model=_model(tmp_path / "r.onnx", [N("Relu", ["x"], ["y"])]))).tflite

    def edit(model):
        model.operatorCodes[0].version = 99

    patched = _patched(data, edit)
    assert _codes(patched, "litert") == {("op_version", "RELU")}
    assert _refused_by_litert(patched)
    assert _codes(patched, "tflm") == set()  # TFLM ignores versions


def test_dtype_and_missing_integer_kernel(tmp_path):
    uint8 = convert(ConvertConfig(model=SAMPLE, mode="full", dtype="uint8", calib=SAMPLE_CALIB)).tflite
    assert ("dtype", "CONV_2D") in _codes(uint8, "tflm")  # TFLM has no uint8 kernels
    path = _model(tmp_path / "e.onnx", [N("Exp", ["x"], ["y"])])
    assert ("no_integer_kernel", "EXP") in _codes(_int8(path), "tflm")
    assert _codes(_int8(path), "litert") == set()


def test_hybrid_weights(tmp_path):
    data = convert(ConvertConfig(model=SAMPLE, mode="weights-only", dtype="int8", min_weight_elements=16)).tflite
    assert ("hybrid", "CONV_2D") in _codes(data, "tflm")
    assert _codes(data, "litert") == set()


def test_fixed_output_grid(tmp_path):
    """onnx2tf#942: a SOFTMAX whose output is not on 1/256, -128 fails LiteRT's Prepare."""
    data = _int8(_model(tmp_path / "s.onnx", [N("Softmax", ["x"], ["y"], axis=-1)], shape=(1, 10)), shape=(1, 10))

    def edit(model):
        _op_output(model, "SOFTMAX").quantization.scale = [0.01]

    patched = _patched(data, edit)
    assert _codes(patched, "litert") == {("fixed_output", "SOFTMAX")}
    assert not _refused_by_litert(data) and _refused_by_litert(patched)


@pytest.mark.parametrize("kind,nodes", [
    ("MAX_POOL_2D", [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])]),
    ("RESHAPE", [N("Flatten", ["x"], ["y"])]),
    ("CONCATENATION", [N("Relu", ["x"], ["r"]), N("Concat", ["x", "r"], ["y"], axis=1)]),
])
def test_same_scale_rules(kind, nodes, tmp_path):
    data = _int8(_model(tmp_path / "m.onnx", nodes))
    assert _codes(data, "litert") == set()

    def edit(model):
        out = _op_output(model, kind)
        out.quantization.scale = [float(out.quantization.scale[0]) * 1.5]

    patched = _patched(data, edit)
    assert ("same_scale", kind) in _codes(patched, "litert")
    if kind == "CONCATENATION":  # concatenation.cc checks its int8 inputs' params
        assert _refused_by_litert(patched)


def test_scale_limits(tmp_path):
    """A convolution's multiplier of 256 or more: XNNPACK refuses the file at load (violation);
    an ADD outside its input/output ratio: XNNPACK leaves it to LiteRT (note)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32), "w")
    conv = _int8(_model(tmp_path / "c.onnx", [N("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], inits=[w]))

    def tiny_output(kind, scale):
        def edit(model):
            _op_output(model, kind).quantization.scale = [scale]
        return edit

    refused = _patched(conv, tiny_output("CONV_2D", 1e-8))
    assert ("scale_limit", "CONV_2D") in _codes(refused, "xnnpack")
    assert _codes(conv, "xnnpack") == set()
    assert _refused_by_litert(refused, delegate=True) and not _refused_by_litert(refused)

    add = _int8(_model(tmp_path / "a.onnx", [N("Relu", ["x"], ["r"]), N("Add", ["x", "r"], ["y"])]))
    # input scales ~0.016: a ratio near 800 (LiteRT's own ADD takes ratios below 2^19)
    slow = _patched(add, tiny_output("ADD", 2e-5))
    assert ("scale_limit", "ADD") in _codes(slow, "xnnpack", NOTE) and _codes(slow, "xnnpack") == set()
    assert "ADD" in xnnpack_delegation(slow).undelegated
    assert "ADD" not in xnnpack_delegation(add).undelegated
    aborts = _patched(add, tiny_output("ADD", 1e-9))  # ratio 2^24: LiteRT's ADD aborts (not loaded here)
    assert ("scale_limit", "ADD") in _codes(aborts, "litert")


def test_dynamic_tensor_and_kernel_condition(tmp_path):
    data = convert(ConvertConfig(model=_model(tmp_path / "r.onnx", [N("Relu", ["x"], ["y"])]))).tflite

    def edit(model):
        _tensor(model, "x").shapeSignature = [-1, 6, 6, 4]

    assert ("dynamic_tensor", "") in _codes(_patched(data, edit), "tflm")
    assert _codes(_patched(data, edit), "litert") == set()
    argmax = _int8(_model(tmp_path / "am.onnx", [N("ArgMax", ["x"], ["y"], axis=1)], out_type=7))
    assert ("kernel_condition", "ARG_MAX") in _codes(argmax, "tflm")  # TFLM writes int32 indices only


def test_cli_exit_codes_and_json(tmp_path):
    runner = CliRunner()
    good = tmp_path / "good.tflite"
    good.write_bytes(convert(ConvertConfig(model=SAMPLE, mode="full", dtype="int8", calib=SAMPLE_CALIB)).tflite)
    for target in ("litert", "xnnpack", "tflm"):
        result = runner.invoke(main, ["check", str(good), "--target", target])
        assert result.exit_code == 0, result.output
        assert "0 violation(s)" in result.output
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(convert(ConvertConfig(model=SAMPLE, mode="float16")).tflite)
    result = runner.invoke(main, ["check", str(bad), "--target", "tflm", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["target"] == "tflm" and {v["code"] for v in report["violations"]} == {"dtype"}
    not_tflite = runner.invoke(main, ["check", SAMPLE, "--target", "litert"])
    assert not_tflite.exit_code == 1 and "digits_cnn.onnx" in not_tflite.output
    assert "Traceback" not in not_tflite.output
    assert runner.invoke(main, ["check", str(good), "--target", "edgetpu"]).exit_code == 2


def test_python_api(tmp_path):
    import tflq

    data = convert(ConvertConfig(model=SAMPLE, mode="float16")).tflite
    assert {f.code for f in tflq.check(data, target="tflm").violations} == {"dtype"}
    (tmp_path / "f.tflite").write_bytes(data)
    assert tflq.check(tmp_path / "f.tflite").violations == []


def test_every_subgraph_is_checked(tmp_path):
    """A file whose second subgraph (a control-flow body, another signature's graph) has an op of
    a version no kernel runs: the finding names that subgraph, on the CLI too; the main subgraph
    stays clean."""
    from tflq._generated.tflite.OperatorCode import OperatorCodeT

    data = convert(ConvertConfig(model=_model(tmp_path / "r.onnx", [N("Relu", ["x"], ["y"])]))).tflite

    def edit(model):
        body = ModelT.InitFromPackedBuf(data, 0).subgraphs[0]
        code = OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = model.operatorCodes[0].builtinCode
        code.version = 99
        model.operatorCodes.append(code)
        body.operators[0].opcodeIndex = len(model.operatorCodes) - 1
        model.subgraphs.append(body)

    patched = _patched(data, edit)
    assert _codes(patched, "litert") == set()  # subgraph 0 alone
    import tflq

    found = tflq.check(patched, target="litert").violations
    assert [(f.subgraph, f.op, f.code, f.kind) for f in found] == [(1, 0, "op_version", "RELU")]
    path = tmp_path / "two.tflite"
    path.write_bytes(patched)
    result = CliRunner().invoke(main, ["check", str(path), "--target", "litert"])
    assert result.exit_code == 1 and "subgraph 1 op 0 RELU" in result.output, result.output


def test_inspect_lists_every_subgraph(tmp_path):
    """`tflq inspect` on a file with a second subgraph (built here: the Relu graph plus a Sigmoid
    graph appended as subgraph 1) lists that subgraph's op and tensors after the main one, in
    text and JSON; a one-subgraph file's listing has no such part."""
    import json

    relu = convert(ConvertConfig(model=_model(tmp_path / "r.onnx", [N("Relu", ["x"], ["y"])]))).tflite
    sigmoid = convert(ConvertConfig(model=_model(tmp_path / "s.onnx", [N("Sigmoid", ["x"], ["y"])]))).tflite

    def edit(model):
        other = ModelT.InitFromPackedBuf(sigmoid, 0)
        body = other.subgraphs[0]
        for op in body.operators:
            model.operatorCodes.append(other.operatorCodes[op.opcodeIndex])
            op.opcodeIndex = len(model.operatorCodes) - 1
        for tensor in body.tensors:  # a graph-input/-output tensor has no data: the empty buffer 0
            tensor.buffer = 0
        model.subgraphs.append(body)

    single, double = tmp_path / "one.tflite", tmp_path / "two.tflite"
    single.write_bytes(relu)
    double.write_bytes(_patched(relu, edit))
    text = CliRunner().invoke(main, ["inspect", str(double)])
    assert text.exit_code == 0, text.output
    main_part, _, second = text.output.partition("subgraph 1: 1 ops, 2 tensors")
    assert "2 subgraphs" in main_part.splitlines()[0]
    assert "RELU" in main_part and "LOGISTIC" not in main_part
    assert "LOGISTIC" in second and "RELU" not in second
    listing = json.loads(CliRunner().invoke(main, ["inspect", str(double), "--json"]).output)
    assert [o["kind"] for o in listing["ops"]] == ["RELU"]
    assert [(s["subgraph"], [o["kind"] for o in s["ops"]]) for s in listing["other_subgraphs"]] == \
        [(1, ["LOGISTIC"])]
    plain = CliRunner().invoke(main, ["inspect", str(single)]).output
    assert "subgraph 1" not in plain and "subgraphs" not in plain.splitlines()[0]
    assert "other_subgraphs" not in json.loads(CliRunner().invoke(main, ["inspect", str(single), "--json"]).output)


# ---- LiteRT Prepare refusals: type pairs (quantize.cc, add.cc / sub.cc / mul.cc) -------------


def _only_op(data: bytes, kind: str, types: dict[int, int], scales: dict[int, float] | None = None) -> bytes:
    """The file cut down to its first op of `kind` (its non-constant inputs become the graph's
    inputs, its output the graph's output), with operand `types` {position: DType}: inputs
    0, 1..., the output as -1; scales gives those operands (re)quantized grids."""
    from tflq._generated.tflite.QuantizationParameters import QuantizationParametersT
    from tflq.ir.dtypes import DType

    def edit(model):
        graph = model.subgraphs[0]
        k = next(i for i, o in enumerate(read_tflite(data).ops) if o.kind == kind)
        op = graph.operators[k]
        graph.operators = [op]
        graph.inputs = [i for i in op.inputs if i >= 0 and not model.buffers[graph.tensors[i].buffer].data]
        graph.outputs = list(op.outputs)
        operands = {**dict(enumerate(op.inputs)), -1: op.outputs[0]}
        for position, dtype in types.items():
            tensor = graph.tensors[operands[position]]
            tensor.type = dtype.tflite
            if dtype != DType.FLOAT32:
                quantization = tensor.quantization or QuantizationParametersT()
                scale = (scales or {}).get(position, float(quantization.scale[0]) if quantization.scale
                                           is not None and len(quantization.scale) else 0.01)
                quantization.scale, quantization.zeroPoint = [scale], [128 if dtype == DType.UINT8 else 0]
                tensor.quantization = quantization
            else:
                tensor.quantization = None
    return _patched(data, edit)


def _litert_refusals(data: bytes) -> bool:
    """LiteRT (no delegate) refuses the file or fails to invoke it on zeros (False: it runs)."""
    if _refused_by_litert(data):
        return True
    litert = importorskip("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_content=data, num_threads=1, experimental_op_resolver_type=
                                     litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    try:
        interpreter.invoke()
    except RuntimeError:
        return True
    return False


def _pairs():
    from tflq.ir.dtypes import DType as D
    types = [D.FLOAT32, D.UINT8, D.INT8, D.INT16, D.INT32]
    return [(a, b) for a in types for b in types if b != D.FLOAT32]


@pytest.mark.parametrize("source,dest", _pairs(), ids=lambda d: d.name.lower())
def test_quantize_type_pairs_agree_with_litert(source, dest, tmp_path):
    """Every QUANTIZE type pair: `tflq check` calls it a violation exactly where LiteRT's
    quantize.cc Prepare refuses the file (int16 -> uint8 among them)."""
    data = _int8(_model(tmp_path / "r.onnx", [N("Relu", ["x"], ["y"])]))
    one = _only_op(data, "QUANTIZE", {0: source, -1: dest})
    predicted = ("kernel_condition", "QUANTIZE") in _codes(one, "litert")
    assert predicted == _litert_refusals(one), _codes(one, "litert")
    assert predicted == (("kernel_condition", "QUANTIZE") in _codes(one, "xnnpack"))


@pytest.mark.parametrize("kind,node", [("ADD", "Add"), ("SUB", "Sub"), ("MUL", "Mul")])
@pytest.mark.parametrize("first,second,out", [
    ("int8", "int16", "int8"), ("int16", "int8", "int16"), ("uint8", "int8", "uint8"),
    ("int8", "int8", "int8"), ("int8", "int8", "int16"),
])
def test_binary_operand_types_agree_with_litert(kind, node, first, second, out, tmp_path):
    """add.cc / sub.cc / mul.cc Prepare: TF_LITE_ENSURE_TYPES_EQ on the two inputs ("INT8 !=
    INT16"); add and sub also overwrite the output's type, so a file declaring another one
    computes in the input type and its reader misreads the bytes: that is a violation too."""
    from tflq.ir.dtypes import DType

    data = _int8(_model(tmp_path / "b.onnx", [N("Relu", ["x"], ["r"]), N(node, ["x", "r"], ["y"])]))
    types = {0: DType.parse(first), 1: DType.parse(second), -1: DType.parse(out)}
    one = _only_op(data, kind, types, {0: 2 ** -6, 1: 2 ** -6, -1: 2 ** -5})  # int16: power-of-two scales
    predicted = ("kernel_condition", kind) in _codes(one, "litert")
    if first != second:
        assert predicted and _litert_refusals(one)
    elif out != first and kind != "MUL":
        assert predicted  # loads, but the output holds int8 bytes declared int16
    elif out != first:
        assert predicted and _litert_refusals(one)  # mul.cc: no int8 -> int16 at invoke
    else:
        assert not predicted and not _litert_refusals(one)


def test_uint8_concatenation_off_the_output_grid_is_not_delegated(tmp_path):
    """XNNPACK's VisitConcatenationNode wants every quantized input on the output's grid, uint8
    too (whose LiteRT kernel rescales): the note says so where XNNPACK leaves the op."""
    nodes = [N("Relu", ["x"], ["r"]), N("Concat", ["x", "r"], ["y"], axis=1)]
    calib = [{"x": np.random.default_rng(s).uniform(-2, 2, (1, 4, 6, 6)).astype(np.float32)} for s in range(8)]
    data = convert(ConvertConfig(model=_model(tmp_path / "c.onnx", nodes), mode="full", dtype="uint8",
                                 calib=calib)).tflite
    assert ("not_delegated", "CONCATENATION") not in _codes(data, "xnnpack", NOTE)
    assert "CONCATENATION" not in xnnpack_delegation(data).undelegated

    def edit(model):
        k = next(i for i, o in enumerate(read_tflite(data).ops) if o.kind == "CONCATENATION")
        first = model.subgraphs[0].tensors[model.subgraphs[0].operators[k].inputs[0]]
        first.quantization.scale = [float(first.quantization.scale[0]) * 0.5]

    patched = _patched(data, edit)
    assert ("not_delegated", "CONCATENATION") in _codes(patched, "xnnpack", NOTE)
    assert _codes(patched, "litert") == set()  # LiteRT's uint8 kernel rescales: it runs
    assert "CONCATENATION" in xnnpack_delegation(patched).undelegated


def test_int16_to_uint8_edge_needs_its_two_quantize_ops():
    """A uint8 model with an int16 layer leaves int16 through int16 -> int8 -> uint8: quantize.cc
    Prepare has no int16 -> uint8 pair, so the one-op form LiteRT refuses (and `tflq check` says
    so); the int8 hop is on the uint8 grid shifted by 128, so its second QUANTIZE is exact."""
    data = convert(ConvertConfig(model=SAMPLE, mode="full", dtype="uint8", calib=SAMPLE_CALIB,
                                 int16_ops=("/conv2/Conv",))).tflite
    info = read_tflite(data)
    k = next(i for i, o in enumerate(info.ops) if o.kind == "QUANTIZE"
             and info.tensors[o.inputs[0]].dtype == "int16")
    first, second = info.ops[k], info.ops[k + 1]
    middle, last = info.tensors[first.outputs[0]], info.tensors[second.outputs[0]]
    assert second.kind == "QUANTIZE" and second.inputs[0] == first.outputs[0]
    assert (middle.dtype, last.dtype) == ("int8", "uint8")
    assert middle.scale == last.scale and middle.zero_point[0] + 128 == last.zero_point[0]
    assert _codes(data, "litert") == set() and not _litert_refusals(data)

    def edit(model):  # one QUANTIZE straight from int16 to the uint8 tensor
        ops = model.subgraphs[0].operators
        ops[k].outputs = list(ops[k + 1].outputs)
        del ops[k + 1]

    one = _patched(data, edit)
    assert ("kernel_condition", "QUANTIZE") in _codes(one, "litert") and _litert_refusals(one)
