"""Checks that schemas/tflite.fbs and its generated bindings produce real TFLite.

Models are built with nothing but the generated object API (``...T`` classes),
packed with ``flatbuffers.Builder``, then loaded and run by LiteRT and compared
with a numpy reference.  A second group of tests compares the generated field
layout (vtable slots, defaults, enum values) with the bindings that LiteRT
itself ships, which is the strongest evidence of binary compatibility we have
without TensorFlow.
"""

import importlib
import inspect
import math
import pkgutil
import re

import numpy as np
import pytest
from tests.conftest import importorskip

flatbuffers = importorskip("flatbuffers")
litert_interpreter = importorskip("ai_edge_litert.interpreter")

from tflq._generated.tflite.ActivationFunctionType import ActivationFunctionType
from tflq._generated.tflite.AddOptions import AddOptionsT
from tflq._generated.tflite.Buffer import BufferT
from tflq._generated.tflite.BuiltinOperator import BuiltinOperator
from tflq._generated.tflite.BuiltinOptions import BuiltinOptions
from tflq._generated.tflite.Conv2DOptions import Conv2DOptionsT
from tflq._generated.tflite.GeluOptions import GeluOptionsT
from tflq._generated.tflite.Model import Model, ModelT
from tflq._generated.tflite.Operator import OperatorT
from tflq._generated.tflite.OperatorCode import OperatorCodeT
from tflq._generated.tflite.Padding import Padding
from tflq._generated.tflite.QuantizationParameters import QuantizationParametersT
from tflq._generated.tflite.SignatureDef import SignatureDefT
from tflq._generated.tflite.SoftmaxOptions import SoftmaxOptionsT
from tflq._generated.tflite.SubGraph import SubGraphT
from tflq._generated.tflite.Tensor import TensorT
from tflq._generated.tflite.TensorMap import TensorMapT
from tflq._generated.tflite.TensorType import TensorType

Interpreter = litert_interpreter.Interpreter


# --------------------------------------------------------------------------
# Helpers: a tiny single-subgraph, single-op model builder on the object API
# --------------------------------------------------------------------------

def _tensor(name, shape, ttype=TensorType.FLOAT32, buffer=0, scale=None, zero_point=None):
    t = TensorT()
    t.name = name
    t.shape = list(shape)
    t.type = ttype
    t.buffer = buffer
    if scale is not None:
        q = QuantizationParametersT()
        q.scale = [float(scale)]
        q.zeroPoint = [int(zero_point)]
        t.quantization = q
    return t


def _buffer(array=None):
    b = BufferT()
    if array is not None:
        b.data = np.frombuffer(np.ascontiguousarray(array).tobytes(), dtype=np.uint8)
    return b


def _single_op_model(code, tensors, inputs, outputs, op_inputs, options_type=0,
                     options=None, const_buffers=(), version=1):
    """One subgraph with one operator; tensors reference buffers by index.

    ``const_buffers`` are appended after the mandatory empty buffer 0, so the
    first one is buffer 1.
    """
    opcode = OperatorCodeT()
    opcode.builtinCode = code
    opcode.deprecatedBuiltinCode = min(code, BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
    opcode.version = version

    op = OperatorT()
    op.opcodeIndex = 0
    op.inputs = list(op_inputs)
    op.outputs = list(outputs)
    op.builtinOptionsType = options_type
    op.builtinOptions = options

    sg = SubGraphT()
    sg.tensors = tensors
    sg.inputs = list(inputs)
    sg.outputs = list(outputs)
    sg.operators = [op]
    sg.name = "main"

    sig = SignatureDefT()
    sig.signatureKey = "serving_default"
    sig.subgraphIndex = 0
    sig.inputs, sig.outputs = [], []
    for dst, idxs in ((sig.inputs, inputs), (sig.outputs, outputs)):
        for i in idxs:
            tm = TensorMapT()
            tm.name = tensors[i].name
            tm.tensorIndex = i
            dst.append(tm)

    model = ModelT()
    model.version = 3
    model.description = "tflq schema test"
    model.operatorCodes = [opcode]
    model.subgraphs = [sg]
    model.buffers = [_buffer()] + [_buffer(a) for a in const_buffers]
    model.signatureDefs = [sig]
    return model


def _pack(model):
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _run(buf, *inputs):
    interp = Interpreter(model_content=buf)
    interp.allocate_tensors()
    for detail, value in zip(interp.get_input_details(), inputs):
        interp.set_tensor(detail["index"], value)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


# --------------------------------------------------------------------------
# Model builders
# --------------------------------------------------------------------------

def _add_model():
    opts = AddOptionsT()
    opts.fusedActivationFunction = ActivationFunctionType.NONE
    tensors = [_tensor("a", [1, 4]), _tensor("b", [1, 4]), _tensor("sum", [1, 4])]
    return _single_op_model(BuiltinOperator.ADD, tensors, [0, 1], [2], [0, 1],
                            BuiltinOptions.AddOptions, opts)


CONV_RNG = np.random.default_rng(1234)
CONV_W = CONV_RNG.standard_normal((2, 3, 3, 3)).astype(np.float32)   # OHWI
CONV_B = np.array([0.5, -1.25], dtype=np.float32)


def _conv_model():
    opts = Conv2DOptionsT()
    opts.padding = Padding.VALID
    opts.strideW = 1
    opts.strideH = 1
    opts.fusedActivationFunction = ActivationFunctionType.NONE
    tensors = [
        _tensor("x", [1, 5, 5, 3]),
        _tensor("w", [2, 3, 3, 3], buffer=1),
        _tensor("b", [2], buffer=2),
        _tensor("y", [1, 3, 3, 2]),
    ]
    return _single_op_model(BuiltinOperator.CONV_2D, tensors, [0], [3], [0, 1, 2],
                            BuiltinOptions.Conv2DOptions, opts,
                            const_buffers=(CONV_W, CONV_B))


def _softmax_model():
    opts = SoftmaxOptionsT()
    opts.beta = 1.0
    tensors = [_tensor("logits", [1, 5]), _tensor("probs", [1, 5])]
    return _single_op_model(BuiltinOperator.SOFTMAX, tensors, [0], [1], [0],
                            BuiltinOptions.SoftmaxOptions, opts)


QADD = {"a": (0.05, -3), "b": (0.1, 7), "out": (0.125, -10)}


def _int8_add_model():
    opts = AddOptionsT()
    tensors = [
        _tensor("a", [1, 4], TensorType.INT8, scale=QADD["a"][0], zero_point=QADD["a"][1]),
        _tensor("b", [1, 4], TensorType.INT8, scale=QADD["b"][0], zero_point=QADD["b"][1]),
        _tensor("sum", [1, 4], TensorType.INT8, scale=QADD["out"][0], zero_point=QADD["out"][1]),
    ]
    return _single_op_model(BuiltinOperator.ADD, tensors, [0, 1], [2], [0, 1],
                            BuiltinOptions.AddOptions, opts, version=2)


def _gelu_model():
    opts = GeluOptionsT()
    opts.approximate = False
    tensors = [_tensor("x", [1, 6]), _tensor("y", [1, 6])]
    return _single_op_model(BuiltinOperator.GELU, tensors, [0], [1], [0],
                            BuiltinOptions.GeluOptions, opts)


# --------------------------------------------------------------------------
# Runtime tests
# --------------------------------------------------------------------------

def test_file_header_and_version():
    buf = _pack(_add_model())
    assert buf[4:8] == b"TFL3"
    assert Model.ModelBufferHasIdentifier(buf, 0)
    m = Model.GetRootAs(buf, 0)
    assert m.Version() == 3
    assert m.BuffersLength() == 1 and m.Buffers(0).DataLength() == 0


def test_float_add_runs_in_litert():
    buf = _pack(_add_model())
    a = np.array([[1.0, -2.0, 3.5, 0.25]], dtype=np.float32)
    b = np.array([[0.5, 4.0, -1.5, 8.0]], dtype=np.float32)
    (out,) = _run(buf, a, b)
    np.testing.assert_allclose(out, a + b, rtol=0, atol=0)

    # The SignatureDef is usable too.
    runner = Interpreter(model_content=buf).get_signature_runner("serving_default")
    res = runner(a=a, b=b)
    np.testing.assert_allclose(res["sum"], a + b)


def test_conv2d_valid_stride1_runs_in_litert():
    buf = _pack(_conv_model())
    x = np.random.default_rng(7).standard_normal((1, 5, 5, 3)).astype(np.float32)
    (out,) = _run(buf, x)

    ref = np.zeros((1, 3, 3, 2), dtype=np.float64)
    for i in range(3):
        for j in range(3):
            patch = x[0, i:i + 3, j:j + 3, :].astype(np.float64)          # [kh, kw, c]
            ref[0, i, j, :] = np.einsum("hwc,ohwc->o", patch, CONV_W.astype(np.float64)) + CONV_B
    assert out.shape == (1, 3, 3, 2)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_softmax_beta1_runs_in_litert():
    buf = _pack(_softmax_model())
    x = np.array([[1.0, 2.0, 3.0, -1.0, 0.5]], dtype=np.float32)
    (out,) = _run(buf, x)
    e = np.exp(x - x.max())
    np.testing.assert_allclose(out, e / e.sum(), rtol=1e-5, atol=1e-6)


def test_int8_add_runs_in_litert():
    buf = _pack(_int8_add_model())
    qa = np.array([[-128, -3, 40, 127]], dtype=np.int8)
    qb = np.array([[5, -100, 7, 60]], dtype=np.int8)
    (out,) = _run(buf, qa, qb)
    assert out.dtype == np.int8

    (sa, za), (sb, zb), (so, zo) = QADD["a"], QADD["b"], QADD["out"]
    real = sa * (qa.astype(np.float64) - za) + sb * (qb.astype(np.float64) - zb)
    ref = np.clip(np.round(real / so) + zo, -128, 127)
    # LiteRT uses fixed-point rescaling, so allow one step of rounding error.
    assert np.max(np.abs(out.astype(np.int32) - ref.astype(np.int32))) <= 1

    q = Interpreter(model_content=buf).get_output_details()[0]["quantization"]
    assert q == pytest.approx((so, zo))


def test_gelu_code_above_127_runs_in_litert():
    model = _gelu_model()
    assert model.operatorCodes[0].deprecatedBuiltinCode == 127
    assert model.operatorCodes[0].builtinCode == 150
    buf = _pack(model)
    x = np.array([[-3.0, -1.0, -0.1, 0.0, 0.7, 2.5]], dtype=np.float32)
    (out,) = _run(buf, x)
    ref = np.array([[v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x[0]]])
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# Round trip through the generated reader
# --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "build, code, opt_type",
    [
        (_add_model, BuiltinOperator.ADD, BuiltinOptions.AddOptions),
        (_conv_model, BuiltinOperator.CONV_2D, BuiltinOptions.Conv2DOptions),
        (_softmax_model, BuiltinOperator.SOFTMAX, BuiltinOptions.SoftmaxOptions),
        (_int8_add_model, BuiltinOperator.ADD, BuiltinOptions.AddOptions),
        (_gelu_model, BuiltinOperator.GELU, BuiltinOptions.GeluOptions),
    ],
)
def test_round_trip(build, code, opt_type):
    original = build()
    back = ModelT.InitFromPackedBuf(_pack(original), 0)

    assert back.version == 3
    assert back.description == b"tflq schema test"
    assert len(back.buffers) == len(original.buffers)
    assert back.buffers[0].data is None
    oc = back.operatorCodes[0]
    assert (oc.builtinCode, oc.deprecatedBuiltinCode) == (code, min(code, 127))
    assert oc.version == original.operatorCodes[0].version

    op = back.subgraphs[0].operators[0]
    assert op.builtinOptionsType == opt_type
    assert vars(op.builtinOptions) == vars(original.subgraphs[0].operators[0].builtinOptions)
    assert op.debugMetadataIndex == -1
    assert back.subgraphs[0].debugMetadataIndex == -1

    sig = back.signatureDefs[0]
    assert sig.signatureKey == b"serving_default"
    assert [t.tensorIndex for t in sig.outputs] == list(original.subgraphs[0].outputs)

    for t_back, t_orig in zip(back.subgraphs[0].tensors, original.subgraphs[0].tensors):
        assert list(t_back.shape) == t_orig.shape
        assert t_back.type == t_orig.type
        if t_orig.quantization is not None:
            assert list(t_back.quantization.scale) == pytest.approx(t_orig.quantization.scale)
            assert list(t_back.quantization.zeroPoint) == t_orig.quantization.zeroPoint

    for b_back, b_orig in zip(back.buffers[1:], original.buffers[1:]):
        assert bytes(bytearray(b_back.data)) == b_orig.data.tobytes()


def test_conv_options_values_survive():
    back = ModelT.InitFromPackedBuf(_pack(_conv_model()), 0)
    o = back.subgraphs[0].operators[0].builtinOptions
    assert isinstance(o, Conv2DOptionsT)
    assert (o.padding, o.strideW, o.strideH) == (Padding.VALID, 1, 1)
    assert (o.dilationWFactor, o.dilationHFactor) == (1, 1)   # schema defaults


# --------------------------------------------------------------------------
# Layout cross-check against the bindings LiteRT ships
# --------------------------------------------------------------------------

# Union index of every options table the converter relies on (TFLite values).
EXPECTED_OPTION_INDEX = {
    "Conv2DOptions": 1, "DepthwiseConv2DOptions": 2, "Pool2DOptions": 5,
    "FullyConnectedOptions": 8, "SoftmaxOptions": 9, "ConcatenationOptions": 10,
    "AddOptions": 11, "L2NormOptions": 12, "LocalResponseNormalizationOptions": 13,
    "ResizeBilinearOptions": 15, "ReshapeOptions": 17, "SpaceToDepthOptions": 19,
    "MulOptions": 21, "PadOptions": 22, "GatherOptions": 23,
    "BatchToSpaceNDOptions": 24, "SpaceToBatchNDOptions": 25, "TransposeOptions": 26,
    "ReducerOptions": 27, "SubOptions": 28, "DivOptions": 29, "SqueezeOptions": 30,
    "StridedSliceOptions": 32, "ExpOptions": 33, "SplitOptions": 35,
    "LogSoftmaxOptions": 36, "CastOptions": 37, "DequantizeOptions": 38,
    "MaximumMinimumOptions": 39, "ArgMaxOptions": 40, "NegOptions": 42,
    "PadV2Options": 43, "SliceOptions": 48, "TransposeConvOptions": 49,
    "TileOptions": 51, "ExpandDimsOptions": 52, "PowOptions": 56, "ArgMinOptions": 57,
    "PackOptions": 59, "UnpackOptions": 64, "SquareOptions": 66,
    "ResizeNearestNeighborOptions": 74, "LeakyReluOptions": 75, "MirrorPadOptions": 77,
    "AbsOptions": 78, "SplitVOptions": 79, "QuantizeOptions": 89, "HardSwishOptions": 91,
    "DepthToSpaceOptions": 94, "BatchMatMulOptions": 101, "CumsumOptions": 102,
    "BroadcastToOptions": 104, "GeluOptions": 116,
}


def test_builtin_options_indices():
    for name, idx in EXPECTED_OPTION_INDEX.items():
        assert getattr(BuiltinOptions, name) == idx, name


_OFFSET = re.compile(r"self\._tab\.Offset\((\d+)\)")


def _generated_modules():
    import tflq._generated.tflite as pkg
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        yield info.name, getattr(mod, info.name), getattr(mod, info.name + "T", None)


def test_layout_matches_litert_bindings():
    ref = importorskip("ai_edge_litert.schema_py_generated")
    problems, checked = [], 0
    for name, cls, tcls in _generated_modules():
        if name == "BuiltinOptions2":      # declared partially on purpose
            assert cls.StablehloConcatenateOptions == ref.BuiltinOptions2.StablehloConcatenateOptions
            continue
        rcls = getattr(ref, name, None)
        if rcls is None:
            continue
        checked += 1
        if hasattr(cls, "Init"):           # a table: compare every field's vtable offset
            for meth, fn in inspect.getmembers(cls, inspect.isfunction):
                m = _OFFSET.search(inspect.getsource(fn))
                if not m:
                    continue
                rfn = getattr(rcls, meth, None)
                rm = rfn and _OFFSET.search(inspect.getsource(rfn))
                if not rm or rm.group(1) != m.group(1):
                    problems.append(f"{name}.{meth}: offset {m.group(1)} vs {rm and rm.group(1)}")
            rt = getattr(ref, name + "T")
            ours, theirs = vars(tcls()), vars(rt())
            for k, v in ours.items():        # defaults of the fields we declare
                if k in theirs and theirs[k] != v:
                    problems.append(f"{name}.{k}: default {v!r} vs {theirs[k]!r}")
        else:                              # an enum or union: compare every value we declare
            for k, v in vars(cls).items():
                if not k.startswith("_") and getattr(rcls, k, None) != v:
                    problems.append(f"{name}.{k}: {v} vs {getattr(rcls, k, None)}")
    assert checked > 150
    assert not problems, "\n".join(problems)
