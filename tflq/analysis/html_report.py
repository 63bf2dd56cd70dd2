"""The evaluation as one self-contained HTML file: the figures embedded as base64 PNGs (opens
offline), then the per-output figures, the layer ranking and every quantized tensor as tables.

Every figure is an <img class="plot" id="plot-..."> at a fixed position and size (two columns
under a fixed-height header), so a screenshot shows each one at a known place.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable

from tflq.analysis import plots
from tflq.analysis.result import EvalResult, Repairs, db_text

HEADER = 110     # pixels above the figures
GAP = 10


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _figures(result: EvalResult) -> list[tuple[str, str, bytes]]:
    """(id, caption, png) of every figure."""
    analysis = result.layers
    if analysis is None or not analysis.layers:
        return []
    figures = [("plot-depth", "SQNR along the network's depth", plots.depth_plot(analysis))]
    if analysis.ranking:
        figures.append(("plot-ranking", "Layers ranked by sensitivity", plots.ranking_plot(analysis)))
    order = analysis.ranking or [layer.node for layer in analysis.layers]
    for i, node in enumerate(n for n in order if any(t.histogram for t in analysis.layer(n).tensors)):
        tensor = max((t for t in analysis.layer(node).tensors if t.histogram is not None),
                     key=lambda t: t.depth)  # the layer's own output, after any PAD or QUANTIZE
        figures.append((f"plot-histogram-{i}", f"Calibrated range over the histogram: {node}",
                        plots.histogram_plot(node, tensor)))
    return figures


def render_html(result: EvalResult) -> bytes:
    """The report for `result` (needs matplotlib when it has a layer analysis)."""
    figures = _figures(result)
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
             f"<title>tflq eval: {_esc(result.tflite_model)}</title>",
             "<style>body{margin:0;font-family:sans-serif;font-size:13px;position:relative;"
             "background:#fff;color:#111}"
             f"#header{{height:{HEADER - 2 * GAP}px;overflow:hidden;padding:{GAP}px}}"
             "h1{font-size:18px;margin:0 0 6px 0}h2{font-size:15px;margin:18px 10px 6px}"
             "table{border-collapse:collapse;margin:0 10px}td,th{border:1px solid #ccc;"
             "padding:2px 6px;text-align:right}td.l,th.l{text-align:left}"
             ".plot{position:absolute;border:1px solid #ddd}td.repair{white-space:nowrap}"
             "</style></head><body>",
             "<div id='header'>",
             f"<h1>tflq eval: {_esc(result.tflite_model)}</h1>",
             f"<div>against {_esc(result.onnx_model)} on {result.samples} sample(s); float: "
             f"{_esc(result.float_runtime)}; .tflite: {_esc(result.tflite_runtime)}</div>"]
    for o in result.outputs:
        line = (f"output <b>{_esc(o.name)}</b>: SQNR {db_text(o.sqnr_mean_db)} dB mean, "
                f"{db_text(o.sqnr_worst_db)} dB worst; cosine {o.cosine_worst:.5f} worst")
        if o.top1_agreement is not None:
            line += f"; top-1 agreement {o.top1_agreement * 100:.2f}%"
        parts.append(f"<div>{line}</div>")
    parts.append("</div>")
    rows = 0
    for i, (ident, caption, png) in enumerate(figures):
        column, row = i % 2, i // 2
        rows = row + 1
        left = GAP + column * (plots.WIDTH + 2 * GAP)
        top = HEADER + row * (plots.HEIGHT + 2 * GAP)
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<img class='plot' id='{ident}' alt='{_esc(caption)}' title='{_esc(caption)}' "
                     f"width='{plots.WIDTH}' height='{plots.HEIGHT}' "
                     f"style='left:{left}px;top:{top}px;width:{plots.WIDTH}px;height:{plots.HEIGHT}px' "
                     f"src='data:image/png;base64,{data}'>")
    parts.append(f"<div style='height:{rows * (plots.HEIGHT + 2 * GAP)}px'></div>")
    parts.extend(_output_table(result))
    parts.extend(_repairs_section(result))
    if result.layers is not None:
        parts.extend(_layer_tables(result))
    parts.append("</body></html>")
    return ("\n".join(parts) + "\n").encode("utf-8")


def _output_table(result: EvalResult) -> list[str]:
    parts = ["<h2>Outputs</h2><table><tr><th class='l'>output</th><th>SQNR mean dB</th>"
             "<th>SQNR worst dB</th><th>pooled dB</th><th>cosine worst</th><th>max |error|</th>"
             "<th>top-1 agreement</th><th>accuracy (float)</th></tr>"]
    for o in result.outputs:
        agreement = "-" if o.top1_agreement is None else f"{o.top1_agreement * 100:.2f}%"
        accuracy = "-" if o.tflite_accuracy is None else \
            f"{o.tflite_accuracy * 100:.2f}% ({o.float_accuracy * 100:.2f}%)"
        parts.append(f"<tr><td class='l'>{_esc(o.name)}</td><td>{db_text(o.sqnr_mean_db)}</td>"
                     f"<td>{db_text(o.sqnr_worst_db)}</td><td>{db_text(o.sqnr_pooled_db)}</td>"
                     f"<td>{o.cosine_worst:.6f}</td><td>{o.max_abs_error:.4g}</td>"
                     f"<td>{agreement}</td><td>{accuracy}</td></tr>")
    parts.append("</table>")
    return parts


def _layer_tables(result: EvalResult) -> list[str]:
    analysis = result.layers
    parts = [f"<h2>Layers ranked by sensitivity</h2><p style='margin:0 10px'>Output SQNR with each "
             f"layer alone quantized on the file's grids, the rest float ({analysis.sensitivity_samples} "
             f"sample(s); every layer quantized, simulated: {db_text(analysis.simulated_sqnr_db)} dB)."]
    check = analysis.fallback_check
    if check is not None:
        parts.append(f" Float fallback of each of the top {len(check.nodes)} alone: "
                     + ", ".join(f"{_esc(n)} {db_text(v)} dB"
                                 for n, v in zip(check.nodes, check.fallback_sqnr_db))
                     + f"; the best, <b>{_esc(check.best)}</b>, "
                     + ("is the top-ranked layer." if check.agrees else "is not the top-ranked layer."))
    parts.append("</p>")
    parts.extend(f"<p style='margin:0 10px'>{_esc(n)}</p>" for n in analysis.notes)
    columns = _repair_columns(result)
    parts.append("<table><tr><th>rank</th><th class='l'>node</th><th class='l'>ops</th>"
                 "<th>alone dB</th><th>weights dB</th><th>worst tensor dB</th><th>clipped</th>"
                 + "".join(f"<th title='{_esc(hint)}'>{_esc(title)}</th>"
                           for title, hint, _ in columns) + "</tr>")
    for node in analysis.ranking:
        layer = analysis.layer(node)
        worst = min((t.sqnr_db for t in layer.tensors), default=math.inf)
        clipped = max((t.clipped for t in layer.tensors), default=0.0)
        parts.append(f"<tr><td>{layer.rank}</td><td class='l'>{_esc(node)}</td>"
                     f"<td class='l'>{_esc(', '.join(layer.kinds))}</td>"
                     f"<td>{db_text(layer.sensitivity_db)}</td>"
                     f"<td>{db_text(layer.weight_sqnr_db) if layer.weight_sqnr_db is not None else '-'}</td>"
                     f"<td>{db_text(worst)}</td><td>{clipped * 100:.2f}%</td>"
                     + "".join(f"<td class='repair'>{_esc(cell(node))}</td>" for _, _, cell in columns)
                     + "</tr>")
    parts.append("</table><h2>Every quantized tensor, in graph order</h2><table><tr><th>depth</th>"
                 "<th class='l'>tensor</th><th class='l'>node</th><th class='l'>op</th><th>type</th>"
                 "<th>scale</th><th>zero point</th><th>SQNR dB</th><th>float range</th>"
                 "<th>calibrated range</th><th>clipped</th></tr>")
    for layer in sorted(analysis.layers, key=lambda x: x.depth):
        for t in layer.tensors:
            parts.append(f"<tr><td>{t.depth}</td><td class='l'>{_esc(t.tensor)}</td>"
                         f"<td class='l'>{_esc(layer.node)}</td><td class='l'>{_esc(t.kind)}</td>"
                         f"<td>{t.dtype}</td><td>{t.scale:.4g}</td><td>{t.zero_point}</td>"
                         f"<td>{db_text(t.sqnr_db)}</td><td>[{t.float_min:.4g}, {t.float_max:.4g}]</td>"
                         f"<td>[{t.grid_min:.4g}, {t.grid_max:.4g}]</td><td>{t.clipped * 100:.2f}%</td></tr>")
    parts.append("</table>")
    return parts


def _ratio(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3g}"


def _repair_columns(result: EvalResult) -> list[tuple[str, str, Callable[[str], str]]]:
    """(title, hint, node -> cell) of each repair the conversion ran or the file shows, for the
    layer ranking."""
    repairs, analysis = result.repairs or Repairs(), result.layers
    columns = []
    if repairs.equalization is not None:
        ratios = {layer.layer: layer for layer in repairs.equalization.layers}
        columns.append(("CLE range ratio", "cross-layer equalization: the weights' per-output-"
                        "channel range, largest over smallest, before -> after",
                        lambda n: f"{_ratio(ratios[n].range_ratio_before)} \u2192 "
                                  f"{_ratio(ratios[n].range_ratio_after)}" if n in ratios else "-"))
    if repairs.bias_correction is not None or any(layer.bias_shift for layer in analysis.layers):
        def shift(node: str) -> str:
            layer = analysis.layer(node)
            if layer.bias_shift is None:
                return "-"
            return f"{layer.bias_shift:.3g} ({layer.bias_shift_relative:.1%})" if layer.bias_shift else "0"
        columns.append(("bias shift", "the file's bias against the float model's: the largest "
                        "difference beyond the bias's own rounding (bias correction), and relative "
                        "to its largest value", shift))
    if repairs.rounding is not None or any(layer.off_nearest for layer in analysis.layers):
        rounded = {layer.layer: layer for layer in (repairs.rounding.layers if repairs.rounding else [])}

        def learned(node: str) -> str:
            off = analysis.layer(node).off_nearest
            cell = "-" if off is None else f"{off:.1%}"
            if node in rounded:
                cell += f"; {rounded[node].nearest_db:.1f} \u2192 {rounded[node].learned_db:.1f} dB"
            return cell
        columns.append(("AdaRound: off nearest" + ("; layer dB" if rounded else ""),
                        "learned rounding: the share of the file's weights not rounded to the "
                        "nearest step; from the conversion, the layer's output SQNR on the "
                        "calibration inputs, nearest -> learned rounding", learned))
    return columns


def _repairs_section(result: EvalResult) -> list[str]:
    """One paragraph per repair that ran: what it did in all, its time, what it left and why."""
    repairs = result.repairs
    if not repairs:
        return []
    parts = ["<h2>Accuracy repairs</h2>", f"<p style='margin:0 10px'>From {_esc(repairs.source)}; "
             "per layer in the ranking below, next to each layer's SQNR (bias shifts and weights "
             "off nearest rounding read from the file). The simulated figures (alone dB) round "
             "the float model's weights and biases to the file's grids: they leave out bias "
             "correction and learned rounding.</p><ul id='repairs'>"]
    e = repairs.equalization
    if e is not None:
        parts.append(f"<li>Cross-layer equalization: {len(e.pairs)} layer pairs, {len(e.layers)} "
                     f"layers rescaled ({e.sweeps} rescalings, {e.seconds:.2f} s). The range ratio "
                     "is what per-tensor weights (uint8) pay: one grid spans all channels; with "
                     "per-channel weights (int8) it costs the weights nothing and equalizing moves "
                     "activation ranges only."
                     + "".join(f"<br>left as is: {_esc(p.first)} \u2192 {_esc(p.second)}: "
                               f"{_esc(p.reason)}" for p in e.skipped) + "</li>")
    b = repairs.bias_correction
    if b is not None:
        parts.append(f"<li>Bias correction: {_esc(b.describe())}."
                     + "".join(f"<br>left as is: {_esc(reason)}" for reason in b.skipped) + "</li>")
    r = repairs.rounding
    if r is not None:
        parts.append(f"<li>Learned rounding (AdaRound): {_esc(r.describe())}.</li>")
    parts.append("</ul>")
    return parts

