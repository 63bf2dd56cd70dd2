"""Load an ONNX file into a tflq Graph: fix shapes, fold constants, and let each op spec import its nodes."""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from tflq import ops as registry
from tflq.ops.common import apply_activation
from tflq.errors import (Diagnostic, InvalidModelError, ResourceLimitError, Unsupported,
                         UnsupportedModelError)
from tflq.frontend.conv_branches import merge_parallel_convs
from tflq.frontend.pixel_shuffle import pixel_shuffles_as_depth_ops
from tflq.frontend.fold import FoldResult, check_folded, fold_model
from tflq.frontend.onnx_patterns import (channel_windows, fuse_erf_gelu, gather_nd_as_gather,
                                         gather_permutation_as_transpose,
                                         group_norm_from_instance_norm)
from tflq.frontend.onnx_qdq import find_qdq, float_where_the_grid_is_infinite
from tflq.frontend.ort_fused import standard_ops_from_fused
from tflq.frontend.ort_dynamic import dequantize_before_data_movement, float_ops_from_dynamic
from tflq.frontend.ort_qoperator import qdq_from_qoperator
from tflq.frontend.ort_quantized import refuse_onnxruntime_quantized, standard_qdq_from_contrib
from tflq.frontend.ort_nbits import matmul_nbits_as_matmul
from tflq.frontend.skeleton import skeleton, take_inferred
from tflq.frontend.validate import (DEFAULT_MAX_TENSOR_BYTES, INT32_MAX, check_generators,
                                    check_input_sizes, check_nodes, check_structure, check_value_shapes,
                                    first_line, run_onnx_checker)
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph, Layout, Op, Tensor
from tflq.ir.qdq import QdqModel

log = logging.getLogger(__name__)

SUPPORTED_OPSETS = range(11, 22)
# Graph input types a TFLite file can take as they are (token ids, attention masks, flags).
INPUT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.INT32, onnx.TensorProto.INT64,
               onnx.TensorProto.BOOL, onnx.TensorProto.FLOAT16)


@dataclass
class LoadResult:
    """The imported graph plus what the user should hear about (defaults taken, shapes fixed)."""

    graph: Graph
    opset: int
    notes: list[str] = field(default_factory=list)
    external_files: list[str] = field(default_factory=list)  # the model's external-data files
    qdq: QdqModel | None = None  # the model's QuantizeLinear/DequantizeLinear facts, if any


def dtype_from_onnx(onnx_type: int) -> DType | None:
    """The IR type of an ONNX element type (None: one tflq has no type for, e.g. bfloat16)."""
    try:
        return DType.from_numpy(helper.tensor_dtype_to_np_dtype(onnx_type))
    except (KeyError, TypeError, ValueError):
        return None


def read_model(path: str) -> onnx.ModelProto:
    """Parse an ONNX file (with its external data), turning every failure into InvalidModelError."""
    model, _ = read_model_and_data_files(path)
    return model


def read_model_and_data_files(path: str) -> tuple[onnx.ModelProto, list[str]]:
    """The parsed model with its external data loaded, and the external-data files it read."""
    from tflq.fileio import not_a_regular_file

    problem = not_a_regular_file(path)
    if problem:
        raise InvalidModelError(f"{path}: {problem}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, ...
        raise InvalidModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else 'parse failed'})") from exc
    if not model.graph.node and not model.graph.output:
        raise InvalidModelError(f"{path}: the file parsed but holds no graph (truncated or not ONNX?)")
    files = _load_external_data(model, path)
    return model, files


def _load_external_data(model: onnx.ModelProto, path: str) -> list[str]:
    """Load every tensor's external data from files beside the model; name the file on failure."""
    from onnx import external_data_helper as external

    base = os.path.dirname(os.path.abspath(path))
    files: list[str] = []
    for tensor in external._get_all_tensors(model):
        if not external.uses_external_data(tensor):
            continue
        what = f"{path}: tensor '{tensor.name}' external data"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                info = external.ExternalDataInfo(tensor)
        except ValueError as exc:
            raise InvalidModelError(f"{what}: {exc}") from None
        location = info.location or ""
        data_path = os.path.join(base, location)
        what = f"{what} '{location}'"
        if (not location or os.path.isabs(location)
                or os.path.normpath(location).split(os.sep)[0] == os.pardir):
            raise InvalidModelError(f"{what}: the location must be a file name relative to the "
                                    f"model's folder")
        if not os.path.isfile(data_path):
            raise InvalidModelError(f"{what}: {data_path} is not a file")
        if data_path not in files:
            files.append(data_path)
        size = os.path.getsize(data_path)
        offset = int(info.offset or 0)
        length = int(info.length) if info.length is not None else size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise InvalidModelError(f"{what}: declares bytes {offset}..{offset + length} but "
                                    f"{data_path} holds {size}")
        try:
            with open(data_path, "rb") as f:
                f.seek(offset)
                tensor.raw_data = f.read(length)
        except OSError as exc:
            raise InvalidModelError(f"{what}: cannot read {data_path} ({exc.strerror})") from None
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    return files


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise InvalidModelError("the model declares no default-domain opset")


def _dims(value_info) -> list[int | str | None]:
    dims: list[int | str | None] = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def fix_input_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]],
                     notes: list[str]) -> None:
    """Replace symbolic input dimensions by numbers: user-given ones, else batch 1."""
    initializer_names = {init.name for init in model.graph.initializer}
    graph_inputs = [vi for vi in model.graph.input if vi.name not in initializer_names]
    unknown = set(input_shapes) - {vi.name for vi in graph_inputs}
    if unknown:
        raise InvalidModelError(
            f"--input-shape names {sorted(unknown)}, but the model's inputs are "
            f"{[vi.name for vi in graph_inputs]}")
    for vi in list(model.graph.output) + list(model.graph.value_info):
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                d.Clear()  # paddle2onnx's dynamic -1: unknown, for shape inference to fill
    problems = []
    for vi in graph_inputs:
        dims = _dims(vi)
        if vi.name in input_shapes:
            wanted = tuple(input_shapes[vi.name])
            # (paddle2onnx writes a dynamic dimension as dim_value -1)
            if not all(isinstance(w, (int, np.integer)) and 0 < w <= INT32_MAX for w in wanted):
                raise ResourceLimitError(f"input '{vi.name}': --input-shape {list(wanted)}: dimensions "
                                         f"must be integers from 1 to {INT32_MAX} (TFLite's int32)")
            if len(wanted) != len(dims) or any(isinstance(d, int) and d > 0 and d != w
                                               for d, w in zip(dims, wanted)):
                raise InvalidModelError(
                    f"input '{vi.name}': --input-shape {list(wanted)} does not fit the model's "
                    f"shape {dims}")
            new_dims = list(wanted)
        else:
            new_dims = []
            for axis, d in enumerate(dims):
                if isinstance(d, int) and d > 0:
                    new_dims.append(d)
                elif axis == 0:
                    new_dims.append(1)
                    notes.append(f"input '{vi.name}': dynamic batch dimension "
                                 f"'{d or '?'}' set to 1")
                else:
                    problems.append(f"input '{vi.name}' dimension {axis} ('{d or '?'}') is dynamic")
                    new_dims.append(1)
        shape = vi.type.tensor_type.shape
        for d, value in zip(shape.dim, new_dims):
            d.Clear()
            d.dim_value = int(value)
    if problems:
        raise InvalidModelError("; ".join(problems) + ". Give it with --input-shape NAME:D0,D1,...")


def _explicit_mvn_axes(model: onnx.ModelProto) -> None:
    """ONNX (1.23) shape inference fails on a MeanVarianceNormalization (opset >= 13) without an
    `axes` attribute (its function body reads the absent attribute): give it the default
    [0, 2, 3], which means the same."""
    for node in model.graph.node:
        if node.op_type == "MeanVarianceNormalization" and node.domain in ("", "ai.onnx") and \
                not any(a.name == "axes" for a in node.attribute):
            node.attribute.append(helper.make_attribute("axes", [0, 2, 3]))


def _infer(model: onnx.ModelProto, strict: bool = False, path: str = "") -> onnx.ModelProto:
    _explicit_mvn_axes(model)
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        for _ in range(SHAPE_GAP_PASSES):
            if not _fill_shape_gaps(inferred):
                break
            inferred = shape_inference.infer_shapes(inferred, strict_mode=False, data_prop=True)
        if strict:  # after the gaps are filled: strict mode refuses a node whose input has no type
            inferred = shape_inference.infer_shapes(inferred, strict_mode=True, data_prop=True)
        return inferred
    except Exception as exc:
        where = f"{path}: " if path else ""
        raise InvalidModelError(f"{where}ONNX shape inference failed: {first_line(exc)}") from None


# ONNX (1.23) infers no output shape for these, so nothing after them gets one: their output has
# their first input's shape and type.
SAME_SHAPE_AS_INPUT = ("GroupNormalization",)
SHAPE_GAP_PASSES = 8  # each pass reaches one more such node along a chain


def _fill_shape_gaps(model: onnx.ModelProto) -> bool:
    """Give SAME_SHAPE_AS_INPUT nodes' outputs their input's shape; True if any was missing."""
    shapes = _static_shapes(model)
    outputs = {vi.name: vi for vi in model.graph.output}
    known = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.input)
             + list(outputs.values())}  # (a model output may feed the node too)
    added = False
    for node in model.graph.node:
        x, y = node.input[0] if node.input else "", node.output[0] if node.output else ""
        if node.op_type not in SAME_SHAPE_AS_INPUT or x not in shapes or y in shapes or x not in known:
            continue
        typed = helper.make_tensor_value_info(y, known[x].type.tensor_type.elem_type, list(shapes[x]))
        if y in outputs:
            outputs[y].type.CopyFrom(typed.type)
        else:
            model.graph.value_info.append(typed)
        added = True
    return added


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = _dims(vi)
        if all(isinstance(d, int) for d in dims):
            shapes[vi.name] = tuple(dims)  # type: ignore[arg-type]
    return shapes


def _check_int32_attrs(kind: str, attrs: Any, node) -> None:
    """TFLite stores op options (strides, dilations, block sizes, axes...) as int32."""
    import dataclasses

    if not dataclasses.is_dataclass(attrs):
        return
    for f in dataclasses.fields(attrs):
        value = getattr(attrs, f.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if (isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                    and not -2 ** 31 <= int(v) < 2 ** 31):
                where = f"node '{node.name}' ({node.op_type})" if node is not None else kind
                raise ResourceLimitError(f"{where}: {f.name}={int(v)} does not fit TFLite's int32 "
                                         f"{kind} options")


class ImportContext:
    """What an op importer sees: the ONNX facts (shapes, constants, attributes) and ways to add IR."""

    def __init__(self, graph: Graph, shapes: dict[str, tuple[int, ...]],
                 dtypes: dict[str, int], constants: dict[str, np.ndarray], opset: int) -> None:
        self.graph = graph
        self.opset = opset
        self._shapes = shapes
        self._dtypes = dtypes
        self._constants = constants
        self._alias: dict[str, str] = {}
        self.current_node: onnx.NodeProto | None = None
        self.unknown_shapes: dict[str, str] = {}  # value -> why folding left its shape unknown
        self.max_tensor_bytes = DEFAULT_MAX_TENSOR_BYTES
        # Values of nodes already reported as unsupported: an importer that needs to know what
        # made a value (a DequantizeLinear its QuantizeLinear) does not report them again.
        self.refused_values: set[str] = set()

    # ---- facts about ONNX values ---------------------------------------------------------
    def shape(self, name: str) -> tuple[int, ...]:
        name_ir = self._alias.get(name, name)
        if name_ir in self.graph.tensors:
            return self.graph.tensors[name_ir].shape
        if name in self._constants:
            return tuple(self._constants[name].shape)
        if name in self._shapes:
            return self._shapes[name]
        why = self.unknown_shapes.get(name)
        if why:
            raise Unsupported(self.current_node, "data_dependent_shape",
                              f"the shape of '{name}' is not static: {why}", tensor=name)
        raise Unsupported(self.current_node, "unknown_shape",
                          f"the shape of '{name}' could not be inferred", tensor=name)

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    def elem_type(self, name: str) -> int:
        """The ONNX element type of a value (a TensorProto.DataType)."""
        if name in self._dtypes:
            return self._dtypes[name]
        value = self.constant(name)
        if value is not None:
            return helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)
        ir_name = self._alias.get(name, name)
        if ir_name in self.graph.tensors:
            return helper.np_dtype_to_tensor_dtype(np.dtype(self.graph.tensors[ir_name].dtype.numpy))
        return onnx.TensorProto.FLOAT

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a constant input (an initializer, a folded node, an IR constant, or a value
        aliased to one, such as a DequantizeLinear of an integer initializer), else None."""
        if not name:
            return None
        if name in self._constants:
            return _float32(self._constants[name])
        ir_name = self._alias.get(name, name)
        return self.graph.tensors[ir_name].data if ir_name in self.graph.tensors else None

    def require_constant(self, node, index: int, what: str, sets_shape: bool = False) -> np.ndarray:
        """The value of a constant input. `sets_shape`: the input decides the output's shape (Pad's
        pads, Slice's bounds, Resize's sizes), so a value computed at run time is refused as a
        data-dependent shape."""
        name = node.input[index] if index < len(node.input) else ""
        value = self.constant(name)
        if value is None and sets_shape and name:
            raise Unsupported(node, "data_dependent_shape",
                              f"input {index} ({what}) is computed at run time, so the output shape "
                              f"depends on the data",
                              "tflq writes static shapes: the value must follow from constants and the "
                              "static input shapes")
        if value is None:
            raise Unsupported(node, "non_constant_input",
                              f"input {index} ({what}) must be a constant")
        return value

    def attr(self, node, name: str, default: Any = None) -> Any:
        for a in node.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                if isinstance(value, bytes):
                    return value.decode()
                if isinstance(value, list):
                    return [v.decode() if isinstance(v, bytes) else v for v in value]
                return value
        return default

    def normalize_axis(self, axis: int, rank: int) -> int:
        if not -rank <= axis < rank:
            raise Unsupported(self.current_node, "bad_axis", f"axis {axis} out of range for rank {rank}")
        return axis % rank

    # ---- building IR ---------------------------------------------------------------------
    def tensor(self, name: str) -> str:
        """The IR tensor name for an ONNX value, creating the IR tensor on first use."""
        if not name:
            return ""
        name = self._alias.get(name, name)
        if name in self.graph.tensors:
            return name
        if name in self._constants:
            value = _float32(self._constants[name])
            if value is self._constants[name]:  # the IR tensor's copy answers constant() from now
                del self._constants[name]  # on (same values, type): one copy of a weight, not two
            self.graph.add_tensor(Tensor(name, DType.from_numpy(value.dtype),
                                         tuple(value.shape), np.array(value, order="C")))
            return name
        return self._activation(name)

    def _activation(self, name: str) -> str:
        shape = self.shape(name)
        onnx_type = self._dtypes.get(name, onnx.TensorProto.FLOAT)
        dtype = dtype_from_onnx(onnx_type) or DType.FLOAT32
        if dtype.is_float:
            # float16/float64 values compute in float32, as float-to-float Casts do (aliases):
            # TFLite kernels take one float type, and a float64 or float16 tensor beside float32
            # ones is refused at prepare (concatenation.cc, add.cc: input types differ).
            dtype = DType.FLOAT32
        layout = Layout.NCHW if len(shape) == 4 else Layout.ANY
        self.graph.add_tensor(Tensor(name, dtype, shape, layout=layout))
        return name

    def add_op(self, kind: str, inputs: list[str], outputs: list[str], attrs: Any = None) -> Op | None:
        """Add an IR op; names may be ONNX value names or IR names made by this context.

        An op whose inputs are all constants is evaluated instead (None is returned): ONNX-level
        folding cannot see constants that only exist after import, such as a DequantizeLinear of
        an integer weight that a Transpose then reorders (tf2onnx's QDQ weights).
        """
        node = self.current_node
        spec = registry.spec(kind)
        attrs = attrs if attrs is not None else spec.Attrs()
        input_names = [self.tensor(n) for n in inputs]
        if self._foldable(kind, input_names):
            values = [self.graph.tensors[n].data if n else None for n in input_names]
            kwargs = spec.attr_kwargs(attrs)
            activation = kwargs.pop("fused_activation", "NONE")  # kernels take it separately
            with np.errstate(all="ignore"):
                results = [apply_activation(np.asarray(v), activation)
                           for v in spec.reference(*values, **kwargs)]
            if node is not None:
                check_folded(node, [v for v in values if v is not None], results, self.max_tensor_bytes)
            for name, value in zip(outputs, results):
                self._set_constant(name, value)
            return None
        _check_int32_attrs(kind, attrs, node)
        op = Op(kind, input_names, [self.tensor(n) for n in outputs], attrs,
                origin=node.name if node is not None else "")
        return self.graph.add_op(op)

    def _foldable(self, kind: str, input_names: list[str]) -> bool:
        from tflq.ops.base import ChannelsLast

        return (registry.spec(kind).folds_at_import and any(input_names)
                and all(not n or self.graph.is_constant(n) for n in input_names)
                and not isinstance(registry.spec(kind).layout, ChannelsLast))

    def _set_constant(self, name: str, value: np.ndarray) -> None:
        """Make `name` (an ONNX value, or an activation this context created) a constant."""
        ir_name = self._alias.get(name, name)
        if ir_name in self.graph.tensors:
            t = self.graph.tensors[ir_name]
            t.data = np.array(value, dtype=t.dtype.numpy, order="C")
            t.layout = Layout.ANY
        else:
            self._constants[name] = value

    def add_constant(self, base: str, value: np.ndarray, dtype: DType | None = None) -> str:
        return self.graph.add_constant(base, value, dtype)

    def new_activation(self, base: str, shape: tuple[int, ...], dtype: DType = DType.FLOAT32) -> str:
        layout = Layout.NCHW if len(shape) == 4 else Layout.ANY
        return self.graph.add_activation(base, dtype, shape, layout)

    def alias(self, onnx_name: str, ir_name: str) -> None:
        """Make `onnx_name` refer to an existing IR tensor (Identity, Dropout, no-op Cast)."""
        self._alias[onnx_name] = self.tensor(ir_name)


def _float32(value: np.ndarray) -> np.ndarray:
    """Float values of any width compute in float32: float16, float64, bfloat16 (ml_dtypes, kind "V")."""
    if value.dtype != np.float32 and (value.dtype.kind == "f" or value.dtype.name == "bfloat16"):
        return value.astype(np.float32)
    return value


def _float16_input(ctx: ImportContext, name: str) -> None:
    """A float16 graph input (torch's `model.half()`) keeps its float16 interface: the file's
    input is float16 and one CAST makes it float32, in which the graph computes (TFLite kernels
    have no float16 arithmetic; cast.cc converts float16 to and from float32)."""
    from tflq.ops.cast import CastAttrs

    t = ctx.graph.tensors[name]
    wide = ctx.new_activation(f"{name}/float32", t.shape)
    t.dtype = DType.FLOAT16
    ctx.graph.add_op(Op("CAST", [name], [wide], CastAttrs(to="FLOAT32", source="FLOAT16"), origin=name))
    ctx._alias[name] = wide


def _float16_output(ctx: ImportContext, name: str) -> str:
    """A float16 graph output: the float32 result, CAST to float16 under the output's name."""
    from tflq.ops.cast import CastAttrs

    graph = ctx.graph
    source = ctx.tensor(name)
    if source == name:  # the float32 value moves aside; other outputs aliased to it follow it
        source = graph.unique_name(f"{name}/float32")
        graph.rename(name, source)
        ctx._alias = {k: source if v == name else v for k, v in ctx._alias.items()}
        ctx._alias[name] = source
    elif name in graph.tensors:
        raise InvalidModelError(f"output '{name}' is ambiguous")
    t = graph.tensors[source]
    graph.add_tensor(Tensor(name, DType.FLOAT16, t.shape, layout=t.layout))
    graph.add_op(Op("CAST", [source], [name], CastAttrs(to="FLOAT16", source="FLOAT32"), origin=name))
    return name


def float16_interface_to_float32(graph: Graph) -> list[str]:
    """Drop the CASTs of a float16 interface (for --io-type: the file's inputs and outputs are
    8-bit there, quantized from and dequantized to float32); returns the names it touched."""
    touched = []
    for name in list(graph.inputs):
        readers = graph.consumers(name)
        if graph.tensors[name].dtype == DType.FLOAT16 and len(readers) == 1 and readers[0].kind == "CAST":
            wide = readers[0].outputs[0]
            graph.remove_op(readers[0])
            del graph.tensors[name]
            graph.rename(wide, name)
            touched.append(name)
    for name in list(graph.outputs):
        cast = graph.producer(name)
        if graph.tensors[name].dtype == DType.FLOAT16 and cast is not None and cast.kind == "CAST" \
                and cast.inputs[0] not in graph.outputs and cast.inputs[0] not in graph.inputs:
            wide = cast.inputs[0]
            graph.remove_op(cast)
            del graph.tensors[name]
            graph.rename(wide, name)
            touched.append(name)
    return touched


def _plain_8bit_uses(graph: Graph) -> list[Diagnostic]:
    """int8/uint8 values that are plain integers (a Cast's result, not quantized data) may only
    meet CASTs: TFLite's other kernels would read them as quantized numbers."""
    plain = {n for n, t in graph.tensors.items() if t.dtype in (DType.INT8, DType.UINT8)
             and t.quant is None and not t.is_constant}
    return [Diagnostic(op.origin, op.kind, "plain_8bit_arithmetic",
                       f"reads the 8-bit integer '{name}' (a Cast's result); TFLite has no kernel for "
                       f"plain 8-bit integer arithmetic", "cast to int32 instead")
            for op in graph.ops if op.kind != "CAST" for name in dict.fromkeys(op.inputs) if name in plain]


UPGRADE_OPSET = 13  # what models older than SUPPORTED_OPSETS are converted to
DOWNGRADE_OPSET = SUPPORTED_OPSETS.stop - 1  # what newer ones are converted to


def _convert_opset(model: onnx.ModelProto, path: str, notes: list[str]) -> tuple[onnx.ModelProto, int, str]:
    """A model outside SUPPORTED_OPSETS converted with onnx.version_converter: below 11 (the ONNX
    model zoo's classics) upgraded to UPGRADE_OPSET, which rewrites the ops whose signature changed
    (Upsample, Slice/Pad/Clip attributes, ...); above 21 (onnx 1.17+ exporters) downgraded to 21,
    which only the ops whose newer versions widen types and keep their meaning allow (an op new
    since, RMSNormalization, Swish, has no previous version and stops it). A model it cannot
    convert keeps its opset, with the converter's reason, and is refused by the caller."""
    opset = default_opset(model)
    if opset in SUPPORTED_OPSETS:
        return model, opset, ""
    from onnx import version_converter

    target = UPGRADE_OPSET if opset < SUPPORTED_OPSETS.start else DOWNGRADE_OPSET
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:  # noqa: BLE001 - the converter raises bare RuntimeError/ValueError/...
        log.info("%s: onnx.version_converter could not convert opset %d: %s", path, opset, exc)
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return model, opset, reason.split(": ")[-1]  # (the assertion's own words, not its source path)
    # The converter drops the names (and outputs) of nodes it rewrites, in order, adding Constants
    # for attributes that became inputs: the rewritten nodes get their names back when they pair
    # one to one with the model's, so errors and --float-ops still name the model's own nodes.
    old = [n for n in model.graph.node if n.op_type != "Constant"]
    new = [n for n in converted.graph.node if n.op_type != "Constant"]
    if len(old) == len(new):
        for before, after in zip(old, new):
            after.name = after.name or before.name
    way = "upgraded" if target > opset else "converted down"
    notes.append(f"model {way} from ONNX opset {opset} to {target} with onnx.version_converter")
    return converted, default_opset(converted), ""


def load_onnx(path: str, input_shapes: dict[str, tuple[int, ...]] | None = None,
              max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES, conv_branches: str | None = "all") -> LoadResult:
    """Read, validate, normalise and import an ONNX model; report every unsupported node at once.

    `conv_branches`: which parallel conv branches merge (tflq.frontend.conv_branches.merge_policy).
    Validation comes first (tflq.frontend.validate): structure and tensor data, the ONNX checker
    with strict shape inference, and every op spec's declared checks; an invalid model is an
    InvalidModelError naming the node before any folding.
    """
    model, external_files = read_model_and_data_files(path)
    check_structure(model, path, max_tensor_bytes)
    source_nodes = frozenset(n.name for n in model.graph.node if n.name)
    matmul_nbits_as_matmul(model, path)
    standard_qdq_from_contrib(model, default_opset(model))
    standard_ops_from_fused(model, default_opset(model), path)
    dynamic = float_ops_from_dynamic(model)
    qoperator = qdq_from_qoperator(model)
    dequantize_before_data_movement(model)
    infinite = float_where_the_grid_is_infinite(model)
    refuse_onnxruntime_quantized(model, path)
    notes: list[str] = []
    if dynamic:
        kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(dynamic.items()))
        notes.append(f"{sum(dynamic.values())} op(s) dynamically quantized by onnxruntime ({kinds}) read "
                     f"as float ops on their weight integers (onnxruntime quantizes their activations "
                     f"per run, as the hybrid kernels of a weights-only file do)")
    if qoperator:
        kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(qoperator.items()))
        notes.append(f"{sum(qoperator.values())} op(s) quantized by onnxruntime in its operator format "
                     f"({kinds}) read as the float op between DequantizeLinear and QuantizeLinear on "
                     f"their own grids")
    if infinite:
        shown = ", ".join(f"'{name}'" for name in infinite[:3]) + (", ..." if len(infinite) > 3 else "")
        notes.append(f"{len(infinite)} tensor(s) quantized with an infinite scale kept float ({shown}): "
                     f"they hold infinities (an additive attention mask of -inf, calibrated as a range)")
    model, opset, why = _convert_opset(model, path, notes)
    if opset not in SUPPORTED_OPSETS:
        because = f" and onnx.version_converter could not convert it ({why})" if why else ""
        raise UnsupportedModelError(
            f"{path}: ONNX opset {opset} is not supported (tflq handles opsets "
            f"{SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1}){because}; re-export it "
            f"at an opset in that range")
    fix_input_shapes(model, input_shapes or {}, notes)
    check_input_sizes(model, path, max_tensor_bytes)
    check_generators(model, path, max_tensor_bytes)
    inferred = _infer(skeleton(model), strict=True, path=path)
    run_onnx_checker(inferred, path)
    take_inferred(model, inferred)
    check_nodes(model, path)
    check_value_shapes(model, path, max_tensor_bytes)
    fold = fold_model(model, max_tensor_bytes)
    if fold.folded:
        log.info("folded %d constant nodes", fold.folded)
        check_nodes(model, path)  # folding made more shapes and values known
        check_value_shapes(model, path, max_tensor_bytes)
    gather_nd_as_gather(model)
    if channel_windows(model):
        log.info("recognised torch's LocalResponseNorm windows")
    gather_permutation_as_transpose(model)
    gelus = fuse_erf_gelu(model)
    if gelus:
        log.info("recognised %d erf-based GELU patterns", gelus)
    group_norms = group_norm_from_instance_norm(model)
    if group_norms:
        log.info("recognised %d GroupNorm patterns (Reshape, InstanceNormalization, Reshape)", group_norms)
    merged = merge_parallel_convs(model, identities=conv_branches == "all") if conv_branches else 0
    if merged:
        log.info("merged %d sums of parallel convolution branches into one conv each", merged)
    shuffles = pixel_shuffles_as_depth_ops(model)
    if shuffles:
        log.info("recognised %d PixelShuffle/PixelUnshuffle patterns (Reshape, Transpose, Reshape)", shuffles)
    result = import_graph(model, opset, notes, fold, max_tensor_bytes)
    result.external_files = external_files
    result.graph.source_nodes = source_nodes
    result.qdq = find_qdq(model)
    check_tensor_limits(result.graph, max_tensor_bytes)
    return result


def check_tensor_limits(graph: Graph, max_tensor_bytes: int) -> None:
    """Every tensor of the imported graph fits TFLite's int32 dimensions and the byte limit."""
    producers = graph.producers()
    for name, t in graph.tensors.items():
        op = producers.get(name)
        where = f"tensor '{name}'"
        if op is not None and op.origin:
            where += f" (output of node '{op.origin}')"
        if any(d < 0 or d > INT32_MAX for d in t.shape):
            raise ResourceLimitError(f"{where}: shape {list(t.shape)} has a dimension outside "
                                     f"TFLite's int32 range")
        nbytes = math.prod(t.shape) * t.dtype.numpy.itemsize
        if nbytes > max_tensor_bytes:
            raise ResourceLimitError(f"{where}: shape {list(t.shape)} needs {nbytes} bytes, above "
                                     f"--max-tensor-bytes {max_tensor_bytes}")


def import_graph(model: onnx.ModelProto, opset: int, notes: list[str],
                 fold: FoldResult | None = None,
                 max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> LoadResult:
    g = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in g.initializer}
    shapes = _static_shapes(model)
    dtypes = {vi.name: vi.type.tensor_type.elem_type
              for vi in list(g.value_info) + list(g.input) + list(g.output)}
    graph = Graph()
    ctx = ImportContext(graph, shapes, dtypes, constants, opset)
    fold = fold or FoldResult()
    ctx.unknown_shapes = fold.unknown
    ctx.max_tensor_bytes = max_tensor_bytes
    diagnostics: list[Diagnostic] = []
    for vi in g.input:
        if vi.name in constants:
            continue
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            diagnostics.append(Diagnostic(vi.name, "", "input_type",
                                          f"graph input of {(kind or 'no').replace('_type', '')} type; "
                                          f"tflq converts tensor inputs"))
            continue
        elem = vi.type.tensor_type.elem_type
        if elem not in INPUT_TYPES:
            diagnostics.append(Diagnostic(vi.name, "", "input_dtype",
                                          f"input is {onnx.TensorProto.DataType.Name(elem)}; "
                                          f"tflq converts float32, float16, int32, int64 and bool inputs"))
        try:
            graph.inputs.append(ctx.tensor(vi.name))
        except Unsupported as exc:
            diagnostics.append(exc.diagnostic)
            continue
        if elem == onnx.TensorProto.FLOAT16:
            _float16_input(ctx, vi.name)
    for index, node in enumerate(g.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
        ctx.current_node = node
        if node.name in fold.refused:
            diagnostics.append(fold.refused[node.name])
            ctx.refused_values.update(node.output)
            continue
        spec = registry.importer(node.op_type) if node.domain in ("", "ai.onnx") else None
        if spec is None:
            diagnostics.append(Diagnostic(node.name, node.op_type, "unsupported_op",
                                          f"no converter for ONNX op {node.domain + '.' if node.domain else ''}"
                                          f"{node.op_type}"))
            ctx.refused_values.update(node.output)
            continue
        try:
            spec.from_onnx(node, ctx)
        except Unsupported as exc:
            diagnostics.append(exc.diagnostic)
            ctx.refused_values.update(node.output)
    ctx.current_node = None
    diagnostics += _plain_8bit_uses(graph)
    if diagnostics:
        names = ", ".join(f"'{d.node}' ({d.op_type or 'input'})" for d in diagnostics)
        raise UnsupportedModelError(f"{len(diagnostics)} node(s) cannot be converted: {names}",
                                    diagnostics)
    for vi in g.output:  # every output has an IR tensor (the loop below renames some)
        try:
            ctx.tensor(vi.name)
        except Unsupported as exc:
            d = exc.diagnostic
            diagnostics.append(Diagnostic(vi.name, "", d.reason_code, f"graph output: {d.message}", d.hint))
    if diagnostics:
        raise UnsupportedModelError(f"{len(diagnostics)} graph output(s) cannot be converted: "
                                    + ", ".join(f"'{d.node}'" for d in diagnostics), diagnostics)
    for vi in g.output:
        elem = vi.type.tensor_type.elem_type
        if elem == onnx.TensorProto.FLOAT16 and graph.tensors[ctx.tensor(vi.name)].dtype == DType.FLOAT32:
            name = _float16_output(ctx, vi.name)  # (renames: graph.outputs is rebuilt first)
            graph.outputs.append(name)
            continue
        if elem in (onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16):
            notes.append(f"output '{vi.name}' is {onnx.TensorProto.DataType.Name(elem).lower()} in the "
                         f"model; the file computes and returns it in float32")
        name = ctx.tensor(vi.name)
        if name != vi.name:
            # The output was aliased (an Identity at the end): keep the ONNX output name.
            if vi.name in graph.tensors:
                raise InvalidModelError(f"output '{vi.name}' is ambiguous")
            if name in graph.inputs or graph.is_constant(name) or name in graph.outputs:
                out = graph.add_activation(vi.name, graph.tensors[name].dtype, graph.tensors[name].shape,
                                           graph.tensors[name].layout)
                shape_name = graph.add_constant(f"{vi.name}/shape", np.array(graph.tensors[name].shape,
                                                                             np.int32))
                graph.add_op(Op("RESHAPE", [name, shape_name], [out], origin=vi.name))
                name = out
            else:
                graph.rename(name, vi.name)
                # Other outputs aliased to the same tensor now find it under its new name.
                ctx._alias = {k: vi.name if v == name else v for k, v in ctx._alias.items()}
                name = vi.name
        graph.outputs.append(name)
    return LoadResult(graph, opset, notes)  # (not the model: its weights are the graph's now)
