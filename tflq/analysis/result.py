"""EvalResult: what `tflq eval` measured, as typed dataclasses, a terminal summary and stable JSON.

JSON shape (`EvalResult.to_json()`, `schema` 1; new keys may be added, none renamed or removed):

    {"schema": 1, "onnx_model": str, "tflite_model": str,
     "float_runtime": "onnxruntime 1.32.0" | "tflq reference interpreter",
     "tflite_runtime": "LiteRT 2.3.0", "samples": int,
     "inputs": [{"name", "onnx_shape", "file_shape", "file_dtype", "scale", "zero_point"}],
     "outputs": [{"name", "onnx_shape", "file_shape", "file_dtype", "scale", "zero_point",
                  "sqnr_mean_db", "sqnr_worst_db", "worst_sample", "sqnr_pooled_db",
                  "cosine_mean", "cosine_worst", "max_abs_error",
                  "classifier": bool, "top1_agreement": float | null,
                  "float_accuracy": float | null, "tflite_accuracy": float | null}],
     "layers": null | {"samples", "sensitivity_samples", "simulated_sqnr_db",
                       "ranking": [node, ...] (worst first),
                       "fallback_check": {"nodes": [...], "fallback_sqnr_db": [...],
                                          "best": node, "agrees": bool} | null,
                       "layers": [{"node", "kinds", "depth", "weight_sqnr_db", "sensitivity_db",
                                   "rank", "bias_shift", "bias_shift_relative", "off_nearest",
                                   "tensors": [{"tensor", "kind", "depth", "dtype",
                                   "scale", "zero_point", "sqnr_db", "clipped", "float_min",
                                   "float_max", "grid_min", "grid_max", "histogram"}]}],
                       "notes": [str]},
     "checks": [{"option", "output", "figure", "value", "limit", "passed"}],
     "repairs": null | {"source": str,
                        "equalization": null | {"pairs", "skipped", "sweeps", "seconds",
                                                "layers": [{"layer", "range_ratio_before",
                                                            "range_ratio_after"}]},
                        "bias_correction": null | {"layers": [{"layer", "max_shift",
                                                   "relative"}], "skipped", "samples", "seconds"},
                        "rounding": null | {"layers": [{"layer", "nearest_db", "learned_db",
                                            "iterations"}], "candidates", "seconds"}},
     "notes": [str]}

SQNR is 10 log10(signal power / error power) of the .tflite's values against the float model's,
per sample ("mean" is the mean of the per-sample dB figures, leaving out samples without any
error, "worst" their minimum, "pooled" all samples summed first). An SQNR of null means no error at all (infinite). Cosine similarity is
per sample over the flattened output; top-1 agreement the share of rows whose argmax over the
class axis is the same; accuracies are against --labels. Fractions are 0..1.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from tflq.report import BiasCorrection, Equalization, Rounding
from tflq.text import printable

SCHEMA = 1


def db_text(value: float | None) -> str:
    """A dB figure for the terminal: None (or inf) is an exact match."""
    if value is None or value == math.inf:
        return "inf"
    return f"{value:.1f}"


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: an exact match (inf dB) is null."""
    if value is None or math.isinf(value) or math.isnan(value):
        return None
    return float(value)


@dataclass
class IOInfo:
    """One model input or output as the .tflite holds it (for 8-bit I/O: its scale and zero point)."""

    name: str
    onnx_shape: list[int]
    file_shape: list[int]
    file_dtype: str
    scale: float | None = None
    zero_point: int | None = None


@dataclass
class OutputMetrics(IOInfo):
    samples: int = 0
    sqnr_mean_db: float | None = None
    sqnr_worst_db: float | None = None
    worst_sample: int = 0
    sqnr_pooled_db: float | None = None
    cosine_mean: float = 1.0
    cosine_worst: float = 1.0
    max_abs_error: float = 0.0
    classifier: bool = False
    top1_agreement: float | None = None
    float_accuracy: float | None = None
    tflite_accuracy: float | None = None


@dataclass
class Histogram:
    """Float values of a tensor (a sample of them), binned: counts[i] in [edges[i], edges[i+1])."""

    counts: list[int]
    edges: list[float]


@dataclass
class TensorError:
    """One quantized tensor of the .tflite against its float counterpart."""

    tensor: str
    kind: str           # the TFLite op that produced it ("input" for a model input)
    depth: int          # position of that op in the graph (0: model input)
    dtype: str
    scale: float
    zero_point: int
    sqnr_db: float | None
    clipped: float      # share of the float values outside the grid's range
    float_min: float
    float_max: float
    grid_min: float     # the calibrated range: what the grid represents
    grid_max: float
    histogram: Histogram | None = None


@dataclass
class LayerReport:
    """One ONNX node: its quantized tensors, and the output error it causes by itself."""

    node: str
    kinds: list[str]
    depth: int
    tensors: list[TensorError] = field(default_factory=list)
    weight_sqnr_db: float | None = None
    sensitivity_db: float | None = None  # output SQNR with only this layer quantized
    rank: int | None = None              # 1: the most sensitive
    # What the file's constants show against the float model (accuracy repairs, issue 13):
    # the largest |file bias - float bias| beyond the bias's own rounding (0: none; bias
    # correction moves it), relative to the largest |float bias|; and the share of the weights
    # the file rounds other than to the nearest step of its grid (learned rounding does).
    bias_shift: float | None = None
    bias_shift_relative: float | None = None
    off_nearest: float | None = None


@dataclass
class FallbackCheck:
    """The top-ranked layers each kept float alone (the rest quantized): which helps most."""

    nodes: list[str]
    fallback_sqnr_db: list[float | None]
    best: str
    agrees: bool  # the best is the top-ranked layer


@dataclass
class LayerAnalysis:
    samples: int
    sensitivity_samples: int
    simulated_sqnr_db: float | None  # every layer quantized, simulated (tflq's kernels on grids)
    layers: list[LayerReport] = field(default_factory=list)
    ranking: list[str] = field(default_factory=list)
    fallback_check: FallbackCheck | None = None
    notes: list[str] = field(default_factory=list)

    def layer(self, node: str) -> LayerReport:
        return next(layer for layer in self.layers if layer.node == node)

    def to_text(self, top: int = 20) -> str:
        """The ranking as a table: worst first."""
        if not self.ranking:
            return "\n".join(["Layers: none ranked"] + [f"  note: {printable(n)}" for n in self.notes])
        lines = [f"Layers ranked by the output SQNR each gives when it alone is quantized "
                 f"({self.sensitivity_samples} sample(s); every layer quantized, simulated: "
                 f"{db_text(self.simulated_sqnr_db)} dB):",
                 f"  {'rank':>4}  {'alone dB':>8}  {'tensor dB':>9}  {'weight dB':>9}  "
                 f"{'clipped':>7}  node (ops)"]
        for node in self.ranking[:top]:
            layer = self.layer(node)
            worst = min((t for t in layer.tensors), default=None,
                        key=lambda t: math.inf if t.sqnr_db is None else t.sqnr_db)
            clipped = max((t.clipped for t in layer.tensors), default=0.0)
            lines.append(f"  {layer.rank:>4}  {db_text(layer.sensitivity_db):>8}  "
                         f"{db_text(worst.sqnr_db) if worst else '-':>9}  "
                         f"{db_text(layer.weight_sqnr_db) if layer.weight_sqnr_db is not None else '-':>9}  "
                         f"{clipped * 100:>6.2f}%  {printable(node)} ({', '.join(layer.kinds)})")
        if len(self.ranking) > top:
            lines.append(f"  ... {len(self.ranking) - top} more (--json has them all)")
        check = self.fallback_check
        if check is not None:
            figures = ", ".join(f"{printable(n)} {db_text(v)} dB"
                                for n, v in zip(check.nodes, check.fallback_sqnr_db))
            lines.append(f"Float fallback of each of the top {len(check.nodes)} alone (output SQNR, "
                         f"simulated): {figures}; best: {printable(check.best)} "
                         f"({'agrees with' if check.agrees else 'differs from'} the ranking)")
        lines.extend(f"  note: {printable(n)}" for n in self.notes)
        return "\n".join(lines)


@dataclass
class Check:
    """One --min-sqnr / --min-agreement gate on one output."""

    option: str
    output: str
    figure: str
    value: float | None
    limit: float
    passed: bool

    def message(self) -> str:
        shown = "inf" if self.value is None else f"{self.value:.4g}"
        return (f"output '{printable(self.output)}': {self.figure} {shown} is below "
                f"{self.option} {self.limit:g}")


@dataclass
class Repairs:
    """What the accuracy repairs (--equalize, --bias-correction, --rounding) changed, per layer
    (tflq.report's records): all three from the conversion itself (convert --html); from tflq
    eval, the equalization redone on the float model as the file says it was."""

    equalization: Equalization | None = None
    bias_correction: BiasCorrection | None = None
    rounding: Rounding | None = None
    source: str = "the conversion"

    def __bool__(self) -> bool:
        return any((self.equalization, self.bias_correction, self.rounding))


@dataclass
class EvalResult:
    onnx_model: str
    tflite_model: str
    float_runtime: str
    tflite_runtime: str
    samples: int
    inputs: list[IOInfo] = field(default_factory=list)
    outputs: list[OutputMetrics] = field(default_factory=list)
    layers: LayerAnalysis | None = None
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repairs: Repairs | None = None
    schema: int = SCHEMA

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def output(self, name: str) -> OutputMetrics:
        return next(o for o in self.outputs if o.name == name)

    def to_dict(self) -> dict:
        return _json_safe(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False)

    def to_text(self) -> str:
        lines = [f"Evaluated {printable(self.tflite_model)} against {printable(self.onnx_model)} on "
                 f"{self.samples} sample(s) (float: {self.float_runtime}; .tflite: {self.tflite_runtime})"]
        for o in self.inputs:
            if o.scale is not None:
                lines.append(f"  input '{printable(o.name)}': {o.file_dtype} scale={o.scale:.6g} "
                             f"zero_point={o.zero_point} (quantized from the float data)")
        for o in self.outputs:
            lines.append(f"  output '{printable(o.name)}' {o.onnx_shape}"
                         + (f" ({o.file_dtype}, dequantized)" if o.scale is not None else ""))
            lines.append(f"    SQNR {db_text(o.sqnr_mean_db)} dB mean, {db_text(o.sqnr_worst_db)} dB "
                         f"worst (sample {o.worst_sample}); cosine {o.cosine_mean:.6f} mean, "
                         f"{o.cosine_worst:.6f} worst; max |error| {o.max_abs_error:.4g}")
            if o.top1_agreement is not None:
                line = f"    top-1 agreement {o.top1_agreement * 100:.2f}%"
                if o.tflite_accuracy is not None:
                    line += (f"; accuracy {o.tflite_accuracy * 100:.2f}% (float model "
                             f"{o.float_accuracy * 100:.2f}%)")
                lines.append(line)
        lines.extend(f"  note: {printable(n)}" for n in self.notes)
        return "\n".join(lines)


def _json_safe(value):
    """asdict's output with every infinite or NaN float as null (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return _finite(value)
    return value
