"""The ONNX model again, for calibration in onnxruntime (tflq.calibration.engines): read as the
loader read it (input shapes fixed), then given the outputs calibration needs."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from tflq.frontend.onnx_loader import fix_input_shapes

OUTPUT_PREFIX = "tflq.calibration/"


class CalibrationModel:
    """The ONNX model's names, then the model with reductions and whole tensors as outputs."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        initializers = {init.name for init in model.graph.initializer}
        self.inputs = [vi.name for vi in model.graph.input if vi.name not in initializers]
        self.names = set(self.inputs) | {name for node in model.graph.node for name in node.output}
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def finish(self, equivalents: Sequence[tuple[list, list]], reduced: Sequence[str],
               fetched: Sequence[str], dtypes: Mapping[str, np.dtype]) -> bytes:
        """The serialized model computing `equivalents` ((nodes, initializers) of lowered ops)
        too, whose outputs are the minimum and maximum of each `reduced` tensor (as
        reduction_names says) and each `fetched` tensor whole; dtypes: numpy type by tensor."""
        graph = self.model.graph
        for nodes, initializers in equivalents:
            graph.node.extend(nodes)
            graph.initializer.extend(initializers)
        del graph.output[:]
        for name, (low, high) in zip(reduced, reduction_names(len(reduced))):
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtypes[name]))
            for node, out in (("ReduceMin", low), ("ReduceMax", high)):
                graph.node.append(helper.make_node(node, [name], [out], keepdims=0))
                graph.output.append(helper.make_tensor_value_info(out, elem, []))
        for name in fetched:
            elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtypes[name]))
            graph.output.append(helper.make_tensor_value_info(name, elem, None))
        return self.model.SerializeToString()


def reduction_names(count: int) -> list[tuple[str, str]]:
    return [(f"{OUTPUT_PREFIX}min/{i}", f"{OUTPUT_PREFIX}max/{i}") for i in range(count)]


def read_calibration_model(path: str, input_shapes: Mapping[str, tuple[int, ...]] | None,
                           max_bytes: int) -> tuple[CalibrationModel | None, str]:
    """The model at `path` with its input shapes fixed as the loader fixed them, or None and why."""
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - the loader read it; anything odd: no onnxruntime
        return None, f"the model did not load again ({type(exc).__name__})"
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        return None, "the model keeps weights in external data files"
    import os  # (the file's size: protobuf's ByteSize serializes the model to count it)

    if os.path.getsize(path) > max_bytes:  # all its data is in the file (checked above)
        return None, "the model is too large to hand to onnxruntime in memory"
    try:
        fix_input_shapes(model, dict(input_shapes or {}), [])
    except Exception as exc:  # noqa: BLE001
        return None, f"the model's input shapes could not be fixed again ({type(exc).__name__})"
    return CalibrationModel(model), ""
