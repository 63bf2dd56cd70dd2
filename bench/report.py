"""The per-layer report (``tflq eval --layers --html``) on the benchmark models and the sample.

For each model: a full int8 conversion (minmax, the benchmark's 100 calibration inputs), then
``tflq eval`` on the benchmark's 20 seeded evaluation inputs (the sample: its labelled
``digits_eval.npz``), which ranks the layers by the output SQNR each gives alone quantized and
checks that the top-ranked one is, among the top five, the one whose float fallback raises the
output SQNR the most. The HTML report is then opened in headless Chromium and every plot's place
on the screenshot checked for drawn pixels. Prints a Markdown table; files go to
``bench/out/<model>/report/``. Run from the repository root (``make bench`` does)::

    .venv-bench/bin/python bench/report.py [--models resnet18 ...]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from run import (BENCH_DIR, CALIB_SAMPLES, EVAL_SAMPLES, EVAL_SEED, ROOT, ensure_calibration,
                 input_specs, model_specs, random_samples)

sys.path.insert(0, str(ROOT))
from tests.analysis.browser import CHROMIUM, drawn, plot_regions, screenshot, window_for  # noqa: E402


def evaluation_folder(spec) -> Path:
    """The benchmark's evaluation inputs as .npy files (written once)."""
    if spec.eval_npz is not None:
        return spec.eval_npz
    folder = spec.calib_dir.with_name(f"eval_{spec.name}")
    if not folder.is_dir():
        names = [name for name, _, _ in input_specs(spec.onnx)]
        assert len(names) == 1, "one-input models only"
        folder.mkdir(parents=True)
        for index, (value,) in enumerate(random_samples(spec, EVAL_SAMPLES, EVAL_SEED)):
            np.save(folder / f"eval_{index:03d}.npy", value)
    return folder


def report_model(spec, tflq: Path, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    ensure_calibration(spec)
    tflite, html = out_dir / f"{spec.name}_int8.tflite", out_dir / f"{spec.name}_report.html"
    subprocess.run([str(tflq), "convert", str(spec.onnx), "-o", str(tflite), "--mode", "full",
                    "--dtype", "int8", "--calib", str(spec.calib_dir), "--calib-samples",
                    str(CALIB_SAMPLES), "-q"], check=True)
    data = evaluation_folder(spec)
    command = [str(tflq), "eval", str(spec.onnx), str(tflite), "--data", str(data), "--html",
               str(html), "--json", "-q"]
    if spec.eval_npz is not None:
        command += ["--labels", str(spec.eval_npz)]
    start = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    result = json.loads(done.stdout)
    (out_dir / f"{spec.name}_eval.json").write_text(done.stdout)
    rendered = None
    text = html.read_text()
    regions = plot_regions(text)
    if CHROMIUM is not None:
        pixels = screenshot(html, out_dir, f"{spec.name}_report", window_for(regions))
        rendered = sum(1 for _, *box in regions if drawn(pixels, *box)[0] > 0.05)
    return {"model": spec.name, "result": result, "seconds": seconds, "plots": len(regions),
            "rendered": rendered, "html_kb": len(text) / 1000}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | eval SQNR dB (mean / worst) | top-1 agr. | worst-ranked layers (alone dB) "
             "| float fallback dB of the top 5 | agrees | plots rendered | eval s |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row["result"]
        out = r["outputs"][0]
        layers = r["layers"]
        by_node = {layer["node"]: layer for layer in layers["layers"]}
        ranked = ", ".join(f"{n} ({by_node[n]['sensitivity_db']:.1f})" for n in layers["ranking"][:5])
        check = layers["fallback_check"] or {}
        fallback = ", ".join(f"{v:.1f}" if v is not None else "inf"
                             for v in check.get("fallback_sqnr_db", []))
        agreement = "-" if out["top1_agreement"] is None else f"{out['top1_agreement'] * 100:.0f}%"
        rendered = "no chromium" if row["rendered"] is None else f"{row['rendered']}/{row['plots']}"
        lines.append(f"| {row['model']} | {out['sqnr_mean_db']:.1f} / {out['sqnr_worst_db']:.1f} | "
                     f"{agreement} | {ranked} | {fallback} (best: {check.get('best')}) | "
                     f"{'yes' if check.get('agrees') else 'no'} | {rendered} | {row['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["digits_cnn", "mobilenet_v2", "resnet18"])
    parser.add_argument("--models-dir", type=Path, default=BENCH_DIR / "models")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out")
    parser.add_argument("--tflq", type=Path, default=Path(sys.executable).parent / "tflq")
    args = parser.parse_args()
    specs = model_specs(args.models_dir)
    rows = []
    for name in args.models:
        if not specs[name].onnx.exists():
            print(f"[{name}] {specs[name].onnx} not found: run bench/models.py first", file=sys.stderr)
            continue
        rows.append(report_model(specs[name], args.tflq, args.out_dir / name / "report"))
    print(markdown(rows), flush=True)


if __name__ == "__main__":
    main()
