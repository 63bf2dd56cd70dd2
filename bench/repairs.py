"""What each accuracy repair (issue 13) gains and costs: cross-layer equalization, bias
correction, learned rounding (AdaRound), CLE+BC and all three, against none, in uint8
(per-tensor weights) and int8 (per-channel).

For each model, every step is one ``tflq convert --mode full --calib ... --report`` child process
(``--equalize``/``--no-equalize``, ``--bias-correction``/``--no-bias-correction`` spelled out, so
the defaults do not decide); the file runs in LiteRT on held-out evaluation inputs. Models:

- the trained digits models (``digits_mobilenet``, ``digits_mnv3``, ``digits_cnn``): calibrated on
  ``sample_models/digits_calib`` (``--calib-samples 100``), judged on the 360 held-out digits of
  ``sample_models/digits_eval.npz`` (with labels);
- the benchmark models (``mobilenet_v2``, ``resnet18``, seeded random weights): calibrated on the
  first ``BENCH_CALIB_SAMPLES`` (32) of the bench's 100 seeded calibration inputs, judged on its 20
  seeded evaluation inputs (``bench/run.py``'s ``evaluation_data``; SQNR only, no labels). 32, not
  100: the conversions of these two models otherwise take most of an hour on a shared 2-core
  machine, and the ranges of standard-normal inputs settle well before (bias correction uses 64
  samples at most, AdaRound 16, capped at 8 layers and 30 s of fitting by the CLI's defaults).
  AdaRound alone is left out for them (``BENCH_STEPS``): its measuring pass and fitting took
  16-80 s per conversion; its gain there is the "all" row's over "CLE+BC". About 10 minutes for
  the two models on a quiet machine, 3 for the trained ones.

Columns:

- top-1: accuracy on the labels (trained models only);
- worst / pooled dB: the LiteRT outputs' SQNR against onnxruntime's float model, on the worst
  evaluation sample and over all of them; the gains are over the same type's "none" row;
- convert s: the conversion's wall time (noisy: the machine is shared); repair s: the time the
  repairs themselves took, from the report (equalization sweeps, bias correction's input-mean
  pass, the rounding's fitting), as CLE + BC + AR.

Run by ``bench/run.py`` after its tables (``--no-repairs`` skips it), or alone:
``.venv-bench/bin/python bench/repairs.py [--models-dir bench/models] [--models NAME ...]``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from measure import LiteRTModel, Sample, onnxruntime_outputs

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
STEPS = {"none": ("--no-equalize", "--no-bias-correction"),
         "CLE": ("--equalize", "--no-bias-correction"),
         "BC": ("--no-equalize", "--bias-correction"),
         "AdaRound": ("--no-equalize", "--no-bias-correction", "--rounding", "adaround"),
         "CLE+BC": ("--equalize", "--bias-correction"),
         "all": ("--equalize", "--bias-correction", "--rounding", "adaround")}
DTYPES = ("uint8", "int8")
TRAINED = ("digits_mobilenet", "digits_mnv3", "digits_cnn")
BENCH_MODELS = ("mobilenet_v2", "resnet18")
BENCH_STEPS = ("none", "CLE", "BC", "CLE+BC", "all")
TRAINED_CALIB_SAMPLES = 100
BENCH_CALIB_SAMPLES = 32
REPORT_STEPS = (("CLE", "equalization"), ("BC", "bias_correction"), ("AR", "rounding"))


@dataclass
class RepairModel:
    """A model to repair: its calibration data and held-out evaluation samples (ONNX layout)."""

    name: str
    onnx: Path
    calib: Path
    calib_samples: int
    inputs: list[Sample]
    labels: np.ndarray | None = None
    steps: tuple[str, ...] = tuple(STEPS)


@dataclass
class RepairRow:
    model: str
    dtype: str
    step: str
    status: str
    top1: float | None = None
    sqnr_worst_db: float | None = None
    sqnr_db: float | None = None  # pooled over the evaluation samples
    gain_worst_db: float | None = None
    gain_db: float | None = None
    convert_s: float | None = None
    step_s: float | None = None
    step_seconds: dict | None = None  # CLE / BC / AR: seconds each repair took


def trained_models(names=TRAINED) -> list[RepairModel]:
    """The trained digits models, judged on the held-out digits."""
    data = np.load(SAMPLES / "digits_eval.npz")
    inputs = [[data["input"][i:i + 1]] for i in range(len(data["input"]))]
    return [RepairModel(name, SAMPLES / f"{name}.onnx", SAMPLES / "digits_calib",
                        TRAINED_CALIB_SAMPLES, inputs, data["labels"]) for name in names]


def bench_model(spec, inputs: list[Sample]) -> RepairModel:
    """A benchmark model (bench/run.py's ModelSpec, its calibration written) and its evaluation inputs."""
    return RepairModel(spec.name, spec.onnx, spec.calib_dir, BENCH_CALIB_SAMPLES, inputs,
                       steps=BENCH_STEPS)


def _sqnr(reference: list[np.ndarray], actual: list[np.ndarray]) -> float:
    ref = np.concatenate([np.asarray(r, np.float64).ravel() for r in reference])
    out = np.concatenate([np.asarray(a, np.float64).ravel() for a in actual])
    noise = np.sum((ref - out) ** 2)
    return float(10 * np.log10(np.sum(ref ** 2) / noise)) if noise > 0 else float("inf")


def bench_repairs(tflq: Path, out_dir: Path, models: list[RepairModel], timeout: float,
                  steps=tuple(STEPS), dtypes=DTYPES, log=print) -> list[RepairRow]:
    rows = []
    for model in models:
        reference = onnxruntime_outputs(str(model.onnx), model.inputs)
        for dtype in dtypes:
            baseline = None
            for step in (name for name in steps if name in model.steps):
                target = out_dir / model.name / f"{dtype}_{step.replace('+', '_')}.tflite"
                target.parent.mkdir(parents=True, exist_ok=True)
                report_path = target.with_suffix(".json")
                command = [str(tflq), "convert", str(model.onnx), "-o", str(target), "--mode", "full",
                           "--dtype", dtype, "--calib", str(model.calib),
                           "--calib-samples", str(model.calib_samples),
                           "--report", str(report_path), "-q", *STEPS[step]]
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
                seconds = time.perf_counter() - start
                if done.returncode != 0:
                    first = (done.stderr.strip().splitlines() or ["?"])[0]
                    rows.append(RepairRow(model.name, dtype, step, f"error: {first}"))
                    log(f"[{model.name}] {dtype} {step}: {first}")
                    continue
                report = json.loads(report_path.read_text())
                parts = {label: (report.get(key) or {}).get("seconds", 0.0)
                         for label, key in REPORT_STEPS if report.get(key)}
                litert = LiteRTModel(str(target), model.inputs[0])
                actual = [litert.run(sample) for sample in model.inputs]
                per_sample = [_sqnr(r, a) for r, a in zip(reference, actual)]
                worst = min(per_sample)
                pooled = _sqnr([x for r in reference for x in r], [x for a in actual for x in a])
                if step == "none":
                    baseline = (worst, pooled)
                top1 = None
                if model.labels is not None:
                    predictions = np.array([int(np.argmax(a[0])) for a in actual])
                    top1 = float(np.mean(predictions == model.labels))
                rows.append(RepairRow(
                    model.name, dtype, step, "ok", top1, worst, pooled,
                    None if baseline is None else worst - baseline[0],
                    None if baseline is None else pooled - baseline[1],
                    seconds, sum(parts.values()), parts))
                log(f"[{model.name}] {dtype} {step}: {pooled:.1f} dB pooled, {worst:.1f} worst, "
                    f"{seconds:.1f} s")
    return rows


def _db(value: float | None, sign: str = "") -> str:
    return "" if value is None else ("inf" if value == float("inf") else f"{value:{sign}.1f}")


def repairs_table(rows: list[RepairRow]) -> str:
    lines = ["### accuracy repairs (issue 13)", "",
             "| model | dtype | step | status | top-1 | worst dB | pooled dB | gain worst | "
             "gain pooled | convert s | repair s (CLE + BC + AR) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        parts = " + ".join(f"{k} {v:.2f}" for k, v in (r.step_seconds or {}).items())
        cells = [r.model, r.dtype, r.step, r.status,
                 "" if r.top1 is None else f"{100 * r.top1:.2f}%",
                 _db(r.sqnr_worst_db), _db(r.sqnr_db), _db(r.gain_worst_db, "+"), _db(r.gain_db, "+"),
                 "" if r.convert_s is None else f"{r.convert_s:.1f}",
                 "" if r.step_s is None else f"{r.step_s:.2f}" + (f" ({parts})" if parts else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    import run as bench_run  # (run.py imports this module: only here, not at the top)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflq", type=Path, default=ROOT / ".venv-bench" / "bin" / "tflq")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "bench" / "models",
                        help="where bench/models.py wrote mobilenet_v2.onnx and resnet18.onnx "
                             "(their calibration inputs are written next to them)")
    parser.add_argument("--models", nargs="+", default=list(TRAINED + BENCH_MODELS))
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES))
    parser.add_argument("--steps", nargs="+", default=list(STEPS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "repairs")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    models = trained_models([n for n in TRAINED if n in args.models])
    specs = bench_run.model_specs(args.models_dir)
    for name in (n for n in BENCH_MODELS if n in args.models):
        if specs[name].onnx.exists():
            bench_run.ensure_calibration(specs[name])
            models.append(bench_model(specs[name], bench_run.evaluation_data(specs[name])[0]))
    rows = bench_repairs(args.tflq, args.out, models, args.timeout, args.steps, args.dtypes,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    print(repairs_table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "repairs.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    sys.exit(main())
