"""Serialise a Graph to TFLite flatbuffer bytes (deterministic), and save them atomically.

Memory: constants are written into the builder straight from the graph's arrays (no bytes copy of
each), identical constants are found by a digest of their bytes (not a dict keyed by the bytes
themselves), and the file's bytes are copied out of the builder once. Writing a model of W bytes
of weights holds the graph's W, the builder's W and the result's W at the peak, not 5 W.
"""
from __future__ import annotations

import hashlib

import flatbuffers
import numpy as np

from tflq import ops as registry
from tflq._generated.tflite import BuiltinOptions as builtin_options_module
from tflq._generated.tflite.Buffer import BufferAddData, BufferEnd, BufferStart, BufferT
from tflq._generated.tflite.BuiltinOperator import BuiltinOperator
from tflq._generated.tflite.Metadata import MetadataT
from tflq._generated.tflite.Model import ModelT
from tflq._generated.tflite.Operator import OperatorT
from tflq._generated.tflite.OperatorCode import OperatorCodeT
from tflq._generated.tflite.QuantizationParameters import (
    QuantizationParametersAddQuantizedDimension, QuantizationParametersAddScale,
    QuantizationParametersAddZeroPoint, QuantizationParametersEnd, QuantizationParametersStart,
    QuantizationParametersT)
from tflq._generated.tflite.SignatureDef import SignatureDefT
from tflq._generated.tflite.SubGraph import SubGraphT
from tflq._generated.tflite.Tensor import TensorT
from tflq._generated.tflite.TensorMap import TensorMapT
from tflq.ir.graph import Graph

SCHEMA_VERSION = 3
BUFFER_ALIGNMENT = 16
BuiltinOptions = builtin_options_module.BuiltinOptions


class _AlignedBufferT(BufferT):
    """A Buffer whose data vector starts on a 16-byte boundary (the schema's force_align,
    which flatc's Python generator ignores). `data` is bytes or a 1-D uint8 array (a view of a
    constant's own memory), copied into the builder once."""

    def Pack(self, builder):  # noqa: N802 - FlatBuffers' naming
        data = None
        if self.data is not None:
            raw = memoryview(self.data).cast("B")
            builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
            builder.head = builder.head - len(raw)
            # (through a memoryview: bytearray slice assignment copies a non-bytes value first)
            memoryview(builder.Bytes)[builder.head:builder.head + len(raw)] = raw
            builder.vectorNumElems = len(raw)
            data = builder.EndVector()
        BufferStart(builder)
        if data is not None:
            BufferAddData(builder, data)
        return BufferEnd(builder)


class _VectorCache:
    """Vectors already written into one builder, by content, so tables can share them."""

    def __init__(self) -> None:
        self.builder = None
        self.offsets: dict[tuple[str, bytes], int] = {}

    def vector(self, builder, values: np.ndarray) -> int:
        if builder is not self.builder:  # offsets are only valid inside the builder they were made in
            self.builder, self.offsets = builder, {}
        key = (values.dtype.str, values.tobytes())
        if key not in self.offsets:
            self.offsets[key] = builder.CreateNumpyVector(values)
        return self.offsets[key]


class _SharedQuantizationT(QuantizationParametersT):
    """QuantizationParameters whose scale and zero-point vectors are written once per distinct
    content (FlatBuffers tables may share a vector). Per-channel weights repeat the same all-zero
    zero points: without sharing they cost 8 bytes per output channel, about 140 KB in MobileNetV2."""

    def __init__(self, cache: _VectorCache) -> None:
        super().__init__()
        self.cache = cache

    def Pack(self, builder):  # noqa: N802 - FlatBuffers' naming
        scale = self.cache.vector(builder, self.scale)
        zero_point = self.cache.vector(builder, self.zeroPoint)
        QuantizationParametersStart(builder)
        QuantizationParametersAddScale(builder, scale)
        QuantizationParametersAddZeroPoint(builder, zero_point)
        QuantizationParametersAddQuantizedDimension(builder, self.quantizedDimension)
        return QuantizationParametersEnd(builder)


def _quantization(quant, cache: _VectorCache) -> QuantizationParametersT | None:
    if quant is None:
        return None
    q = _SharedQuantizationT(cache)
    q.scale = np.atleast_1d(quant.scale).astype(np.float32)
    q.zeroPoint = np.atleast_1d(quant.zero_point).astype(np.int64)
    q.quantizedDimension = int(quant.axis or 0)
    return q


def _options_type(options) -> int:
    return getattr(BuiltinOptions, type(options).__name__[:-1])


def build_model(graph: Graph, description: str = "tflq") -> ModelT:
    """The object-API model for `graph`; tensors and buffers are numbered in order of first use."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name and name not in seen:
            seen.add(name)
            order.append(name)

    for name in graph.inputs:
        visit(name)
    for op in graph.ops:
        for name in op.inputs + op.outputs:
            visit(name)
    for name in graph.outputs:
        visit(name)
    index = {name: i for i, name in enumerate(order)}

    vectors = _VectorCache()
    buffers: list[BufferT] = [_AlignedBufferT()]
    buffer_index = _BufferIndex()
    tensors = []
    for name in order:
        t = graph.tensors[name]
        tt = TensorT()
        tt.name = name
        tt.shape = np.array(t.shape, dtype=np.int32)
        tt.type = t.dtype.tflite
        tt.quantization = _quantization(t.quant, vectors)
        tt.buffer = 0
        if t.data is not None:
            raw = _little_endian_bytes(t.data, t.dtype.numpy)
            tt.buffer = buffer_index.index(raw, len(buffers))
            if tt.buffer == len(buffers):
                buf = _AlignedBufferT()
                buf.data = raw
                buffers.append(buf)
        tensors.append(tt)

    codes: list[OperatorCodeT] = []
    code_index: dict[str, int] = {}
    operators = []
    for op in graph.ops:
        spec = registry.spec(op.kind)
        version = spec.version(op, graph)
        if op.kind not in code_index:
            code = OperatorCodeT()
            code.builtinCode = getattr(BuiltinOperator, op.kind)
            code.deprecatedBuiltinCode = min(code.builtinCode, 127)
            code.version = version
            code_index[op.kind] = len(codes)
            codes.append(code)
        else:
            code = codes[code_index[op.kind]]
            code.version = max(code.version, version)
        o = OperatorT()
        o.opcodeIndex = code_index[op.kind]
        o.inputs = np.array([index[n] if n else -1 for n in op.inputs], dtype=np.int32)
        o.outputs = np.array([index[n] for n in op.outputs], dtype=np.int32)
        options = spec.options(op.attrs)
        if options is not None:
            o.builtinOptionsType = _options_type(options)
            o.builtinOptions = options
        operators.append(o)

    subgraph = SubGraphT()
    subgraph.tensors = tensors
    subgraph.inputs = np.array([index[n] for n in graph.inputs], dtype=np.int32)
    subgraph.outputs = np.array([index[n] for n in graph.outputs], dtype=np.int32)
    subgraph.operators = operators
    subgraph.name = "main"

    signature = SignatureDefT()
    signature.signatureKey = "serving_default"
    signature.subgraphIndex = 0
    signature.inputs = [_tensor_map(n, index[n]) for n in graph.inputs]
    signature.outputs = [_tensor_map(n, index[n]) for n in graph.outputs]

    model = ModelT()
    model.version = SCHEMA_VERSION
    model.operatorCodes = codes
    model.subgraphs = [subgraph]
    model.description = description
    model.buffers = buffers
    model.signatureDefs = [signature]
    _add_min_runtime_metadata(model)
    return model


def _little_endian_bytes(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The constant's bytes as the file stores them (little-endian, C order): a flat uint8 view of
    `data` itself when it already is that, else of one converted copy."""
    array = np.ascontiguousarray(data.astype(dtype.newbyteorder("<"), copy=False))
    return array.reshape(-1).view(np.uint8)


class _BufferIndex:
    """Buffers by content: constants with the same bytes share one buffer (whatever their types).
    Looked up by a digest of the bytes and confirmed by comparing them, so no second copy of
    every constant is kept as a dict key."""

    def __init__(self) -> None:
        self._by_digest: dict[tuple[int, bytes], list[tuple[np.ndarray, int]]] = {}

    def index(self, raw: np.ndarray, new: int) -> int:
        """The index of the buffer holding `raw`'s bytes; `new` (now recorded) if there is none."""
        key = raw.size, hashlib.blake2b(memoryview(raw), digest_size=16).digest()
        same = self._by_digest.setdefault(key, [])
        for other, index in same:
            if memoryview(other) == memoryview(raw):
                return index
        same.append((raw, new))
        return new


def _tensor_map(name: str, tensor_index: int) -> TensorMapT:
    m = TensorMapT()
    m.name = name
    m.tensorIndex = tensor_index
    return m


def _add_min_runtime_metadata(model: ModelT) -> None:
    """A 16-byte NUL-padded 'min_runtime_version' entry, as TFLite's own exporter writes."""
    buf = _AlignedBufferT()
    buf.data = b"1.14.0".ljust(16, b"\0")
    model.buffers.append(buf)
    entry = MetadataT()
    entry.name = "min_runtime_version"
    entry.buffer = len(model.buffers) - 1
    model.metadata = [entry]


def serialize(graph: Graph, description: str = "tflq") -> bytes:
    """The .tflite file contents for `graph`."""
    model = build_model(graph, description)
    size_hint = sum(len(b.data) for b in model.buffers if b.data is not None) + 1024 * 1024
    builder = flatbuffers.Builder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    del model  # (views of the graph's constants)
    return bytes(memoryview(builder.Bytes)[builder.Head():])  # (Output() would copy once more)
