"""The HTML report opens offline in headless Chromium with every plot rendered: a screenshot has
non-blank pixels where each <img class="plot"> sits (and a broken image is caught as blank)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import tflq
from tests.conftest import REQUIRE_ALL, importorskip

HERE = os.path.dirname(__file__)
SAMPLE = os.path.join(HERE, "..", "..", "sample_models", "digits_cnn.onnx")
CALIB = os.path.join(HERE, "..", "..", "sample_models", "digits_calib")
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
WINDOW = (1300, 1800)
_PLOT = re.compile(r"<img class='plot' id='([^']+)'[^>]*style='left:(\d+)px;top:(\d+)px;"
                   r"width:(\d+)px;height:(\d+)px'")


def _chromium():
    if CHROMIUM is None:
        if REQUIRE_ALL:
            pytest.fail("chromium is not installed (make test installs the Debian package)")
        pytest.skip("chromium is not installed")
    return CHROMIUM


def _screenshot(html_path, tmp_path, name: str) -> np.ndarray:
    image = importorskip("PIL.Image")
    png = tmp_path / f"{name}.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                    f"file://{os.path.abspath(html_path)}"],
                   check=True, capture_output=True, timeout=120)
    with image.open(png) as shot:
        return np.asarray(shot.convert("RGB"))


def _plots(text: str) -> list[tuple[str, int, int, int, int]]:
    return [(m[0], int(m[1]), int(m[2]), int(m[3]), int(m[4])) for m in _PLOT.findall(text)]


def _drawn(pixels: np.ndarray, left: int, top: int, width: int, height: int) -> tuple[float, int]:
    """Share of non-white pixels inside the region (its 4-pixel border left out), and how many
    distinct colours it holds."""
    region = pixels[top + 4:top + height - 4, left + 4:left + width - 4].reshape(-1, 3)
    inked = np.any(region < 235, axis=1)
    return float(np.mean(inked)), len(np.unique(region[::7], axis=0))


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
    plots = _plots(text)
    ids = [p[0] for p in plots]
    assert ids[:2] == ["plot-depth", "plot-ranking"] and len(ids) >= 5, ids
    assert "http://" not in text and "https://" not in text  # opens offline: nothing fetched
    assert max(top + height for _, _, top, _, height in plots) <= WINDOW[1]
    pixels = _screenshot(report, tmp_path, "report")
    for ident, left, top, width, height in plots:
        share, colours = _drawn(pixels, left, top, width, height)
        assert share > 0.05 and colours >= 4, (ident, share, colours)
    # the check can fail: with one image's data broken, its place stays blank
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"(id='plot-ranking'[^>]*src='data:image/png;base64,)[^']{64}",
                             lambda m: m[1] + "!" * 64, text, count=1))
    pixels = _screenshot(broken, tmp_path, "broken")
    _, left, top, width, height = plots[1]
    share, _ = _drawn(pixels, left, top, width, height)
    assert share < 0.02, share
