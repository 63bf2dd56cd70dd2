"""ConversionReport: what a conversion did, as a readable summary or as JSON."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from tflq.text import printable


@dataclass
class FloatOp:
    """An op left in float in a quantized model, and why."""

    kind: str
    origin: str
    reason: str


@dataclass(frozen=True)
class Promotion:
    node: str
    kind: str
    to: str  # "int16" or "float"


@dataclass
class PrecisionResult:
    """What --target-sqnr did: the worst sample's output SQNR before and after, and the layers
    promoted. `reached` False: even the best configuration falls short (`shortfall` says by how
    much) and it was written because --accept-below-target asked for it."""

    target_db: float
    before_db: float  # the worst sample's SQNR, as quantized
    after_db: float  # the worst sample's SQNR, with the promotions
    layers: int  # candidate layers (nodes that run quantized)
    samples: int
    promoted: list[Promotion] = field(default_factory=list)
    source: str = "calibration samples"  # what the SQNR was measured on
    reached: bool = True
    shortfall: str = ""
    # TFLite operators: of the layers' (quantized or not), those of the promoted layers, and the
    # QUANTIZE/DEQUANTIZE ops added at the promoted layers' boundaries
    # the largest places the 8-bit model rounds, each with its share of the summed noise
    largest_sources: list[str] = field(default_factory=list)
    counted: str = ""  # the 8-bit repairs counted in every SQNR measured ("bias correction")
    repair_chosen: str = ""  # why the search turned on a repair the user left to it (else "")
    grid_ranges: str = ""  # what choosing the 8-bit grids' ranges by the output noise did (else "")
    tflite_ops: int = 0
    promoted_ops: int = 0
    boundary_ops: int = 0

    def count_ops(self, graph, plan, before_rewrite: set[int]) -> None:
        """The TFLite op counts, from the rewritten graph (`before_rewrite`: id() of its ops before)."""
        nodes = self.int16_nodes | self.float_nodes
        self.tflite_ops = len(before_rewrite)
        self.promoted_ops = sum(1 for op in graph.ops if id(op) in before_rewrite and op.origin in nodes)
        self.boundary_ops = sum(1 for op in graph.ops if id(op) not in before_rewrite and op.origin in nodes)

    @property
    def int16_nodes(self) -> frozenset[str]:
        return frozenset(p.node for p in self.promoted if p.to == "int16")

    @property
    def float_nodes(self) -> frozenset[str]:
        return frozenset(p.node for p in self.promoted if p.to == "float")


@dataclass(frozen=True)
class EqualizedPair:
    """One pair cross-layer equalization rescaled: the spread (largest over smallest non-zero
    per-channel weight range) of the first layer's output channels and of the second's input
    channels, before and after."""

    first: str
    second: str
    first_before: float
    second_before: float
    first_after: float
    second_after: float


@dataclass(frozen=True)
class SkippedPair:
    """Two consecutive layers cross-layer equalization left as they are, and why."""

    first: str
    second: str
    reason: str


@dataclass(frozen=True)
class EqualizedLayer:
    """One layer cross-layer equalization rescaled: its weight range ratio (largest over
    smallest non-zero per-output-channel max |w|) before and after. With per-tensor weights
    (uint8) one grid spans all its channels and the smallest get ratio-fold fewer steps; with
    per-channel weights (int8) each channel has its own grid and the ratio costs nothing."""

    layer: str
    range_ratio_before: float
    range_ratio_after: float


@dataclass
class Equalization:
    """What --equalize did."""

    pairs: list[EqualizedPair]
    skipped: list[SkippedPair]
    sweeps: int
    seconds: float
    layers: list[EqualizedLayer] = field(default_factory=list)


@dataclass(frozen=True)
class BiasShift:
    """One layer's bias moved by bias correction: the largest shift, absolute and relative to
    the largest bias value."""

    layer: str
    max_shift: float
    relative: float


@dataclass
class BiasCorrection:
    """What --bias-correction did."""

    layers: list[BiasShift]
    skipped: list[str]
    samples: int
    seconds: float
    form: str = "empirical"  # E[x] from calibration samples; "analytic": from BatchNorm statistics

    def describe(self) -> str:
        """How many biases moved, from what, in how long (the summary's and the HTML's words)."""
        source = f"on {self.samples} calibration samples" if self.form == "empirical" else \
            "from BatchNorm statistics (analytic)"
        return f"{len(self.layers)} biases corrected {source} ({self.seconds:.2f} s)"


@dataclass(frozen=True)
class RoundedLayer:
    """A layer whose weights --rounding adaround rounded: its output SQNR against the float
    layer on the calibration inputs, nearest rounding vs learned, and the iterations run."""

    layer: str
    nearest_db: float
    learned_db: float
    iterations: int


@dataclass
class Rounding:
    """What --rounding adaround did."""

    layers: list[RoundedLayer]
    candidates: int
    seconds: float
    fitted: int = 0              # layers fitted within the time (rounded, or nearest kept)
    measure_seconds: float = 0.0  # of `seconds`: the layers' inputs measured and ranked

    def describe(self) -> str:
        """How many layers were rounded, and where the time went (the summary's and the HTML's)."""
        return (f"{len(self.layers)} of {self.candidates} layers rounded ({self.seconds:.2f} s, "
                f"{self.measure_seconds:.2f} of them measuring and ranking the layers' inputs; "
                f"{self.fitted} fitted, nearest rounding kept where it was as good)")


@dataclass
class ConversionReport:
    model: str
    output: str | None
    mode: str
    dtype: str | None
    input_bytes: int = 0
    output_bytes: int = 0
    op_counts: dict[str, int] = field(default_factory=dict)
    tensor_types: dict[str, int] = field(default_factory=dict)  # activation tensors per type
    transposes_inserted: int = 0
    notes: list[str] = field(default_factory=list)
    float_ops: list[FloatOp] = field(default_factory=list)
    quantized_ops: int = 0
    io: list[str] = field(default_factory=list)
    weights: list[dict] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)
    precision: PrecisionResult | None = None  # what --target-sqnr promoted
    equalization: Equalization | None = None  # what --equalize changed
    bias_correction: BiasCorrection | None = None  # what --bias-correction changed
    rounding: Rounding | None = None  # what --rounding adaround changed
    seconds: float = 0.0
    tflite: bytes = field(default=b"", repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("tflite")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_text(self) -> str:
        lines = [f"Converted {self.model} -> {self.output or '(in memory)'} "
                 f"[mode {self.mode}{', ' + self.dtype if self.dtype else ''}] in {self.seconds:.2f} s"]
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(self.op_counts.items()))
        lines.append(f"  ops: {sum(self.op_counts.values())} ({ops})")
        if self.tensor_types:
            types = ", ".join(f"{k} x{v}" for k, v in sorted(self.tensor_types.items()))
            lines.append(f"  activation tensors: {types}")
        if self.input_bytes:
            ratio = self.output_bytes / self.input_bytes
            lines.append(f"  size: {mb(self.input_bytes)} ONNX -> {mb(self.output_bytes)} TFLite "
                         f"({ratio:.1%})")
        if self.precision is not None:
            p = self.precision
            lines.append(f"  --target-sqnr {p.target_db:g} dB: {len(p.promoted)} of {p.layers} layers "
                         f"(ONNX nodes) promoted, {p.promoted_ops} of {p.tflite_ops} TFLite ops "
                         f"(+{p.boundary_ops} QUANTIZE/DEQUANTIZE at their edges); output SQNR {p.before_db:.1f} -> "
                         f"{p.after_db:.1f} dB (worst of {p.samples} {p.source}"
                         f"{', with ' + p.counted if p.counted else ''})")
            if p.grid_ranges:
                lines.append(f"    {p.grid_ranges}")
            if p.repair_chosen:
                lines.append(f"    {p.repair_chosen}")
            if p.largest_sources:
                lines.append(f"    largest noise sources (8-bit): {'; '.join(p.largest_sources)}")
            if not p.reached:
                lines.append(f"  warning: {p.shortfall}; written anyway (--accept-below-target)")
            for promotion in p.promoted:
                lines.append(f"    {promotion.node} ({promotion.kind}) -> {promotion.to}")
        lines.extend(self._repair_lines())
        if self.quantized_ops or self.float_ops:
            lines.append(f"  quantized ops: {self.quantized_ops}; left float: {len(self.float_ops)}")
            reasons = Counter((f.kind, f.reason) for f in self.float_ops)
            for (kind, reason), n in sorted(reasons.items()):
                lines.append(f"    {kind} x{n}: {reason}")
        if self.weights:
            lines.append(f"  weights quantized: {len(self.weights)} tensors")
            worst = sorted(self.weights, key=lambda w: w["sqnr_db"])[:5]
            for w in worst:
                lines.append(f"    {w['name']}: {w['elements']} elements, {w['params']}, "
                             f"SQNR {w['sqnr_db']:.1f} dB")
        if self.calibration:
            lines.extend(self._calibration_lines())
        for entry in self.io:
            lines.append(f"  {entry}")
        lines.append(f"  transposes inserted: {self.transposes_inserted}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(printable(line) for line in lines)  # names from files: escaped


    def _calibration_lines(self) -> list[str]:
        """Where the ranges came from: this run's samples, saved statistics files (--stats), or both."""
        c = self.calibration
        files = c.get("stats_files") or []
        saved = ", ".join(f"{printable(f['path'])} ({f['samples']} samples)" for f in files)
        if files and not c.get("samples"):
            total = sum(f["samples"] for f in files)
            return [f"  calibration: from saved statistics, {total} samples in {len(files)} "
                    f"file{'s' if len(files) > 1 else ''}: {saved}; method {c.get('method')}"]
        line = (f"  calibration: {c.get('samples', 0)} samples, method {c.get('method')}, "
                f"{c.get('seconds', 0):.2f} s")
        if files:
            line += f"; merged with saved statistics: {saved}"
        return [line]

    def _repair_lines(self) -> list[str]:
        """What --equalize, --bias-correction and --rounding changed, per layer."""
        lines = []
        e = self.equalization
        if e is not None:
            per_tensor = self.dtype == "uint8"
            lines.append(f"  equalize: {len(e.pairs)} layer pairs rescaled ({e.sweeps} rescalings, "
                         f"{e.seconds:.2f} s); weight range ratio over output channels "
                         f"(max/min), before -> after "
                         + ("(per-tensor weights: what their one grid pays):" if per_tensor else
                            "(per-channel weights: each channel has its own grid; equalizing moves "
                            "activation ranges only):"))
            for layer in e.layers:
                lines.append(f"    {layer.layer}: {layer.range_ratio_before:.3g} -> "
                             f"{layer.range_ratio_after:.3g}")
            for p in e.skipped:
                lines.append(f"    left as is: {p.first} -> {p.second}: {p.reason}")
        b = self.bias_correction
        if b is not None:
            lines.append(f"  bias correction: {b.describe()}; the largest shift of each:")
            for shift in sorted(b.layers, key=lambda s: -s.relative):
                lines.append(f"    {shift.layer}: {shift.max_shift:.3g} "
                             f"({shift.relative:.1%} of its largest bias)")
            for reason in b.skipped:
                lines.append(f"    left as is: {reason}")
        r = self.rounding
        if r is not None:
            lines.append(f"  rounding adaround: {r.describe()}; layer output SQNR, "
                         f"nearest -> learned:")
            if r.candidates and not r.fitted:
                lines.append("    no time was left to fit a layer: raise --rounding-seconds")
            for layer in r.layers:
                lines.append(f"    {layer.layer}: {layer.nearest_db:.1f} -> {layer.learned_db:.1f} dB "
                             f"({layer.iterations} iterations)")
        return lines


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} KB"
