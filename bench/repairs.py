"""What each accuracy repair (issue 13) gains and costs: cross-layer equalization, bias
correction, learned rounding (AdaRound), CLE+BC and all three, against none, in uint8
(per-tensor weights) and int8 (per-channel).

For each model, every step is one ``tflq convert --mode full --calib ... --report`` child process
(``--equalize``/``--no-equalize``, ``--bias-correction``/``--no-bias-correction`` spelled out, so
the defaults do not decide); the file runs in LiteRT on the evaluation inputs. Columns:

- top-1: accuracy on the labels (the trained digits models, on ``sample_models/digits_eval.npz``);
- SQNR dB: LiteRT outputs against onnxruntime's float model over all evaluation inputs, and
  the gain over the same type's "none" row;
- convert s: the conversion's wall time; step s: the time the repairs themselves took (from the
  report: equalization sweeps, bias correction's input-mean pass, the rounding's fitting).

Run by ``bench/run.py`` after its tables (``--no-repairs`` skips it), or alone:
``.venv-bench/bin/python bench/repairs.py``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_models"
STEPS = {"none": ("--no-equalize", "--no-bias-correction"),
         "CLE": ("--equalize", "--no-bias-correction"),
         "BC": ("--no-equalize", "--bias-correction"),
         "AdaRound": ("--no-equalize", "--no-bias-correction", "--rounding", "adaround"),
         "CLE+BC": ("--equalize", "--bias-correction"),
         "all": ("--equalize", "--bias-correction", "--rounding", "adaround")}
DTYPES = ("uint8", "int8")


@dataclass
class RepairRow:
    model: str
    dtype: str
    step: str
    status: str
    top1: float | None = None
    sqnr_db: float | None = None
    gain_db: float | None = None
    convert_s: float | None = None
    step_s: float | None = None


def repair_models(models_dir: Path) -> dict[str, tuple[Path, Path, Path | None]]:
    """name -> (onnx, calibration data, evaluation .npz with labels or None)."""
    evaluation = SAMPLES / "digits_eval.npz"
    models = {name: (SAMPLES / f"{name}.onnx", SAMPLES / "digits_calib", evaluation)
              for name in ("digits_mobilenet", "digits_mnv3", "digits_cnn")}
    for name in ("mobilenet_v2", "resnet18"):  # seeded random weights: SQNR only
        onnx_path, calib = models_dir / f"{name}.onnx", models_dir / f"calib_{name}"
        if onnx_path.exists() and calib.exists():
            models[name] = (onnx_path, calib, None)
    return models


def _evaluation(onnx_path: Path, evaluation: Path | None, calib: Path):
    if evaluation is not None:
        data = np.load(evaluation)
        return data["input"], data["labels"]
    files = sorted(calib.glob("*.npy"))[-20:]  # the benchmark's inputs: the last 20 calibration ones
    return np.concatenate([np.load(f) for f in files]), None


def _run_litert(path: Path, inputs: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    x, y = interpreter.get_input_details()[0], interpreter.get_output_details()[0]["index"]
    out = []
    for sample in inputs:
        value = sample.transpose(1, 2, 0) if sample.ndim == 3 else sample
        interpreter.set_tensor(x["index"], np.ascontiguousarray(value[None], dtype=x["dtype"]))
        interpreter.invoke()
        out.append(interpreter.get_tensor(y).copy())
    return np.concatenate(out).astype(np.float64)


def _sqnr(reference: np.ndarray, actual: np.ndarray) -> float:
    noise = np.sum((reference - actual) ** 2)
    return float(10 * np.log10(np.sum(reference ** 2) / noise)) if noise > 0 else float("inf")


def bench_repairs(tflq: Path, out_dir: Path, models_dir: Path, timeout: float) -> list[RepairRow]:
    import onnxruntime

    rows = []
    for name, (onnx_path, calib, evaluation) in repair_models(models_dir).items():
        inputs, labels = _evaluation(onnx_path, evaluation, calib)
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        reference = np.concatenate([session.run(None, {feed: s[None]})[0]
                                    for s in inputs]).astype(np.float64)
        for dtype in DTYPES:
            baseline = None
            for step, flags in STEPS.items():
                target = out_dir / name / f"{dtype}_{step.replace('+', '_')}.tflite"
                target.parent.mkdir(parents=True, exist_ok=True)
                report_path = target.with_suffix(".json")
                command = [str(tflq), "convert", str(onnx_path), "-o", str(target), "--mode", "full",
                           "--dtype", dtype, "--calib", str(calib), "--calib-samples", "100",
                           "--report", str(report_path), "-q", *flags]
                start = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
                seconds = time.perf_counter() - start
                if done.returncode != 0:
                    first = (done.stderr.strip().splitlines() or ["?"])[0]
                    rows.append(RepairRow(name, dtype, step, f"error: {first}"))
                    continue
                report = json.loads(report_path.read_text())
                step_s = sum((report.get(k) or {}).get("seconds", 0.0)
                             for k in ("equalization", "bias_correction", "rounding"))
                actual = _run_litert(target, inputs)
                sqnr = _sqnr(reference, actual)
                baseline = sqnr if step == "none" else baseline
                rows.append(RepairRow(name, dtype, step, "ok",
                                      None if labels is None else float(np.mean(actual.argmax(1) == labels)),
                                      sqnr, None if baseline is None else sqnr - baseline, seconds, step_s))
    return rows


def repairs_table(rows: list[RepairRow]) -> str:
    lines = ["### accuracy repairs (issue 13)", "",
             "| model | dtype | step | status | top-1 | SQNR dB | gain dB | convert s | step s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r.model, r.dtype, r.step, r.status,
                 "" if r.top1 is None else f"{100 * r.top1:.2f}%",
                 "" if r.sqnr_db is None else f"{r.sqnr_db:.1f}",
                 "" if r.gain_db is None else f"{r.gain_db:+.1f}",
                 "" if r.convert_s is None else f"{r.convert_s:.2f}",
                 "" if r.step_s is None else f"{r.step_s:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    tflq = ROOT / ".venv-bench" / "bin" / "tflq"
    rows = bench_repairs(tflq, ROOT / "bench" / "out" / "repairs", ROOT / "bench" / "models", 600)
    print(repairs_table(rows))
    (ROOT / "bench" / "out" / "repairs.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    sys.exit(main())
