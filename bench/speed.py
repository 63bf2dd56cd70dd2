"""Calibration and conversion speed, as ratios measured side by side in one run (issue 10).

For each benchmark model, full int8 with minmax calibration on the benchmark's 100 samples:

- calibration / onnxruntime: tflq's calibration time (`--jobs 1`, from its report; the default
  engine, onnxruntime when installed) over a plain onnxruntime forward loop on the same samples,
  both one thread; the loop runs before and after tflq and the mean is taken, so drifting load
  hits both sides alike. Each side has an untimed warm-up: the loop's first pass, one
  conversion before tflq's timed run. The same for `--calib-engine numpy`, with the loops around it.
- convert / quantize_static: wall and CPU time (all processes) of `tflq convert` (default jobs)
  over onnxruntime's `quantize_static` (bench/ort_quantize.py) on the same samples.
- busy / quiet: the same conversions while one CPU-bound process competes, over the quiet ones:
  `--jobs 1` wall time, and the default run's CPU time (a spinning BLAS pool would inflate it).
- jobs 2 speed-up: calibration time of `--jobs 1` over `--jobs 2`, each run twice in the order
  1, 2, ..., 2, 1 (the sums' ratio, so load that drifts through the run hits both alike), and
  whether the files are byte-identical.
- peak RSS: the largest process of the `--jobs 1` conversion, at 100 samples and at 25 (the same
  --jobs on both sides: the default starts workers only when calibration is long enough, so its
  peak at 25 samples is of one process and at 100 of one with workers); the default run's peak too.

The machine is shared: read only the ratios, each taken from neighbouring runs.
"""
from __future__ import annotations

import filecmp
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from measure import run_child

SMALL_SAMPLES = 25


def _arrays(calib_dir: Path, count: int) -> list[np.ndarray]:
    return [np.load(path) for path in sorted(calib_dir.glob("*.npy"))[:count]]


def onnxruntime_loop_seconds(onnx_path: Path, arrays: list[np.ndarray]) -> float:
    """One onnxruntime forward pass per sample, one thread, after one warm-up pass."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: arrays[0]})
    start = time.perf_counter()
    for array in arrays:
        session.run(None, {name: array})
    return time.perf_counter() - start


ENGINES: dict = {}  # output file -> the calibration engine its report names


def _convert(tflq: Path, spec, out: Path, samples: int, timeout: float, *flags: str):
    report = out.with_suffix(".report.json")
    command = [str(tflq), "convert", str(spec.onnx), "-o", str(out), "--mode", "full", "--dtype",
               "int8", "--calib", str(spec.calib_dir), "--calib-samples", str(samples),
               "--calib-method", "minmax", "-q", "--report", str(report), *flags]
    child = run_child(command, timeout)
    seconds = None
    if child.ok and report.exists():
        calibration = json.loads(report.read_text()).get("calibration") or {}
        seconds = calibration.get("seconds")
        ENGINES[out] = calibration.get("engine")
    return child, seconds


def _busy() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def measure_speed(spec, tflq: Path, out_dir: Path, samples: int, timeout: float) -> dict:
    """Every figure of the module docstring for one model (None where a run failed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = _arrays(spec.calib_dir, samples)
    figures: dict = {"samples": len(arrays)}

    # one conversion first, untimed, as the loop has its untimed first pass: the first process to
    # load tflq, onnxruntime and the samples in a run paid 0.3 s more on MobileNetV2 (26%)
    _convert(tflq, spec, out_dir / "warmup.tflite", samples, timeout, "--jobs", "1")
    ort_before = onnxruntime_loop_seconds(spec.onnx, arrays)
    jobs1, calib1 = _convert(tflq, spec, out_dir / "jobs1.tflite", samples, timeout, "--jobs", "1")
    ort_after = onnxruntime_loop_seconds(spec.onnx, arrays)
    numpy1, calib_numpy = _convert(tflq, spec, out_dir / "numpy.tflite", samples, timeout, "--jobs", "1",
                                   "--calib-engine", "numpy")
    ort_last = onnxruntime_loop_seconds(spec.onnx, arrays)
    ort = (ort_before + ort_after) / 2
    figures.update(onnxruntime_loop_s=ort, calibration_jobs1_s=calib1,
                   calibration_engine=ENGINES.get(out_dir / "jobs1.tflite"),
                   calibration_over_onnxruntime=_ratio(calib1, ort),
                   calibration_numpy_s=calib_numpy,
                   calibration_numpy_over_onnxruntime=_ratio(calib_numpy, (ort_after + ort_last) / 2))

    default, _ = _convert(tflq, spec, out_dir / "default.tflite", samples, timeout)
    ort_q = run_child([sys.executable, str(Path(__file__).with_name("ort_quantize.py")), str(spec.onnx),
                       str(spec.calib_dir), str(samples), str(out_dir / "quantize_static.onnx")], timeout)
    figures.update(convert_wall_s=default.seconds, convert_cpu_s=default.cpu_seconds,
                   quantize_static_wall_s=ort_q.seconds if ort_q.ok else None,
                   quantize_static_cpu_s=ort_q.cpu_seconds if ort_q.ok else None,
                   quantize_static_status="ok" if ort_q.ok else ort_q.first_error_line())
    figures["convert_over_quantize_static_wall"] = _ratio(default.seconds, figures["quantize_static_wall_s"])
    figures["convert_over_quantize_static_cpu"] = _ratio(default.cpu_seconds, figures["quantize_static_cpu_s"])

    jobs2, calib2 = _convert(tflq, spec, out_dir / "jobs2.tflite", samples, timeout, "--jobs", "2")
    jobs2_again, calib2_again = _convert(tflq, spec, out_dir / "jobs2.tflite", samples, timeout,
                                         "--jobs", "2")
    jobs1_again, calib1_again = _convert(tflq, spec, out_dir / "jobs1.tflite", samples, timeout,
                                         "--jobs", "1")
    pair = (calib1, calib2, calib2_again, calib1_again)
    figures.update(calibration_jobs2_s=calib2, calibration_jobs2_again_s=calib2_again,
                   calibration_jobs1_again_s=calib1_again,
                   jobs2_speedup_calibration=None if None in pair else
                   (calib1 + calib1_again) / (calib2 + calib2_again),
                   jobs2_speedup_wall=_ratio(jobs1.seconds + jobs1_again.seconds,
                                             jobs2.seconds + jobs2_again.seconds),
                   jobs_files_identical=all(
                       (out_dir / f).exists() for f in ("jobs1.tflite", "jobs2.tflite", "default.tflite"))
                   and filecmp.cmp(out_dir / "jobs1.tflite", out_dir / "jobs2.tflite", shallow=False)
                   and filecmp.cmp(out_dir / "jobs1.tflite", out_dir / "default.tflite", shallow=False))

    competitor = _busy()
    try:
        busy1, _ = _convert(tflq, spec, out_dir / "busy_jobs1.tflite", samples, timeout, "--jobs", "1")
        busy_default, _ = _convert(tflq, spec, out_dir / "busy_default.tflite", samples, timeout)
    finally:
        competitor.kill()
        competitor.wait()
    figures.update(busy_jobs1_wall_s=busy1.seconds, busy_default_cpu_s=busy_default.cpu_seconds,
                   busy_default_wall_s=busy_default.seconds,
                   busy_over_quiet_jobs1_wall=_ratio(busy1.seconds, jobs1.seconds),
                   busy_over_quiet_default_cpu=_ratio(busy_default.cpu_seconds, default.cpu_seconds),
                   busy_over_quiet_default_wall=_ratio(busy_default.seconds, default.seconds))

    small, _ = _convert(tflq, spec, out_dir / "small.tflite", min(SMALL_SAMPLES, samples), timeout,
                        "--jobs", "1")
    figures.update(peak_rss_mb=default.peak_rss_mb, peak_rss_small_mb=small.peak_rss_mb,
                   peak_rss_jobs1_mb=jobs1.peak_rss_mb,
                   peak_rss_over_small=_ratio(jobs1.peak_rss_mb, small.peak_rss_mb))
    runs = (("jobs1", jobs1), ("numpy engine", numpy1), ("default", default), ("jobs2", jobs2), ("jobs2 again", jobs2_again),
            ("jobs1 again", jobs1_again), ("busy jobs1", busy1), ("busy default", busy_default),
            ("small", small))
    failed = [f"{name} ({run.first_error_line()})" for name, run in runs if not run.ok]
    figures["status"] = "ok" if not failed else "failed: " + "; ".join(failed)
    return figures


ROWS = (
    ("calibration (--jobs 1) / onnxruntime loop, 1 thread each", "calibration_over_onnxruntime", "≤ 1.5"),
    ("the same with --calib-engine numpy", "calibration_numpy_over_onnxruntime", ""),
    ("convert wall / quantize_static wall", "convert_over_quantize_static_wall", "≤ 1.0"),
    ("convert CPU / quantize_static CPU", "convert_over_quantize_static_cpu", ""),
    ("busy / quiet: --jobs 1 wall", "busy_over_quiet_jobs1_wall", "≤ 1.3"),
    ("busy / quiet: default run's CPU", "busy_over_quiet_default_cpu", "≤ 1.3"),
    ("busy / quiet: default run's wall", "busy_over_quiet_default_wall", ""),
    ("--jobs 1 / --jobs 2 calibration time", "jobs2_speedup_calibration", "≥ 1.7"),
    ("--jobs 1 / --jobs 2 wall", "jobs2_speedup_wall", ""),
    (f"peak RSS at 100 / at {SMALL_SAMPLES} samples (--jobs 1)", "peak_rss_over_small", "≈ 1"),
)


def speed_table(name: str, figures: dict) -> str:
    lines = [f"### {name}: calibration and conversion speed ({figures.get('samples')} samples)", "",
             "| ratio | value | target |", "|---|---:|---|"]
    for label, key, target in ROWS:
        value = figures.get(key)
        lines.append(f"| {label} | {'-' if value is None else format(value, '.2f')} | {target} |")
    seconds = {k: v for k, v in figures.items() if k.endswith(("_s", "_mb")) and v is not None}
    lines += ["", f"Calibration engine (auto): {figures.get('calibration_engine')}. "
              "Files of --jobs 1, --jobs 2 and the default run byte-identical: "
              f"{figures.get('jobs_files_identical')}. Status: {figures.get('status')}; "
              f"quantize_static: {figures.get('quantize_static_status')}.",
              "Raw: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()), ""]
    return "\n".join(lines)
