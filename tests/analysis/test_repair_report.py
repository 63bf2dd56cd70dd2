"""The per-layer report shows what each accuracy repair changed (issue 13): the equalization's
weight range ratio before -> after, each bias's shift, the learned rounding; tflq eval reads the
shifts and the rounding from the file alone and must agree with what the conversion did."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import tflq
from tests.conftest import importorskip
from tflq.analysis.html_report import render_html

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "sample_models")
MOBILENET = os.path.join(SAMPLES, "digits_mobilenet.onnx")
CALIB = os.path.join(SAMPLES, "digits_calib")


@pytest.fixture(scope="module")
def repaired(tmp_path_factory):
    """The trained digits MobileNet in uint8 with all three repairs, its HTML report, and
    tflq eval's analysis of the written file."""
    importorskip("matplotlib")
    directory = tmp_path_factory.mktemp("repaired")
    html = directory / "m.html"
    report = tflq.convert(MOBILENET, str(directory / "m.tflite"), mode="full", dtype="uint8",
                          calib=CALIB, equalize=True, bias_correction=True, rounding="adaround",
                          rounding_layers=2, html=str(html))
    evaluated = tflq.evaluate(MOBILENET, str(directory / "m.tflite"), CALIB, samples=16, layers=True)
    return report, html.read_text(), evaluated


def _rows(html: str, heading: str) -> dict[str, list[str]]:
    """node -> the cells of its row, in the table after `heading`."""
    table = html.split(heading, 1)[1].split("</table>", 1)[0]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", table):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
        rows[cells[1]] = cells
    return rows


def test_summary_gives_each_layers_range_ratio_before_and_after(repaired):
    report, _, _ = repaired
    layers = {layer.layer: layer for layer in report.equalization.layers}
    assert len(layers) == 9  # the 7 pairs' layers
    depthwise = layers["/features/features.3/Conv"]  # trained depthwise channels spread 3077-fold
    assert depthwise.range_ratio_before > 1000 and depthwise.range_ratio_after < 20
    text = report.to_text()
    assert "weight range ratio over output channels (max/min), before -> after (per-tensor" in text
    assert re.search(r"/features/features\.3/Conv: 3\.\d+e\+03 -> \d+\.\d", text), text


def test_html_ranking_shows_every_repair_next_to_each_layers_sqnr(repaired):
    report, html, _ = repaired
    assert "<h2>Accuracy repairs</h2>" in html and "left as is: /features/features.9/Conv" in html
    rows = _rows(html, "<h2>Layers ranked by sensitivity</h2>")
    header = rows.pop("node")
    assert header[3:] == ["alone dB", "weights dB", "worst tensor dB", "clipped", "CLE range ratio",
                          "bias shift", "AdaRound: off nearest; layer dB"]
    depthwise = rows["/features/features.3/Conv"]
    assert re.fullmatch(r"3\.08e\+03 \u2192 \d+(\.\d+)?", depthwise[7]), depthwise
    rounded = {layer.layer: layer for layer in report.rounding.layers}
    assert len(rounded) == 2
    for node, cells in rows.items():
        if node in rounded:
            assert f"{rounded[node].nearest_db:.1f} \u2192 {rounded[node].learned_db:.1f} dB" in cells[9]
            assert float(cells[9].split("%")[0]) > 1.0  # learned rounding moves some weights
        elif cells[9] != "-":
            assert cells[9] == "0.0%", (node, cells)


def test_eval_reads_the_bias_shifts_and_the_rounding_from_the_file(repaired):
    """The conversion computed each shift as E[(Q(W) - W) x]; tflq eval finds it as the file's
    bias minus the float model's, knowing nothing of the conversion."""
    report, _, evaluated = repaired
    assert evaluated.repairs is not None and len(evaluated.repairs.equalization.layers) == 9
    assert evaluated.repairs.bias_correction is None  # (the file does not record the step)
    analysis = evaluated.layers
    rounded = {layer.layer for layer in report.rounding.layers}
    for shift in report.bias_correction.layers:
        measured = analysis.layer(shift.layer).bias_shift
        assert measured == pytest.approx(shift.max_shift, rel=0.05, abs=1e-4), shift
    for layer in analysis.layers:
        if layer.off_nearest is not None:
            assert (layer.off_nearest > 0) == (layer.node in rounded), layer.node
    html = render_html(evaluated).decode()
    assert "bias shift" in html and "AdaRound: off nearest<" in html and "CLE range ratio" in html


def test_a_file_without_repairs_shows_none(tmp_path):
    """No false finding: an int8 file converted without repairs has no bias moved beyond its
    rounding and every weight on its nearest step, and its report no repair columns."""
    importorskip("matplotlib")
    report = tflq.convert(MOBILENET, None, mode="full", dtype="int8", calib=CALIB)
    evaluated = tflq.evaluate(MOBILENET, report.tflite, CALIB, samples=8, layers=True)
    assert evaluated.repairs is None
    measured = [layer for layer in evaluated.layers.layers if layer.off_nearest is not None]
    assert len(measured) == 10
    assert all(layer.off_nearest == 0 and layer.bias_shift == 0 for layer in measured)
    html = render_html(evaluated).decode()
    assert "Accuracy repairs" not in html and "bias shift" not in html
    assert np.isfinite([layer.weight_sqnr_db for layer in measured]).all()
