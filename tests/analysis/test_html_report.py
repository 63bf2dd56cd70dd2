"""The HTML report opens offline in headless Chromium with every plot rendered: a screenshot has
non-blank pixels where each <img class="plot"> sits (and a broken image is caught as blank)."""
from __future__ import annotations

import os
import re

import pytest

import tflq
from tests.analysis.browser import CHROMIUM, drawn, plot_regions, screenshot, window_for
from tests.conftest import REQUIRE_ALL, importorskip

HERE = os.path.dirname(__file__)
SAMPLE = os.path.join(HERE, "..", "..", "sample_models", "digits_cnn.onnx")
CALIB = os.path.join(HERE, "..", "..", "sample_models", "digits_calib")


def _screenshot(html_path, tmp_path, name: str, window):
    if CHROMIUM is None:
        if REQUIRE_ALL:
            pytest.fail("chromium is not installed (make test installs the Debian package)")
        pytest.skip("chromium is not installed")
    importorskip("PIL.Image")
    return screenshot(html_path, tmp_path, name, window)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    importorskip("matplotlib")
    directory = tmp_path_factory.mktemp("report")
    html = directory / "digits.html"
    tflq.convert(SAMPLE, str(directory / "digits.tflite"), mode="full", dtype="int8", calib=CALIB,
                 calib_samples=40, html=str(html))
    return html


def test_report_opens_in_headless_chromium_with_every_plot_rendered(report, tmp_path):
    text = report.read_text()
    plots = plot_regions(text)
    ids = [p[0] for p in plots]
    assert ids[:2] == ["plot-depth", "plot-ranking"] and len(ids) >= 5, ids
    assert "http://" not in text and "https://" not in text  # opens offline: nothing fetched
    window = window_for(plots)
    pixels = _screenshot(report, tmp_path, "report", window)
    for ident, left, top, width, height in plots:
        share, colours = drawn(pixels, left, top, width, height)
        assert share > 0.05 and colours >= 4, (ident, share, colours)
    # the check can fail: with one image's data broken, its place stays blank
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"(id='plot-ranking'[^>]*src='data:image/png;base64,)[^']{64}",
                             lambda m: m[1] + "!" * 64, text, count=1))
    pixels = _screenshot(broken, tmp_path, "broken", window)
    _, left, top, width, height = plots[1]
    share, _ = drawn(pixels, left, top, width, height)
    assert share < 0.02, share
