"""The ONNX model again, for calibration in onnxruntime (tflq.calibration.engines): read as the
loader read it (input shapes fixed), then given the outputs calibration needs; and onnxruntime's
own optimized copy of that model, its reductions made cheaper (reductions_in_place)."""
from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from tflq.frontend.onnx_loader import fix_input_shapes

OUTPUT_PREFIX = "tflq.calibration/"
NCHWC_DOMAIN = "com.microsoft.nchwc"  # onnxruntime's blocked layout (its NchwcTransformer)
# ops of onnxruntime's optimized graphs whose blocked output has the channels of their first input
NCHWC_SAME_CHANNELS = {NCHWC_DOMAIN: {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "Upsample"},
                       "": {"Add", "Sum", "Mul", "Relu", "Sigmoid", "Tanh"}}
REDUCTIONS = ("ReduceMin", "ReduceMax")


class CalibrationModel:
    """The ONNX model's names, then the model with reductions and whole tensors as outputs."""

    def __init__(self, model: onnx.ModelProto, source: bytes | None = None) -> None:
        self.model = model
        self.source = source  # the bytes `model` was parsed from (serialize_keeping_initializers)
        initializers = {init.name for init in model.graph.initializer}
        self.inputs = [vi.name for vi in model.graph.input if vi.name not in initializers]
        self.names = set(self.inputs) | {name for node in model.graph.node for name in node.output}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def finish(self, equivalents: Sequence[tuple[list, list]], reduced: Sequence[str],
               fetched: Sequence[str], dtypes: Mapping[str, np.dtype],
               ranks: Mapping[str, int], sampled: Mapping[str, tuple[int, ...]] | None = None
               ) -> tuple[bytes, tuple[int, ...]]:
        """The serialized model computing `equivalents` ((nodes, initializers) of lowered ops)
        too, whose outputs are the extremes of the `reduced` tensors, then each `fetched` tensor
        whole; dtypes: numpy type by tensor, ranks: rank by reduced tensor. The extremes come
        out concatenated, one output per run of `reduced` of one rank and type (each output
        costs onnxruntime's Python binding ~2 us a run, 130 of them 3% of MobileNetV2's pass):
        the minima of the run, then its maxima. `sampled`: reduced tensors whose minimum is taken
        over every so many of their values: the steps along their last axes (each >= 1). Also
        returns the runs' lengths."""
        graph = self.model.graph
        sampled = sampled or {}
        constants = {init.name for init in graph.initializer}

        def constant(name: str, values: list[int]) -> str:
            name = f"{OUTPUT_PREFIX}{name}"
            if name not in constants:
                constants.add(name)
                graph.initializer.append(helper.make_tensor(name, onnx.TensorProto.INT64, [len(values)], values))
            return name

        for nodes, initializers in equivalents:
            graph.node.extend(nodes)
            graph.initializer.extend(initializers)
        del graph.output[:]
        names = dict(zip(reduced, reduction_names(len(reduced))))
        runs: list[list[str]] = []
        for name in reduced:
            if runs and (ranks[name], dtypes[name]) == (ranks[runs[-1][0]], dtypes[runs[-1][0]]):
                runs[-1].append(name)
            else:
                runs.append([name])
        for number, run in enumerate(runs):
            rank, elem = ranks[run[0]], helper.np_dtype_to_tensor_dtype(np.dtype(dtypes[run[0]]))
            lows, highs = [], []
            for name in run:
                for node, out, into in (("ReduceMin", names[name][0], lows), ("ReduceMax", names[name][1], highs)):
                    if rank == 0:  # its own extreme, as a vector for Concat
                        graph.node.append(helper.make_node("Reshape", [name, constant("shape/1", [1])], [out]))
                    elif node == "ReduceMin" and name in sampled:
                        # every step-th value along each of the last axes
                        steps = sampled[name]
                        axes = list(range(rank - len(steps), rank))
                        picked = out + "/sampled"
                        graph.node.append(helper.make_node(
                            "Slice", [name, constant(f"zeros/{len(steps)}", [0] * len(steps)),
                                      constant(f"ends/{len(steps)}", [np.iinfo(np.int64).max] * len(steps)),
                                      constant("axes/" + ",".join(map(str, axes)), axes),
                                      constant("steps/" + ",".join(map(str, steps)), list(steps))], [picked]))
                        graph.node.append(helper.make_node(node, [picked], [out], keepdims=1))
                    else:
                        graph.node.append(helper.make_node(node, [name], [out], keepdims=1))
                    into.append(out)
            joined = f"{OUTPUT_PREFIX}extremes/{number}"
            graph.node.append(helper.make_node("Concat", lows + highs, [joined], axis=0))
            graph.output.append(helper.make_tensor_value_info(joined, elem, None))
        for name in fetched:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtypes[name]))
            graph.output.append(helper.make_tensor_value_info(name, elem, None))
        runs_lengths = tuple(len(run) for run in runs)
        if self.source is not None:  # (the model's own initializers may hold no data: see
            source, self.source = self.source, None  # parse_without_weights; they are replaced)
            return serialize_keeping_initializers(self.model, source), runs_lengths
        return self.model.SerializeToString(), runs_lengths


def reduction_names(count: int) -> list[tuple[str, str]]:
    return [(f"{OUTPUT_PREFIX}min/{i}", f"{OUTPUT_PREFIX}max/{i}") for i in range(count)]


def read_calibration_model(path: str, input_shapes: Mapping[str, tuple[int, ...]] | None,
                           max_bytes: int) -> tuple[CalibrationModel | None, str]:
    """The model at `path` with its input shapes fixed as the loader fixed them, or None and why.
    Weights in external data files (torch.onnx.export's default) are read in as the loader reads
    them, so that the model onnxruntime gets is whole in memory."""
    import os

    from onnx import external_data_helper

    from tflq.frontend.onnx_loader import read_model_and_data_files

    try:
        with open(path, "rb") as f:
            source = f.read()
        model = parse_without_weights(source)
        size = len(source)
        if any(external_data_helper.uses_external_data(t) for t in external_data_helper._get_all_tensors(model)):
            model, files = read_model_and_data_files(path)
            source = None  # (its initializers are not those of the file)
            size += sum(os.path.getsize(f) for f in files)
    except Exception as exc:  # noqa: BLE001 - the loader read it; anything odd: no onnxruntime
        return None, f"the model did not load again ({type(exc).__name__})"
    if size > max_bytes:
        return None, "the model is too large to hand to onnxruntime in memory"
    try:
        fix_input_shapes(model, dict(input_shapes or {}), [])
    except Exception as exc:  # noqa: BLE001
        return None, f"the model's input shapes could not be fixed again ({type(exc).__name__})"
    return CalibrationModel(model, source), ""


def with_cheaper_reductions(saved: bytes) -> tuple[bytes, int]:
    """onnxruntime's optimized model as its session saved it, edited by reductions_in_place, and
    the number of reductions that read blocked tensors."""
    try:
        model = parse_without_weights(saved)
        moved = reductions_in_place(model)
        return serialize_keeping_initializers(model, saved), moved
    except ValueError:
        model = onnx.load_from_string(saved)
        moved = reductions_in_place(model)
        return model.SerializeToString(), moved


# Protocol buffers wire format: field numbers of ModelProto.graph and GraphProto.initializer
MODEL_GRAPH_FIELD, GRAPH_INITIALIZER_FIELD = 7, 5


def serialize_keeping_initializers(model: onnx.ModelProto, source: bytes) -> bytes:
    """`model` serialized, its initializers copied as bytes from `source`, the serialized model
    it was parsed from, whose initializers it still has unchanged and first (the edits here
    change nodes, inputs and outputs, and add initializers after them). Serializing the weights
    again is most of the cost of serializing a model (ResNet-18: 0.06 s for 47 MB; parsing them
    costs 0.006), so the model goes out without the initializers it was parsed with, followed by
    a second `graph` field holding those as they were: a parser merges the two (a message field
    that occurs twice is merged, and repeated fields are concatenated: protobuf's encoding
    documentation), so the bytes parse as the model (the added initializers now first). The
    model loses the source's initializers. Raises
    ValueError when `source` is not such a model."""
    records = initializer_records(source)
    graph = model.graph
    if len(graph.initializer) < len(records) or any(
            graph.initializer[i].name != name for i, (name, _) in enumerate(records)):
        raise ValueError("the model's initializers are not the source's")
    del graph.initializer[:len(records)]
    head = model.SerializeToString()
    length = sum(len(view) for _, view in records)
    return b"".join([head, _tag(MODEL_GRAPH_FIELD, 2), _varint(length)] + [view for _, view in records])


# TensorProto fields that hold its values (float, int32, string, int64, raw, double, uint64 data)
TENSOR_DATA_FIELDS = frozenset({4, 5, 6, 7, 9, 10, 11})


def parse_without_weights(data: bytes) -> onnx.ModelProto:
    """The serialized model `data` parsed with its graph's initializers in place but without
    their values (name, type, dims, data location kept): what the calibration model's edits read
    (names, shapes), for serialize_keeping_initializers to replace by the source's records. A
    parsed copy of the weights (the size of the model) is never made. Raises ValueError on bytes
    that are not a model, or when `data` has no graph field to strip."""
    view = memoryview(data)
    parts, at, graphs = [], 0, 0
    for field, record_start, record_end, (start, end) in _fields(view, 0, len(view)):
        if field != MODEL_GRAPH_FIELD:
            continue
        graph, inner_at = [], start
        for inner, inner_start, inner_end, payload in _fields(view, start, end):
            if inner == GRAPH_INITIALIZER_FIELD:
                stub = _without_fields(view, *payload, TENSOR_DATA_FIELDS)
                graph += [view[inner_at:inner_start], _tag(GRAPH_INITIALIZER_FIELD, 2), _varint(len(stub)), stub]
                inner_at = inner_end
        graph.append(view[inner_at:end])
        joined = b"".join(graph)
        parts += [view[at:record_start], _tag(MODEL_GRAPH_FIELD, 2), _varint(len(joined)), joined]
        at, graphs = record_end, graphs + 1
    if graphs != 1:
        raise ValueError("not one graph field")
    parts.append(view[at:])
    try:
        return onnx.load_from_string(b"".join(parts))
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError
        raise ValueError(f"the stripped model does not parse ({type(exc).__name__})") from None


def _without_fields(view: memoryview, start: int, end: int, fields: frozenset[int]) -> bytes:
    """The message view[start:end] without its length-delimited fields numbered `fields`."""
    parts, at = [], start
    for field, record_start, record_end, _ in _fields(view, start, end):
        if field in fields:
            parts.append(view[at:record_start])
            at = record_end
    parts.append(view[at:end])
    return b"".join(parts)


def initializer_records(data: bytes) -> list[tuple[str, memoryview]]:
    """(name, the field's bytes: tag, length and TensorProto) of each initializer of the
    serialized ModelProto `data`, in order. Raises ValueError on bytes that are not a model."""
    view = memoryview(data)
    records = []
    for field, _, _, (start, end) in _fields(view, 0, len(view)):
        if field == MODEL_GRAPH_FIELD:
            for inner, record_start, record_end, payload in _fields(view, start, end):
                if inner == GRAPH_INITIALIZER_FIELD:
                    records.append((_tensor_name(view, *payload), view[record_start:record_end]))
    return records


def _tensor_name(view: memoryview, start: int, end: int) -> str:
    for field, _, _, (a, b) in _fields(view, start, end):
        if field == 8:  # TensorProto.name
            return bytes(view[a:b]).decode()
    return ""


def _fields(view: memoryview, start: int, end: int):
    """(field number, record start, record end, (payload start, payload end)) of each
    length-delimited field in view[start:end]; other fields are skipped."""
    at = start
    while at < end:
        record = at
        key, at = _read_varint(view, at)
        kind, field = key & 7, key >> 3
        if kind == 0:
            _, at = _read_varint(view, at)
        elif kind == 1:
            at += 8
        elif kind == 5:
            at += 4
        elif kind == 2:
            length, at = _read_varint(view, at)
            if at + length > end:
                raise ValueError("truncated field")
            yield field, record, at + length, (at, at + length)
            at += length
        else:
            raise ValueError(f"wire type {kind} in a model")
    if at != end:
        raise ValueError("truncated field")


def _read_varint(view: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(view) or shift > 63:
            raise ValueError("bad varint")
        byte = view[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(field: int, kind: int) -> bytes:
    return _varint(field << 3 | kind)


def reductions_in_place(model: onnx.ModelProto) -> int:
    """Edit onnxruntime's optimized copy of a calibration model (what its session saves as
    SessionOptions.optimized_model_filepath) so that calibration's reductions cost less, and
    return how many now read a blocked tensor.

    onnxruntime keeps convolution outputs in a blocked layout (NCHWc: channels in blocks of 8 or
    16) and copies a tensor back to NCHW (ReorderOutput) for any other consumer, such as the two
    reductions of each recorded tensor: a copy per tensor, made after the whole forward pass,
    which costs more than the reductions. A minimum or maximum over the whole tensor does not
    depend on the order of its values, and a sampled minimum (CalibrationModel.finish) is exact
    whichever of them it samples, so a reduction reads the blocked tensor itself when that holds
    exactly the tensor's values: no channels padded up to the block (the padded count is
    the first dimension of the blocked convolution's weights). Then each reduction (and each copy
    still needed) moves right after the node making its tensor, so it reads it while in cache:
    onnxruntime's default execution order (depth first from the outputs that concatenate the
    extremes) then runs them there (measured on MobileNetV2: 1.18x the plain pass, against 1.34x
    with the nodes in onnxruntime's order).
    """
    graph = model.graph
    nodes = list(graph.node)
    producers = {name: node for node in nodes for name in node.output}
    consumers = _consumers(nodes)
    dims = {init.name: tuple(init.dims) for init in graph.initializer}
    outputs = {o.name for o in graph.output}
    moved, dropped = 0, set()
    for node in nodes:
        if node.op_type != "ReorderOutput" or node.domain != NCHWC_DOMAIN or len(node.input) != 1:
            continue
        channels = next((a.i for a in node.attribute if a.name == "channels"), None)
        if channels is None or _stored_channels(node.input[0], producers, dims) != channels:
            continue
        users = consumers[node.output[0]]
        for user in users:
            if _is_reduction(user):
                user.input[0] = node.input[0]
                moved += 1
        if users and all(_is_reduction(u) for u in users) and node.output[0] not in outputs:
            dropped.add(id(node))
    nodes = [node for node in nodes if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(_reductions_early(nodes, graph))
    return moved


def _is_reduction(node) -> bool:
    """A node of calibration's that may read its tensor in any order of its values: a reduction,
    or the slice a sampled minimum is taken over (CalibrationModel.finish)."""
    if node.domain not in ("", "ai.onnx") or not node.output[0].startswith(OUTPUT_PREFIX):
        return False
    return node.op_type in REDUCTIONS or (node.op_type == "Slice" and node.output[0].endswith("/sampled"))


def _consumers(nodes) -> dict[str, list]:
    consumers = defaultdict(list)
    for node in nodes:
        for name in node.input:
            consumers[name].append(node)
    return consumers


def _stored_channels(name: str, producers: Mapping, dims: Mapping[str, tuple[int, ...]]) -> int | None:
    """The channel count blocked tensor `name` is stored with (padded to the block), or None
    when it cannot be told: from the weights of the blocked convolution that made it."""
    for _ in range(len(producers) + 1):
        node = producers.get(name)
        if node is None or not node.input:
            return None
        if node.domain == NCHWC_DOMAIN and node.op_type == "Conv":
            weights = dims.get(node.input[1]) if len(node.input) > 1 else None
            return weights[0] if weights else None
        if node.op_type not in NCHWC_SAME_CHANNELS.get("" if node.domain == "ai.onnx" else node.domain, ()):
            return None
        name = node.input[0]
    return None


def _reductions_early(nodes: list, graph) -> list:
    """`nodes` (in topological order) with the nodes that only serve calibration's outputs
    each moved right after the last of its inputs is made."""
    consumers = _consumers(nodes)
    outputs = {o.name for o in graph.output}
    serving: set[int] = set()
    for node in reversed(nodes):
        if node.output and all(
                (name.startswith(OUTPUT_PREFIX) and name in outputs) or
                (name not in outputs and consumers[name] and all(id(c) in serving for c in consumers[name]))
                for name in node.output):
            serving.add(id(node))
    available = {i.name for i in graph.input} | {init.name for init in graph.initializer} | {""}
    missing, waiting = {}, defaultdict(list)
    for node in nodes:
        if id(node) in serving:
            missing[id(node)] = sum(1 for name in set(node.input) if name not in available)
            for name in set(node.input):
                if name not in available:
                    waiting[name].append(node)
    order: list = []

    def emit(node) -> None:
        stack = [node]
        while stack:
            current = stack.pop()
            order.append(current)
            ready = []
            for name in current.output:
                for user in waiting.pop(name, ()):
                    missing[id(user)] -= 1
                    if missing[id(user)] == 0:
                        ready.append(user)
            stack.extend(reversed(ready))  # in their order in `nodes`

    for node in [node for node in nodes if id(node) in serving and missing[id(node)] == 0]:
        emit(node)  # (reads only graph inputs and initializers)
    for node in nodes:
        if id(node) not in serving:
            emit(node)
    placed = {id(node) for node in order}
    return order + [node for node in nodes if id(node) not in placed]  # (none in a valid graph)
