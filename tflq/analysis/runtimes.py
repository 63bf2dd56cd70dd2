"""The two sides of an evaluation: the float ONNX model (onnxruntime, else tflq's reference
interpreter on the IR) and the .tflite in LiteRT, both fed the same samples in ONNX layout.

The .tflite's inputs and outputs are bound to the ONNX model's by name (by position when the
names differ), each with the axis order and the 8-bit parameters it has in the file: a
channels-last input gets the sample transposed, an 8-bit input the sample quantized with the
file's scale and zero point, and outputs come back dequantized and in ONNX order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from tflq.errors import TflqError
from tflq.ir.dtypes import DType
from tflq.ir.graph import Graph
from tflq.ir.layout import onnx_shape, to_channels_first, to_channels_last
from tflq.ir.quant import QuantParams
from tflq.runtime.interpreter import GraphRunner

Sample = Mapping[str, np.ndarray]


class EvaluationError(TflqError):
    """The evaluation data, labels or the two models do not fit together."""

    reason_code = "evaluation"


def graph_feeds(graph: Graph, sample: Sample) -> dict[str, np.ndarray]:
    """A sample (ONNX layout) as feeds in the IR's layout (channels-last inputs transposed)."""
    feeds = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        if t.is_constant:
            continue
        value = np.asarray(sample[name])
        if t.layout.channels_last and value.ndim == t.rank:
            value = value.transpose(to_channels_last(t.rank))
        feeds[name] = value
    return feeds


def computed_outputs(graph: Graph) -> list[str]:
    """The graph's outputs that are computed (a constant output has no tensor to compare)."""
    return [n for n in graph.outputs if not graph.tensors[n].is_constant]


def graph_outputs_in_onnx_layout(graph: Graph, outputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    result = []
    for name in computed_outputs(graph):
        t = graph.tensors[name]
        value = np.asarray(outputs[name])
        if t.layout.channels_last and value.ndim == t.rank:
            value = value.transpose(to_channels_first(t.rank))
        result.append(value)
    return result


class FloatModel:
    """The float model: onnxruntime on the ONNX file when installed (`prefer` "auto" or
    "onnxruntime"), else tflq's reference kernels on the imported graph (`prefer` "tflq")."""

    def __init__(self, model_path: str, graph: Graph, prefer: str = "auto") -> None:
        self.graph = graph
        self.session = None
        if prefer not in ("auto", "onnxruntime", "tflq"):
            raise EvaluationError(f"float runtime '{prefer}': use auto, onnxruntime or tflq")
        if prefer != "tflq":
            try:
                import onnxruntime
            except ImportError:
                if prefer == "onnxruntime":
                    raise EvaluationError("onnxruntime is not installed (pip install onnxruntime, "
                                          "or pip install 'tflq[eval]')") from None
                onnxruntime = None
            if onnxruntime is not None:
                try:
                    self.session = onnxruntime.InferenceSession(
                        model_path, providers=["CPUExecutionProvider"])
                except Exception as exc:  # onnxruntime raises its own exception types
                    raise EvaluationError(f"{model_path}: onnxruntime cannot load the model "
                                          f"({type(exc).__name__}: {exc})") from None
                self.engine = f"onnxruntime {onnxruntime.__version__}"
        if self.session is None:
            self.runner = GraphRunner(graph)
            self.engine = "tflq reference interpreter"

    def run(self, sample: Sample) -> list[np.ndarray]:
        """The outputs (ONNX layout, in the graph's output order) for one sample."""
        if self.session is not None:
            feeds = {name: np.asarray(sample[name]) for name in self.graph.inputs
                     if not self.graph.tensors[name].is_constant}
            try:
                return [np.asarray(v) for v in self.session.run(computed_outputs(self.graph), feeds)]
            except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
                raise EvaluationError(f"onnxruntime failed on the evaluation data "
                                      f"({type(exc).__name__}: {exc})") from None
        return graph_outputs_in_onnx_layout(self.graph, self.runner.run(graph_feeds(self.graph, sample)))


@dataclass(frozen=True)
class Binding:
    """One model input or output of the .tflite, bound to the ONNX model's of the same role."""

    name: str                        # the ONNX name
    file_name: str
    index: int                       # LiteRT tensor index
    onnx_shape: tuple[int, ...]
    file_shape: tuple[int, ...]
    file_dtype: np.dtype
    channels_last: bool              # the file holds it channels-last (NHWC, NWC)
    quant: QuantParams | None        # the file's params of an 8-bit (or int16) float value

    def to_file(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        if self.channels_last:
            value = value.transpose(to_channels_last(value.ndim))
        if self.quant is not None:
            return self.quant.quantize(value)
        return np.ascontiguousarray(value, dtype=self.file_dtype)

    def from_file(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        if self.quant is not None:
            value = self.quant.dequantize(value)
        if self.channels_last:
            value = value.transpose(to_channels_first(value.ndim))
        return value


def _params(detail: dict) -> QuantParams | None:
    scale, zero_point = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    if not scale or dtype.kind not in "iu":
        return None
    return QuantParams.per_tensor(DType.from_numpy(dtype), float(scale), int(zero_point))


def bind(graph: Graph, details: Sequence[dict], role: str, tflite_path: str) -> list[Binding]:
    """The .tflite's inputs (or outputs: `role`) bound to the graph's, or EvaluationError naming
    the first that does not fit: count, shape (as is or channels-last), type."""
    names = [n for n in graph.inputs if not graph.tensors[n].is_constant] if role == "input" \
        else computed_outputs(graph)
    if len(details) != len(names):
        raise EvaluationError(f"{tflite_path}: the .tflite has {len(details)} {role}(s), the ONNX "
                              f"model {len(names)} ({', '.join(names)}): not a conversion of this model")
    by_name = {d["name"]: d for d in details}
    paired = [by_name[n] for n in names] if set(by_name) == set(names) else list(details)
    bindings = []
    for name, detail in zip(names, paired):
        t = graph.tensors[name]
        shape = onnx_shape(t)
        file_shape = tuple(int(d) for d in detail["shape"])
        last = tuple(shape[i] for i in to_channels_last(len(shape))) if len(shape) >= 3 else None
        if file_shape == shape and (last != shape or not t.layout.channels_last):
            channels_last = False
        elif last is not None and file_shape == last:
            channels_last = True
        else:
            raise EvaluationError(
                f"{tflite_path}: {role} '{detail['name']}' has shape {list(file_shape)}; the ONNX "
                f"model's {role} '{name}' is {list(shape)}"
                + (f" ({list(last)} channels-last)" if last else "")
                + " (give --input-shape as for the conversion)")
        quant = _params(detail)
        file_dtype = np.dtype(detail["dtype"])
        if t.dtype.is_float != (quant is not None or file_dtype.kind == "f"):
            raise EvaluationError(f"{tflite_path}: {role} '{detail['name']}' is {file_dtype} in the "
                                  f".tflite, '{name}' is {t.dtype.name.lower()} in the ONNX model")
        bindings.append(Binding(name, detail["name"], int(detail["index"]), shape, file_shape,
                                file_dtype, channels_last, quant))
    return bindings


def litert():
    """LiteRT's interpreter module, or EvaluationError naming what to install."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise EvaluationError("evaluating a .tflite needs LiteRT: pip install ai-edge-litert "
                              "(or pip install 'tflq[eval]')") from None
    return interpreter


# Loads a .tflite (argv[1]) and invokes it once on zero inputs: run in a child process, a file
# that makes LiteRT abort (a kernel's prepare check) fails that process, not the caller.
_LOAD_AND_INVOKE = """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1], num_threads=1)
interpreter.allocate_tensors()
for detail in interpreter.get_input_details():
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
interpreter.invoke()
"""


def invoke_in_child(path: str, timeout: float):
    """Load and invoke the .tflite at `path` once in a child Python (this one's executable):
    the subprocess.CompletedProcess (text output), or subprocess.TimeoutExpired."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _LOAD_AND_INVOKE, path], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def litert_version() -> str:
    try:
        from importlib.metadata import version

        return f"LiteRT {version('ai-edge-litert')}"
    except Exception:  # noqa: BLE001 - a version string is cosmetic
        return "LiteRT"


class TfliteModel:
    """The .tflite in LiteRT, bound to the float graph's inputs and outputs.

    preserve_all_tensors: keep every intermediate tensor readable after invoke (LiteRT's builtin
    kernels, no delegate, so that each tensor is computed by its own op)."""

    def __init__(self, data: bytes, graph: Graph, tflite_path: str,
                 preserve_all_tensors: bool = False) -> None:
        module = litert()
        kwargs = {}
        if preserve_all_tensors:
            kwargs = {"experimental_preserve_all_tensors": True,
                      "experimental_op_resolver_type":
                          module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
        try:
            self.interpreter = module.Interpreter(model_content=data, num_threads=1, **kwargs)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise EvaluationError(f"{tflite_path}: LiteRT cannot load the file ({exc})") from None
        self.path = tflite_path
        self.inputs = bind(graph, self.interpreter.get_input_details(), "input", tflite_path)
        self.outputs = bind(graph, self.interpreter.get_output_details(), "output", tflite_path)

    def invoke(self, sample: Sample) -> None:
        for b in self.inputs:
            self.interpreter.set_tensor(b.index, b.to_file(sample[b.name]))
        try:
            self.interpreter.invoke()
        except RuntimeError as exc:
            raise EvaluationError(f"{self.path}: LiteRT failed to run the file ({exc})") from None

    def run(self, sample: Sample) -> list[np.ndarray]:
        """The outputs (ONNX layout, dequantized) for one sample."""
        self.invoke(sample)
        return [b.from_file(self.interpreter.get_tensor(b.index)) for b in self.outputs]
