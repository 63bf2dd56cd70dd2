"""Headless Chromium screenshots of the HTML report, and where its plots sit (tests and bench)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
_PLOT = re.compile(r"<img class='plot' id='([^']+)'[^>]*style='left:(\d+)px;top:(\d+)px;"
                   r"width:(\d+)px;height:(\d+)px'")


def plot_regions(text: str) -> list[tuple[str, int, int, int, int]]:
    """(id, left, top, width, height) of every plot of a report, in page pixels."""
    return [(m[0], int(m[1]), int(m[2]), int(m[3]), int(m[4])) for m in _PLOT.findall(text)]


def screenshot(html_path, directory, name: str, window: tuple[int, int]) -> np.ndarray:
    """The page as RGB pixels (Chromium writes a PNG; Pillow reads it)."""
    from PIL import Image

    png = os.path.join(str(directory), f"{name}.png")
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={os.path.join(str(directory), 'profile')}",
                    f"--screenshot={png}", f"--window-size={window[0]},{window[1]}",
                    f"file://{os.path.abspath(str(html_path))}"],
                   check=True, capture_output=True, timeout=120)
    with Image.open(png) as shot:
        return np.asarray(shot.convert("RGB"))


def drawn(pixels: np.ndarray, left: int, top: int, width: int, height: int) -> tuple[float, int]:
    """Share of non-white pixels inside a region (its 4-pixel border left out), and how many
    distinct colours it holds."""
    region = pixels[top + 4:top + height - 4, left + 4:left + width - 4].reshape(-1, 3)
    inked = np.any(region < 235, axis=1)
    return float(np.mean(inked)), len(np.unique(region[::7], axis=0))


def window_for(regions) -> tuple[int, int]:
    """A window tall enough for every plot."""
    return 1300, max(top + height for _, _, top, _, height in regions) + 40
