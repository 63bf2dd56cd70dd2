"""The report's figures as PNG bytes (matplotlib, the optional `tflq[report]` extra)."""
from __future__ import annotations

import io
import math

from tflq.analysis.result import LayerAnalysis, TensorError, db_text
from tflq.analysis.runtimes import EvaluationError

WIDTH, HEIGHT, DPI = 620, 360, 100  # pixels of every figure


def require_matplotlib():
    """matplotlib with the file-only Agg backend, or EvaluationError naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib import pyplot
    except ImportError:
        raise EvaluationError("the HTML report needs matplotlib: pip install 'tflq[report]'") from None
    return pyplot


def _figure(pyplot):
    fig, ax = pyplot.subplots(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    return fig, ax


def _png(pyplot, fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    pyplot.close(fig)
    return buffer.getvalue()


def _db(value: float | None, floor: float) -> float:
    """A dB figure for plotting: infinite (exact) drawn at the top."""
    return floor if value is None or math.isinf(value) else value


def _short(name: str, width: int = 38) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def depth_plot(analysis: LayerAnalysis) -> bytes:
    """SQNR of every quantized tensor along the network's depth, and each layer's sensitivity."""
    pyplot = require_matplotlib()
    fig, ax = _figure(pyplot)
    tensors = sorted((t for layer in analysis.layers for t in layer.tensors), key=lambda t: t.depth)
    finite = [t.sqnr_db for t in tensors if t.sqnr_db is not None and not math.isinf(t.sqnr_db)]
    top = (max(finite) if finite else 60.0) + 5
    ax.plot([t.depth for t in tensors], [_db(t.sqnr_db, top) for t in tensors], "o-", ms=3, lw=1,
            color="tab:blue", label="tensor SQNR vs float")
    ranked = [layer for layer in analysis.layers if layer.sensitivity_db is not None]
    if ranked:
        ax.plot([layer.depth for layer in ranked], [_db(layer.sensitivity_db, top) for layer in ranked],
                "s", ms=4, color="tab:red", label="output SQNR, layer alone quantized")
        for i, layer in enumerate(sorted(ranked, key=lambda x: x.rank)[:3]):
            ax.annotate(f"{i + 1}. {_short(layer.node, 24)}", (layer.depth, _db(layer.sensitivity_db, top)),
                        fontsize=7, xytext=(0.45, 0.93 - 0.08 * i), textcoords="axes fraction",
                        arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5})
    ax.set_xlabel("depth (op index in the float graph; 0: model input)")
    ax.set_ylabel("SQNR (dB)")
    ax.set_title("SQNR along the network")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return _png(pyplot, fig)


def ranking_plot(analysis: LayerAnalysis, count: int = 12) -> bytes:
    """The most sensitive layers: output SQNR with each alone quantized (lower is worse)."""
    pyplot = require_matplotlib()
    fig, ax = _figure(pyplot)
    nodes = analysis.ranking[:count][::-1]
    values = [analysis.layer(n).sensitivity_db for n in nodes]
    finite = [v for v in values if v is not None and not math.isinf(v)]
    top = (max(finite) if finite else 60.0) + 5
    check = analysis.fallback_check
    colors = ["tab:red" if check is not None and n == check.best else "tab:orange" for n in nodes]
    ax.barh(range(len(nodes)), [_db(v, top) for v in values], color=colors)
    ax.set_yticks(range(len(nodes)), [_short(n) for n in nodes], fontsize=7)
    ax.set_xlabel("output SQNR with this layer alone quantized (dB)")
    title = "Most sensitive layers"
    if check is not None:
        title += f" (red: float fallback helps most, {'agrees' if check.agrees else 'differs'})"
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    return _png(pyplot, fig)


def histogram_plot(node: str, tensor: TensorError) -> bytes:
    """The float values' histogram with the calibrated range (the grid) drawn over it."""
    pyplot = require_matplotlib()
    fig, ax = _figure(pyplot)
    h = tensor.histogram
    widths = [b - a for a, b in zip(h.edges, h.edges[1:])]
    ax.bar(h.edges[:-1], [max(c, 0) for c in h.counts], width=widths, align="edge",
           color="tab:blue", alpha=0.8, label="float values")
    if max(h.counts, default=0) > 100:
        ax.set_yscale("log")  # long tails (the outliers that stretch a range) stay visible
    ax.axvspan(tensor.grid_min, tensor.grid_max, color="tab:green", alpha=0.12,
               label=f"calibrated range [{tensor.grid_min:.3g}, {tensor.grid_max:.3g}]")
    for x in (tensor.grid_min, tensor.grid_max):
        ax.axvline(x, color="tab:green", lw=1.5)
    ax.set_title(f"{_short(node, 40)}: {_short(tensor.tensor, 30)}", fontsize=8)
    ax.set_xlabel(f"value ({tensor.dtype}, scale {tensor.scale:.3g}; SQNR {db_text(tensor.sqnr_db)} dB, "
                  f"{tensor.clipped * 100:.2f}% clipped)", fontsize=8)
    ax.set_ylabel("count (sampled)")
    ax.legend(fontsize=7)
    return _png(pyplot, fig)
