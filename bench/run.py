"""Benchmark tflq: conversion time, memory, file size, accuracy and LiteRT latency per mode.

Run it from the repository root with ``make bench``: that builds ``.venv-bench`` (PyTorch, onnx,
onnxruntime, LiteRT and tflq itself), exports the seeded MobileNetV2 and ResNet-18 to
``bench/models/`` (``bench/models.py``), then runs this script. Directly, once the venv exists::

    .venv-bench/bin/python bench/run.py [--models resnet18 ...] [--configs float full-int8 ...]
                                        [--quick] [--timeout 300]

Every model (``mobilenet_v2``, ``resnet18`` and the sample ``digits_cnn``) is converted in every
configuration (float; weights-only uint8/int8; full uint8/int8/int16x8 with minmax calibration;
full int8 with percentile, mse and entropy calibration; int16x8 without its default repairs and
int8 with them) through the public CLI, ``tflq convert ... -q
--report``, each conversion in its own child process. A mode that is not implemented or fails
does not stop the run: its row's status is the first line of the CLI's stderr.

The machine is shared and noisy, so figures are meant to be read as ratios between rows of one
run, never against numbers from another run or machine; the speed and memory targets live here,
not in the tests. Latency is measured round-robin (each round invokes every model of the table
once, in a rotating order) so that load changes hit all rows alike.

Columns of the Markdown table printed per model (the same figures, and more, go to
``bench/results.json``, which git ignores):

- config: the conversion flags (see ``CONFIGS``); full modes pass ``--calib-samples 100``.
- status: ``ok``, or ``error: <first stderr line>`` when the conversion failed, or the reason
  LiteRT could not load or run the file (each file is first invoked in a throwaway process, so
  even a crashing file only marks its row).
- convert s: wall time of the ``tflq convert`` child process, Python start-up included (its
  CPU time, less sensitive to other load, is in the JSON as ``convert_cpu_s``).
- peak MB: that child's peak resident set size (``ru_maxrss`` from ``os.wait4``), 10^6 bytes.
  The child is forked from a bare launcher, not from the benchmark, whose own memory Linux
  would otherwise count in (``bench/measure.py``).
- size MB: size of the written ``.tflite`` file; size ratio: divided by the float file's size.
- SQNR dB: 10 log10(signal / error power) of the LiteRT outputs against onnxruntime running the
  float ONNX model, over all evaluation inputs: 20 seeded standard-normal inputs (different from
  the calibration inputs) for the benchmark models, ``sample_models/digits_eval.npz`` for the
  sample. The float row shows how exact the conversion itself is.
- worst dB: the same SQNR of the evaluation input whose outputs come out worst.
- top-1 (sample model only): accuracy of the LiteRT outputs against the evaluation labels; the
  float ONNX model's accuracy in onnxruntime is printed under the table.
- latency ms: median of the timed LiteRT invokes (``num_threads=1``, default delegates, after
  3 warm-up rounds; 50 timed rounds, 20 with ``--quick``, fewer for a file so slow that they
  would take more than 10 s, at least 5) on the first evaluation input.
- latency ratio: that median divided by the float file's median from the same run.
- vs int8: that median divided by the full-int8 file's median from the same run.
- vs SAME ref: the file's invoke time over a hand-built reference file's, the two alternating
  on their own for 400 rounds (8x the table's; fewer where they would take more than 10 s;
  median of each round's ratio, three decimals: the two differ by ~0.4% on ResNet-18, less than
  a shared machine's noise from round to round): the same file with each padded
  MAX_POOL_2D SAME-padded right on the tensor the ONNX model pools, as TensorFlow's converter
  writes it (its pads removed, or the convolution tflq computes one cell longer for a SAME pool
  cut back and the STRIDED_SLICE after the pool removed: ``bench/reference.py``; for the float,
  full-int8 and full-uint8 files, when they have such a pool).

After the tables, ``bench/speed.py`` measures calibration and conversion speed as ratios from one
run (calibration over an onnxruntime forward loop, conversion over onnxruntime's
``quantize_static``, a busy machine over a quiet one, ``--jobs 2`` over ``--jobs 1``, peak RSS
at 100 and 25 samples); ``--no-speed`` skips that. Last, one table gathers issue 10's targets
(those ratios, each int8 file's latency over its float file and over the SAME reference, and
the MIRROR_PADs left in the int8 files) with their bounds. Before that table, ``bench/repairs.py``
gives each accuracy repair's SQNR (and top-1) gain and its time on the trained digits models and
the benchmark models, in uint8 and int8; ``--no-repairs`` skips it. Then ``bench/target.py``
gives issue 12's ``--target-sqnr`` figure (the TFLite ops promoted to bring the worst sample 5 dB
above plain uint8's) on the benchmark models; ``--no-target`` skips it.

Calibration data for the benchmark models is 100 seeded standard-normal inputs, one ``.npy``
file each, written once to ``bench/models/calib_<model>/``; the sample uses
``sample_models/digits_calib/``. Converted files and CLI reports go to ``bench/out/``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from measure import (LiteRTModel, Sample, interleaved_latency, litert_smoke_test,
                     onnxruntime_outputs, paired_ratio, run_child, sqnr_db)
from reference import same_padded_max_pools
from repairs import (BENCH_MODELS, bench_model as repair_model, bench_repairs, repairs_table,
                     trained_models)
from target import MODELS as TARGET_MODELS, bench_target, target_table
from speed import measure_speed, speed_table

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CALIB_SAMPLES = 100
EVAL_SAMPLES = 20
CALIB_SEED = 20240
EVAL_SEED = 31337
WARMUP_ROUNDS = 3
LATENCY_ROUNDS = 50
QUICK_LATENCY_ROUNDS = 20
DEFAULT_TIMEOUT = 300.0
FLOAT = "float"
SAME_REF = " (SAME-padded MAX_POOL reference)"
SAME_REF_ROUNDS_FACTOR = 8  # a file and its SAME reference alternate for 8x the table's rounds
SAME_REF_CONFIGS = ("float", "full-int8", "full-uint8")
SLOW_FILE_BUDGET_S = 10.0  # timed invoke seconds for a file slower than that over all rounds
SPEED_MODELS = ("mobilenet_v2", "resnet18")
STATUS_WIDTH = 110


@dataclass(frozen=True)
class Config:
    """One set of conversion flags; ``calib_method`` is set for full-integer modes only."""

    name: str
    mode: str
    dtype: str | None = None
    calib_method: str | None = None
    extra: tuple[str, ...] = ()  # further flags

    def flags(self, calib_dir: Path) -> list[str]:
        flags = ["--mode", self.mode]
        if self.dtype:
            flags += ["--dtype", self.dtype]
        if self.calib_method:
            flags += ["--calib", str(calib_dir), "--calib-samples", str(CALIB_SAMPLES),
                      "--calib-method", self.calib_method]
        return flags + list(self.extra)


CONFIGS = (
    Config(FLOAT, "float"),
    Config("float16", "float16"),
    Config("weights-uint8", "weights-only", "uint8"),
    Config("weights-int8", "weights-only", "int8"),
    Config("full-uint8", "full", "uint8", "minmax"),
    Config("full-int8", "full", "int8", "minmax"),
    Config("full-int8-percentile", "full", "int8", "percentile"),
    Config("full-int8-mse", "full", "int8", "mse"),
    Config("full-int8-entropy", "full", "int8", "entropy"),
    Config("full-int16x8", "full", "int16x8", "minmax"),
    # int16x8 turns on bias correction and learned rounding; without them, and int8 with them
    # (adaround on its 8 worst layers in 30 s: more than int16x8's default gives itself)
    Config("full-int16x8-nearest", "full", "int16x8", "minmax",
           ("--no-bias-correction", "--rounding", "nearest")),
    Config("full-int8-repaired", "full", "int8", "minmax",
           ("--bias-correction", "--rounding", "adaround")),
)


@dataclass(frozen=True)
class ModelSpec:
    """A model to benchmark. Without ``eval_npz``, calibration and evaluation data are random."""

    name: str
    onnx: Path
    calib_dir: Path
    eval_npz: Path | None = None


def model_specs(models_dir: Path) -> dict[str, ModelSpec]:
    specs = [ModelSpec(name, models_dir / f"{name}.onnx", models_dir / f"calib_{name}")
             for name in ("mobilenet_v2", "resnet18")]
    samples = ROOT / "sample_models"
    specs.append(ModelSpec("digits_cnn", samples / "digits_cnn.onnx", samples / "digits_calib",
                           samples / "digits_eval.npz"))
    return {spec.name: spec for spec in specs}


@dataclass
class Row:
    """Everything measured for one (model, config) pair; None where it could not be measured."""

    config: str
    command: list[str]
    status: str = "ok"
    convert_s: float | None = None
    convert_cpu_s: float | None = None
    peak_mb: float | None = None
    size_mb: float | None = None
    size_ratio: float | None = None
    sqnr_db: float | None = None
    worst_sqnr_db: float | None = None  # of the evaluation input whose outputs come out worst
    top1: float | None = None
    latency_ms: float | None = None
    latency_ratio: float | None = None
    latency_vs_int8: float | None = None
    latency_vs_same_ref: float | None = None  # over the file with SAME-padded MAX_POOLs
    latency_vs_same_ref_minima: float | None = None  # the two files' fastest rounds, one over the other
    latency_vs_same_ref_rounds: int | None = None
    latency: dict | None = None
    report: dict | None = None


@dataclass
class ModelResult:
    name: str
    onnx: str
    status: str = "ok"
    onnx_mb: float | None = None
    eval_samples: int = 0
    onnxruntime_top1: float | None = None
    input_rounding_sqnr_db: float | None = None
    weight_rounding_sqnr_db: tuple[float, float] | None = None  # pooled, worst sample
    rows: list[Row] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- data

def input_specs(onnx_path: Path) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """Name, shape (dynamic dimensions set to 1) and dtype of each real graph input."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                      for d in tensor.shape.dim)
        specs.append((value.name, shape,
                      np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))))
    return specs


def seeded_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def random_samples(spec: ModelSpec, count: int, seed: int) -> list[Sample]:
    """``count`` seeded standard-normal samples, each a batch of one per input."""
    rng = seeded_rng(seed, spec.name)
    inputs = input_specs(spec.onnx)
    return [[rng.standard_normal(shape).astype(dtype) for _, shape, dtype in inputs]
            for _ in range(count)]


def ensure_calibration(spec: ModelSpec) -> None:
    """Write CALIB_SAMPLES random .npy inputs to spec.calib_dir unless they are there already.

    One input: the files sit in the directory. Several: one subdirectory per input name.
    """
    if spec.eval_npz is not None or (spec.calib_dir.is_dir() and
                                     len(list(spec.calib_dir.rglob("*.npy"))) >= CALIB_SAMPLES):
        return
    log(f"[{spec.name}] writing {CALIB_SAMPLES} calibration inputs to {rel(spec.calib_dir)}")
    names = [name for name, _, _ in input_specs(spec.onnx)]
    partial = spec.calib_dir.with_name(spec.calib_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for index, sample in enumerate(random_samples(spec, CALIB_SAMPLES, CALIB_SEED)):
        for name, value in zip(names, sample):
            folder = partial / name if len(names) > 1 else partial
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"calib_{index:03d}.npy", value)
    shutil.rmtree(spec.calib_dir, ignore_errors=True)
    partial.rename(spec.calib_dir)


def evaluation_data(spec: ModelSpec) -> tuple[list[Sample], np.ndarray | None]:
    """Evaluation samples (batch of one each) and labels when the model has them."""
    if spec.eval_npz is None:
        return random_samples(spec, EVAL_SAMPLES, EVAL_SEED), None
    data = np.load(spec.eval_npz)
    names = [name for name, _, _ in input_specs(spec.onnx)]
    count = len(data[names[0]])
    samples = [[data[name][i:i + 1] for name in names] for i in range(count)]
    return samples, data["labels"] if "labels" in data else None


# ------------------------------------------------------------------------------------ measuring

def convert(spec: ModelSpec, config: Config, tflq: Path, out_dir: Path, timeout: float) -> Row:
    """Run one conversion in a child process; fill time, memory, size and the CLI report."""
    output = out_dir / f"{config.name}.tflite"
    report_path = out_dir / f"{config.name}.report.json"
    for stale in (output, report_path):
        stale.unlink(missing_ok=True)
    command = [str(tflq), "convert", str(spec.onnx), "-o", str(output),
               *config.flags(spec.calib_dir), "-q", "--report", str(report_path)]
    row = Row(config=config.name, command=[rel_arg(arg) for arg in command])
    child = run_child(command, timeout)
    row.convert_s, row.convert_cpu_s = child.seconds, child.cpu_seconds
    row.peak_mb = child.peak_rss_mb
    if not child.ok:
        row.status = error_status(child.first_error_line())
        return row
    if not output.exists():
        row.status = "error: the CLI succeeded but wrote no file"
        return row
    row.size_mb = output.stat().st_size / 1e6
    if report_path.exists():
        row.report = summarize_report(json.loads(report_path.read_text()))
    return row


def summarize_report(report: dict) -> dict:
    """The parts of the CLI's JSON report worth keeping next to the measurements."""
    return {"seconds": report.get("seconds"), "quantized_ops": report.get("quantized_ops"),
            "float_ops": len(report.get("float_ops") or []),
            "ops": sum((report.get("op_counts") or {}).values()),
            "transposes_inserted": report.get("transposes_inserted"),
            "mirror_pads": (report.get("op_counts") or {}).get("MIRROR_PAD", 0),
            "calibration": report.get("calibration") or None}


def error_status(line: str) -> str:
    text = line[len("error:"):].strip() if line.lower().startswith("error:") else line
    return f"error: {text}"


def top1(outputs: list[list[np.ndarray]], labels: np.ndarray) -> float:
    predictions = np.array([int(np.argmax(sample[0])) for sample in outputs])
    return float(np.mean(predictions == labels))


def bench_model(spec: ModelSpec, configs: list[Config], tflq: Path, out_root: Path,
                latency_rounds: int, timeout: float) -> ModelResult:
    result = ModelResult(name=spec.name, onnx=rel(spec.onnx))
    if not spec.onnx.exists():
        result.status = f"error: {rel(spec.onnx)} is missing (build it: bench/models.py)"
        log(f"[{spec.name}] {result.status}")
        return result
    result.onnx_mb = spec.onnx.stat().st_size / 1e6
    ensure_calibration(spec)
    out_dir = out_root / spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    for config in configs:
        log(f"[{spec.name}] convert {config.name} ...")
        row = convert(spec, config, tflq, out_dir, timeout)
        log(f"[{spec.name}]   {row.status} ({row.convert_s:.1f} s, {row.peak_mb:.0f} MB)")
        result.rows.append(row)

    samples, labels = evaluation_data(spec)
    result.eval_samples = len(samples)
    log(f"[{spec.name}] onnxruntime reference on {len(samples)} inputs ...")
    reference = onnxruntime_outputs(str(spec.onnx), samples)
    if labels is not None:
        result.onnxruntime_top1 = top1(reference, labels)
    rounded = onnxruntime_outputs(str(spec.onnx), [round_to_8_bits(s) for s in samples])
    result.input_rounding_sqnr_db = sqnr_db([r for sample in reference for r in sample],
                                            [r for sample in rounded for r in sample])
    weighted = onnxruntime_outputs(int8_weights(spec.onnx), samples)
    result.weight_rounding_sqnr_db = (
        sqnr_db([r for sample in reference for r in sample],
                [w for sample in weighted for w in sample]),
        min(sqnr_db(r, w) for r, w in zip(reference, weighted)))
    models: dict[str, LiteRTModel] = {}
    for row in result.rows:
        if row.status != "ok":
            continue
        log(f"[{spec.name}] LiteRT outputs of {row.config} ...")
        path = str(out_dir / f"{row.config}.tflite")
        problem = litert_smoke_test(path, timeout)
        if problem:
            row.status = error_status(problem)
            continue
        try:
            model = LiteRTModel(path, samples[0])
            outputs = [model.run(sample) for sample in samples]
            row.sqnr_db = sqnr_db([r for sample in reference for r in sample],
                                  [o for sample in outputs for o in sample])
            row.worst_sqnr_db = min(sqnr_db(r, o) for r, o in zip(reference, outputs))
        except Exception as exc:  # noqa: BLE001 - a broken file is a row status, not a crash
            row.status = error_status(f"LiteRT: {type(exc).__name__}: {first_line(str(exc))}")
            continue
        if labels is not None:
            row.top1 = top1(outputs, labels)
        models[row.config] = model
    references = {}
    for row in result.rows:  # (the other calibration methods' files have full-int8's graph)
        if row.config in models and row.config in SAME_REF_CONFIGS:
            data, replaced = same_padded_max_pools((out_dir / f"{row.config}.tflite").read_bytes())
            path = out_dir / f"{row.config}.same_ref.tflite"
            path.write_bytes(data)
            if replaced and not litert_smoke_test(str(path), timeout):
                references[row.config] = LiteRTModel(str(path), samples[0])
    if models:
        log(f"[{spec.name}] latency: {len(models)} files x {latency_rounds} rounds ...")
        latencies = interleaved_latency(models, samples[0], WARMUP_ROUNDS, latency_rounds,
                                        budget_s=SLOW_FILE_BUDGET_S)
        for row in result.rows:
            if row.config in latencies:
                latency = latencies[row.config]
                row.latency_ms, row.latency = latency.median_ms, latency.summary()
        # Each file against its reference alone, alternating: among all the files of the table
        # every invoke starts with caches the other files left (measured: ResNet-18 full-int8
        # 1.12x its reference there, 1.02x in a pair), while a deployed model runs on its own.
        # The two differ by a few ops (ResNet-18: ~0.4% of the file, less than the round-to-round
        # noise of a shared machine), so many rounds.
        for name, reference in references.items():
            pair = interleaved_latency({name: models[name], SAME_REF: reference}, samples[0],
                                       WARMUP_ROUNDS, SAME_REF_ROUNDS_FACTOR * latency_rounds,
                                       budget_s=SLOW_FILE_BUDGET_S)
            row = next(r for r in result.rows if r.config == name)
            row.latency_vs_same_ref = paired_ratio(pair[name], pair[SAME_REF])
            row.latency_vs_same_ref_minima = pair[name].min_ms / pair[SAME_REF].min_ms
            row.latency_vs_same_ref_rounds = pair[name].runs
    add_ratios(result.rows)
    return result


def round_to_8_bits(sample: Sample) -> Sample:
    """The sample with each input snapped to a 256-level grid over its own range: the float
    model's output SQNR under this alone is the ceiling any 8-bit-input model can reach."""
    rounded = []
    for x in sample:
        low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        step = (high - low) / 255 or 1.0
        rounded.append((np.round((x - low) / step) * step + low).astype(x.dtype))
    return rounded


def int8_weights(onnx_path: Path) -> bytes:
    """The float model with each Conv's and Gemm's constant weight rounded to its symmetric
    per-output-channel int8 grid (max |w| / 127, nearest), computed in float: the SQNR that
    nearest-rounded int8 weights alone leave (tflq's weights-only files are no such measure:
    LiteRT's hybrid kernels quantize the activations too, and small constants stay float)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or \
                node.input[1] not in initializers:
            continue
        w = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
        rows_first = node.op_type == "Conv" or \
            any(a.name == "transB" and a.i for a in node.attribute)
        rows = w.reshape(w.shape[0], -1) if rows_first else w.T
        scale = np.abs(rows).max(axis=1, keepdims=True) / 127
        scale[scale == 0] = 1.0
        rounded = np.clip(np.round(rows / scale), -127, 127) * scale
        rounded = rounded.reshape(w.shape) if rows_first else rounded.T
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(
            rounded.astype(np.float32), node.input[1]))
    return model.SerializeToString()


def add_ratios(rows: list[Row]) -> None:
    """Size and latency relative to the float row of the same run; latency also to full-int8's."""
    base = next((r for r in rows if r.config == FLOAT and r.status == "ok"), None)
    int8 = next((r for r in rows if r.config == INT8 and r.status == "ok"), None)
    for row in rows:
        if row.status != "ok":
            continue
        if int8 is not None and row.latency_ms is not None and int8.latency_ms:
            row.latency_vs_int8 = row.latency_ms / int8.latency_ms
        if base is None:
            continue
        if row.size_mb is not None and base.size_mb:
            row.size_ratio = row.size_mb / base.size_mb
        if row.latency_ms is not None and base.latency_ms:
            row.latency_ratio = row.latency_ms / base.latency_ms


# ------------------------------------------------------------------------------------ reporting

COLUMNS = ("config", "status", "convert s", "peak MB", "size MB", "size ratio", "SQNR dB",
           "worst dB", "top-1", "latency ms", "latency ratio", "vs int8", "vs SAME ref")


def markdown_table(result: ModelResult) -> str:
    with_top1 = result.onnxruntime_top1 is not None
    columns = [c for c in COLUMNS if with_top1 or c != "top-1"]
    onnx_size = f", {result.onnx_mb:.2f} MB ONNX" if result.onnx_mb else ""
    lines = [f"### {result.name} ({result.onnx}{onnx_size})", ""]
    if result.status != "ok":
        return "\n".join(lines + [result.status, ""])
    lines += ["| " + " | ".join(columns) + " |",
              "|" + "|".join("---" if c in ("config", "status") else "---:" for c in columns) + "|"]
    for row in result.rows:
        status = row.status
        if len(status) > STATUS_WIDTH:
            status = status[:STATUS_WIDTH] + "…"
        cells = {"config": row.config, "status": status.replace("|", "\\|"),
                 "convert s": fmt(row.convert_s, ".2f"), "peak MB": fmt(row.peak_mb, ".0f"),
                 "size MB": fmt(row.size_mb, ".3f"), "size ratio": fmt(row.size_ratio, ".3f"),
                 "SQNR dB": fmt(row.sqnr_db, ".1f"), "worst dB": fmt(row.worst_sqnr_db, ".1f"),
                 "top-1": fmt(row.top1, ".3f"),
                 "latency ms": fmt(row.latency_ms, ".3f" if (row.latency_ms or 0) < 1 else ".2f"),
                 "latency ratio": fmt(row.latency_ratio, ".2f"),
                 "vs int8": fmt(row.latency_vs_int8, ".2f"),
                 "vs SAME ref": fmt(row.latency_vs_same_ref, ".3f")}
        lines.append("| " + " | ".join(cells[c] for c in columns) + " |")
    lines.append("")
    if with_top1:
        lines.append(f"Float ONNX top-1 in onnxruntime: {result.onnxruntime_top1:.3f} "
                     f"on {result.eval_samples} labelled inputs.")
    else:
        lines.append(f"SQNR over {result.eval_samples} seeded random inputs.")
    if result.input_rounding_sqnr_db is not None:
        lines.append(f"Ceiling: rounding only the input to 8 bits gives the float model "
                     f"{result.input_rounding_sqnr_db:.1f} dB.")
    if result.weight_rounding_sqnr_db is not None:
        pooled, worst = result.weight_rounding_sqnr_db
        lines.append(f"Ceiling of nearest-rounded int8 weights (per channel, float compute in "
                     f"onnxruntime): {pooled:.1f} dB, worst sample {worst:.1f}.")
    lines.append("")
    return "\n".join(lines)


# (label, where the figure is, bound, passes) for the targets table; speed figures by key
SPEED_TARGETS = (
    ("calibration (minmax, --jobs 1) / onnxruntime loop", "calibration_over_onnxruntime", "≤ 1.5",
     lambda v: v <= 1.5),
    ("convert wall / quantize_static wall", "convert_over_quantize_static_wall", "≤ 1.0",
     lambda v: v <= 1.0),
    ("busy / quiet: --jobs 1 wall", "busy_over_quiet_jobs1_wall", "≤ 1.3", lambda v: v <= 1.3),
    ("busy / quiet: default run's CPU", "busy_over_quiet_default_cpu", "≤ 1.3", lambda v: v <= 1.3),
    ("--jobs 1 / --jobs 2 calibration time", "jobs2_speedup_calibration", "≥ 1.7", lambda v: v >= 1.7),
    ("files of every --jobs byte-identical", "jobs_files_identical", "True", lambda v: v is True),
    ("peak RSS at 100 / at 25 samples (--jobs 1)", "peak_rss_over_small", "≤ 1.05", lambda v: v <= 1.05),
)
INT8 = "full-int8"


def targets_table(payload: dict) -> str:
    """Issue 10's "done when" figures of this run, one row per (model, target)."""
    lines = ["### Targets (issue 10), from this run", "", "| model | target | value | bound | met |",
             "|---|---|---:|---|---|"]

    def add(model: str, label: str, value, bound: str, test, digits: int = 2) -> None:
        shown = "-" if value is None else str(value) if isinstance(value, bool) else \
            str(value) if isinstance(value, int) else f"{value:.{digits}f}"
        met = "" if test is None else "-" if value is None else "yes" if test(value) else "no"
        lines.append(f"| {model} | {label} | {shown} | {bound} | {met} |")

    for name, figures in (payload.get("speed") or {}).items():
        for label, key, bound, test in SPEED_TARGETS:
            add(name, label, figures.get(key), bound, test)
    for model in payload.get("models", []):
        row = next((r for r in model.get("rows", []) if r["config"] == INT8), None)
        if row is None or row["status"] != "ok":
            continue
        add(model["name"], f"{INT8} LiteRT latency / float file's", row.get("latency_ratio"), "", None)
        if row.get("latency_vs_same_ref") is not None:
            rounds = row.get("latency_vs_same_ref_rounds")
            add(model["name"], f"{INT8} latency / SAME-padded MAX_POOL reference (median of "
                               f"{rounds} paired rounds)", row["latency_vs_same_ref"], "≤ 1.0",
                lambda v: v <= 1.0, digits=3)
            add(model["name"], f"{INT8} fastest round / the reference's fastest",
                row.get("latency_vs_same_ref_minima"), "", None, digits=3)
        add(model["name"], f"MIRROR_PAD ops in {INT8}", (row.get("report") or {}).get("mirror_pads"),
            "0", lambda v: v == 0)
    return "\n".join(lines + [""])


INT16X8_GAIN_DB = 10.0  # issue 12: int16x8's output SQNR over int8's, pooled and worst sample


def int16x8_table(payload: dict) -> str:
    """Issue 12's figure of this run: full-int16x8's output SQNR over full-int8's per model,
    pooled and on the worst evaluation input (and over int8 with the same repairs)."""
    lines = ["### Targets (issue 12), from this run", "",
             "| model | int16x8 - int8, pooled dB | worst sample dB | bound | met | "
             "int16x8 - repaired int8, pooled | worst |", "|---|---:|---:|---|---|---:|---:|"]
    for model in payload.get("models", []):
        rows = {r["config"]: r for r in model.get("rows", []) if r["status"] == "ok"}
        if "full-int16x8" not in rows or INT8 not in rows:
            continue
        new, old, fixed = rows["full-int16x8"], rows[INT8], rows.get("full-int8-repaired")

        def gain(a, b, key):
            return None if a is None or b is None or a.get(key) is None or b.get(key) is None \
                else a[key] - b[key]

        pooled, worst = gain(new, old, "sqnr_db"), gain(new, old, "worst_sqnr_db")
        met = "-" if pooled is None or worst is None else \
            "yes" if min(pooled, worst) >= INT16X8_GAIN_DB else "no"
        lines.append(f"| {model['name']} | {fmt(pooled, '.1f')} | {fmt(worst, '.1f')} | "
                     f"≥ {INT16X8_GAIN_DB:g} | {met} | "
                     f"{fmt(gain(new, fixed, 'sqnr_db'), '.1f')} | "
                     f"{fmt(gain(new, fixed, 'worst_sqnr_db'), '.1f')} |")
    return "\n".join(lines + [""])


def fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else format(value, spec)


def environment() -> dict:
    versions = {}
    for package in ("tflq", "numpy", "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "load_average_start": list(os.getloadavg()),
            "git": git_revision(), "versions": versions}


def git_revision() -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


def write_json(path: Path, payload: dict) -> None:
    def clean(value):  # JSON has no infinity: an identical output is written as "inf"
        if isinstance(value, float) and math.isinf(value):
            return "inf"
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(payload), indent=2) + "\n")


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def rel_arg(arg: str) -> str:
    return rel(Path(arg)) if os.path.isabs(arg) else arg


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- main

def parse_args() -> argparse.Namespace:
    specs = model_specs(BENCH_DIR / "models")
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(specs), default=list(specs),
                        metavar="MODEL", help=f"models to run (default: all): {', '.join(specs)}")
    config_names = [c.name for c in CONFIGS]
    parser.add_argument("--configs", nargs="+", choices=config_names, default=config_names,
                        metavar="CONFIG",
                        help=f"configurations to run (default: all): {', '.join(config_names)}. "
                             "float always runs: it is the baseline of the ratios")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_LATENCY_ROUNDS} timed latency rounds instead of "
                             f"{LATENCY_ROUNDS}")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds before a conversion is killed and reported as an error")
    parser.add_argument("--models-dir", type=Path, default=BENCH_DIR / "models",
                        help="where bench/models.py wrote the benchmark models")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR / "out",
                        help="converted files and CLI reports")
    parser.add_argument("--json", type=Path, default=BENCH_DIR / "results.json",
                        help="where to write the results")
    parser.add_argument("--no-speed", action="store_true",
                        help="skip the calibration and conversion speed ratios (bench/speed.py)")
    parser.add_argument("--no-repairs", action="store_true",
                        help="skip the accuracy repairs' gains and costs (bench/repairs.py)")
    parser.add_argument("--no-target", action="store_true",
                        help="skip the --target-sqnr figure (bench/target.py)")
    parser.add_argument("--tflq", type=Path, default=Path(sys.executable).parent / "tflq",
                        help="the tflq executable (default: next to this Python)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not args.tflq.exists():
        sys.exit(f"{args.tflq} not found: run `make bench`, or pass --tflq")
    specs = model_specs(args.models_dir)
    wanted = set(args.configs) | {FLOAT}
    configs = [c for c in CONFIGS if c.name in wanted]
    rounds = QUICK_LATENCY_ROUNDS if args.quick else LATENCY_ROUNDS
    started = time.perf_counter()
    payload = {"started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "environment": environment(),
               "settings": {"latency_rounds": rounds, "warmup_rounds": WARMUP_ROUNDS,
                            "calib_samples": CALIB_SAMPLES, "random_eval_samples": EVAL_SAMPLES,
                            "timeout_s": args.timeout, "litert_threads": 1},
               "models": []}
    for name in args.models:
        result = bench_model(specs[name], configs, args.tflq, args.out_dir, rounds, args.timeout)
        print(markdown_table(result), flush=True)
        payload["models"].append(asdict(result))
        payload["seconds"] = time.perf_counter() - started
        write_json(args.json, payload)
    if not args.no_speed:
        payload["speed"] = {}
        for name in [n for n in args.models if n in SPEED_MODELS]:
            spec = specs[name]
            if not spec.onnx.exists():
                continue
            ensure_calibration(spec)
            log(f"[{name}] speed: calibration vs onnxruntime, jobs, busy machine, quantize_static ...")
            figures = measure_speed(spec, args.tflq, args.out_dir / name / "speed", CALIB_SAMPLES,
                                    args.timeout)
            print(speed_table(name, figures), flush=True)
            payload["speed"][name] = figures
            write_json(args.json, payload)
    if not args.no_repairs:
        log("accuracy repairs: every step on the trained digits models and the benchmark models ...")
        repaired = trained_models()
        for name in (n for n in BENCH_MODELS if n in args.models and specs[n].onnx.exists()):
            ensure_calibration(specs[name])
            repaired.append(repair_model(specs[name], evaluation_data(specs[name])[0]))
        rows = bench_repairs(args.tflq, args.out_dir / "repairs", repaired, args.timeout, log=log)
        print(repairs_table(rows), flush=True)
        payload["repairs"] = [asdict(r) for r in rows]
        write_json(args.json, payload)
    if not args.no_target:
        log("--target-sqnr: uint8 + 5 dB on the benchmark models ...")
        rows = []
        for name in (n for n in TARGET_MODELS if n in args.models and specs[n].onnx.exists()):
            ensure_calibration(specs[name])
            rows += bench_target(args.tflq, args.out_dir / "target" / name, specs[name],
                                 evaluation_data(specs[name])[0],
                                 [n for n, _, _ in input_specs(specs[name].onnx)], args.timeout, log=log)
        print(target_table(rows), flush=True)
        payload["target_sqnr"] = [asdict(r) for r in rows]
        write_json(args.json, payload)
    payload["environment"]["load_average_end"] = list(os.getloadavg())
    payload["seconds"] = time.perf_counter() - started
    print(int16x8_table(payload), flush=True)
    print(targets_table(payload), flush=True)
    write_json(args.json, payload)
    log(f"bench: {payload['seconds']:.0f} s in total; results in {rel(args.json)}")


if __name__ == "__main__":
    main()
