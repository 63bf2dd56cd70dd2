"""Read a .tflite file back into plain Python facts (ops, tensors, quantization, buffer sizes)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tflq._generated.tflite.BuiltinOperator import BuiltinOperator
from tflq._generated.tflite.Model import ModelT
from tflq.errors import InvalidModelError
from tflq.ir.dtypes import DType
from tflq.text import printable

_OP_NAMES = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


@dataclass
class TensorInfo:
    index: int
    name: str
    dtype: str
    shape: list[int]
    buffer_bytes: int
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)
    quantized_dimension: int = 0
    data: np.ndarray | None = field(default=None, repr=False)
    shape_signature: list[int] = field(default_factory=list)  # -1: a dimension known at run time


@dataclass
class OpInfo:
    kind: str
    version: int
    inputs: list[int]
    outputs: list[int]
    options: object = field(default=None, repr=False)


@dataclass
class ModelInfo:
    version: int
    description: str
    ops: list[OpInfo]
    tensors: list[TensorInfo]
    inputs: list[int]
    outputs: list[int]
    signature_keys: list[str]
    file_bytes: int
    subgraph: int = 0          # which subgraph of the file this describes
    subgraph_count: int = 1    # how many the file has (control flow bodies, other signatures)

    def tensor(self, name: str) -> TensorInfo:
        return next(t for t in self.tensors if t.name == name)

    def op_kinds(self) -> list[str]:
        return [op.kind for op in self.ops]

    def to_dict(self) -> dict:
        return {
            "version": self.version, "description": self.description, "file_bytes": self.file_bytes,
            "inputs": self.inputs, "outputs": self.outputs, "signatures": self.signature_keys,
            "ops": [{"kind": o.kind, "version": o.version, "inputs": o.inputs, "outputs": o.outputs}
                    for o in self.ops],
            "tensors": [{"index": t.index, "name": t.name, "dtype": t.dtype, "shape": t.shape,
                         "buffer_bytes": t.buffer_bytes, "scale": t.scale, "zero_point": t.zero_point,
                         "quantized_dimension": t.quantized_dimension} for t in self.tensors],
        }


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else (value or "")


def read_tflite(data: bytes) -> ModelInfo:
    """Parse .tflite bytes (the main subgraph, 0); raise InvalidModelError for anything that is
    not a TFLite model.

    The file is untrusted: any failure while decoding it (offsets past the end, bad indices,
    unknown types, sizes that do not match) means the file is corrupt, and says what was wrong.
    """
    return read_subgraphs(data, first_only=True)[0]


def read_subgraphs(data: bytes, first_only: bool = False) -> list[ModelInfo]:
    """read_tflite for every subgraph of the file, in file order (each ModelInfo's tensor and op
    indices are its own subgraph's)."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InvalidModelError("not a TFLite file (identifier 'TFL3' missing)")
    try:
        model = ModelT.InitFromPackedBuf(data, 0)
        if not model.subgraphs:
            raise InvalidModelError("corrupt TFLite file (no subgraph)")
        count = 1 if first_only else len(model.subgraphs)
        return [_decode(model, len(data), k) for k in range(count)]
    except InvalidModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt flatbuffer fails in many ways
        detail = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise InvalidModelError(f"corrupt TFLite file ({type(exc).__name__}{': ' + detail if detail else ''})") \
            from None


def _decode(model, file_bytes: int, index: int = 0) -> ModelInfo:
    subgraph = model.subgraphs[index]
    where = f" of subgraph {index}" if index else ""
    buffers = model.buffers or []
    codes = model.operatorCodes or []
    tensors = []
    for i, t in enumerate(subgraph.tensors or []):
        buf = buffers[t.buffer] if 0 <= t.buffer < len(buffers) else None
        raw = bytes(np.asarray(buf.data, np.uint8)) if buf is not None and buf.data is not None else b""
        try:
            dtype = DType.from_tflite(t.type)
        except (KeyError, ValueError):
            raise InvalidModelError(f"corrupt TFLite file (tensor {i}{where} has unknown type {t.type})") from None
        shape = [int(d) for d in (t.shape if t.shape is not None else [])]
        q = t.quantization
        info = TensorInfo(i, _text(t.name), dtype.name.lower(), shape, len(raw),
                          shape_signature=[int(d) for d in (t.shapeSignature if t.shapeSignature is not None else [])])
        if q is not None and q.scale is not None and len(q.scale):
            info.scale = [float(s) for s in q.scale]
            info.zero_point = [int(z) for z in (q.zeroPoint if q.zeroPoint is not None else [])]
            info.quantized_dimension = int(q.quantizedDimension)
        if raw:
            if any(d < 0 for d in shape) or len(raw) != math.prod(shape) * dtype.numpy.itemsize:
                raise InvalidModelError(f"corrupt TFLite file (tensor {i}{where} '{info.name}': {len(raw)} "
                                        f"bytes of data for shape {shape} {info.dtype})")
            info.data = np.frombuffer(raw, dtype=dtype.numpy).reshape(shape)
        tensors.append(info)

    def indices(values, what: str, optional: bool = False) -> list[int]:
        result = [int(i) for i in (values if values is not None else [])]
        for i in result:
            if not (0 <= i < len(tensors) or (optional and i == -1)):
                raise InvalidModelError(f"corrupt TFLite file ({what}{where} names tensor {i}, the "
                                        f"subgraph has {len(tensors)})")
        return result

    ops = []
    for k, o in enumerate(subgraph.operators or []):
        if not 0 <= o.opcodeIndex < len(codes):
            raise InvalidModelError(f"corrupt TFLite file (operator {k}{where} has opcode index {o.opcodeIndex}, "
                                    f"the model has {len(codes)} codes)")
        code = codes[o.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        ops.append(OpInfo(_OP_NAMES.get(builtin, str(builtin)), code.version,
                          indices(o.inputs, f"operator {k}", optional=True),
                          indices(o.outputs, f"operator {k}"), o.builtinOptions))
    keys = [_text(s.signatureKey) for s in (model.signatureDefs or [])]
    return ModelInfo(model.version, _text(model.description), ops, tensors,
                     indices(subgraph.inputs, "the subgraph's inputs"),
                     indices(subgraph.outputs, "the subgraph's outputs"), keys, file_bytes, index,
                     len(model.subgraphs))


def read_tflite_file(path: str) -> ModelInfo:
    """read_tflite on a file; every error names the file."""
    return read_subgraphs_file(path, first_only=True)[0]


def read_subgraphs_file(path: str, first_only: bool = False) -> list[ModelInfo]:
    """read_subgraphs on a file; every error names the file."""
    from tflq.fileio import not_a_regular_file

    problem = not_a_regular_file(path)
    if problem:
        raise InvalidModelError(f"{path}: {problem}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InvalidModelError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        return read_subgraphs(data, first_only)
    except InvalidModelError as exc:
        raise InvalidModelError(f"{path}: {exc.message}") from None


def format_model(info: ModelInfo, others: list[ModelInfo] = ()) -> str:
    """A human-readable listing for `tflq inspect`: the main subgraph, then each of `others` (the
    file's further subgraphs: control-flow bodies, other signatures' graphs) under its number."""
    lines = [f"TFLite schema v{info.version}, {info.file_bytes} bytes, {len(info.ops)} ops, "
             f"{len(info.tensors)} tensors, signatures: {', '.join(info.signature_keys) or '-'}"
             + (f", {1 + len(others)} subgraphs" if others else "")]
    lines += _subgraph_lines(info)
    for other in others:
        lines.append(f"subgraph {other.subgraph}: {len(other.ops)} ops, {len(other.tensors)} tensors")
        lines += ["  " + line for line in _subgraph_lines(other)]
    return "\n".join(printable(line) for line in lines)  # names from files: escaped


def _subgraph_lines(info: ModelInfo) -> list[str]:
    lines = []
    name = {t.index: t.name for t in info.tensors}
    lines.append("inputs:  " + ", ".join(_tensor_line(info.tensors[i]) for i in info.inputs))
    lines.append("outputs: " + ", ".join(_tensor_line(info.tensors[i]) for i in info.outputs))
    lines.append("ops:")
    for k, op in enumerate(info.ops):
        ins = ", ".join(name[i] if i >= 0 else "-" for i in op.inputs)
        outs = ", ".join(name[i] for i in op.outputs)
        lines.append(f"  {k:3d} {op.kind} v{op.version}: ({ins}) -> ({outs})")
    lines.append("tensors:")
    for t in info.tensors:
        lines.append(f"  {t.index:3d} {_tensor_line(t)}")
    return lines


def _tensor_line(t: TensorInfo) -> str:
    text = f"{t.name} {t.dtype}{t.shape}"
    if t.buffer_bytes:
        text += f" const {t.buffer_bytes} B"
    if t.scale:
        if len(t.scale) == 1:
            text += f" q(scale={t.scale[0]:.6g}, zp={t.zero_point[0]})"
        else:
            text += (f" q(per-channel dim {t.quantized_dimension}, {len(t.scale)} scales "
                     f"{min(t.scale):.3g}..{max(t.scale):.3g})")
    return text
