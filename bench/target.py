"""Issue 12's --target-sqnr figure on the benchmark models: how many of the file's TFLite ops
`tflq convert --mode full --dtype uint8 --target-sqnr DB` promotes to bring the worst evaluation
sample GAIN_DB (5) above plain uint8's (done when: at most a tenth of them on ResNet-18).

Per model, each step a ``tflq convert`` child process:

- plain: ``--mode full --dtype uint8 --calib DIR --calib-samples 100`` (run.py's full-uint8,
  minmax, the defaults otherwise); its worst sample over the 20 seeded evaluation inputs in
  LiteRT against onnxruntime is the baseline;
- the search, once per row of ``VARIANTS``: the same flags plus the variant's, ``--target-sqnr``
  baseline + GAIN_DB and ``--eval-data`` the first SEARCH_SAMPLES evaluation inputs (written as
  .npy files), so the search measures on held-out inputs, as the figure is judged;
- the file it writes, judged in LiteRT on all 20 evaluation inputs.

Promoted ops are the report's ``precision.promoted_ops``: ops of the file made from a promoted
ONNX node (a convolution's explicit PAD counts), out of ``precision.tflite_ops`` (the 8-bit
file's ops); the QUANTIZE/DEQUANTIZE added at their edges are listed apart (``boundary_ops``).

Run by ``bench/run.py`` after the repairs (``--no-target`` skips it), or alone:
``.venv-bench/bin/python bench/target.py [--models-dir bench/models] [--models NAME ...]``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from measure import LiteRTModel, Sample, onnxruntime_outputs, run_child

ROOT = Path(__file__).resolve().parent.parent
GAIN_DB = 5.0
SEARCH_SAMPLES = 8  # the evaluation inputs the search measures on (tflq's default count)
CALIB_SAMPLES = 100
SHARE = 0.1  # the done-when bound: promoted ops over the file's ops
MODELS = ("resnet18", "mobilenet_v2")
VARIANTS = {"defaults": (), "mse": ("--calib-method", "mse")}


@dataclass
class TargetRow:
    model: str
    variant: str
    status: str
    plain_worst_db: float | None = None
    target_db: float | None = None
    promoted_ops: int | None = None
    tflite_ops: int | None = None
    boundary_ops: int | None = None
    nodes: int | None = None
    counted: str = ""  # the repairs every mix was measured with (bias correction)
    worst_db: float | None = None  # the written file, LiteRT, worst of the evaluation inputs
    pooled_db: float | None = None
    search_s: float | None = None

    @property
    def met(self) -> bool | None:
        if self.promoted_ops is None or self.worst_db is None:
            return None
        return self.worst_db >= self.target_db and self.promoted_ops <= SHARE * self.tflite_ops


def _sqnr(reference: list[np.ndarray], actual: list[np.ndarray]) -> float:
    ref = np.concatenate([np.asarray(r, np.float64).ravel() for r in reference])
    out = np.concatenate([np.asarray(a, np.float64).ravel() for a in actual])
    noise = np.sum((ref - out) ** 2)
    return float(10 * np.log10(np.sum(ref ** 2) / noise)) if noise > 0 else float("inf")


def _judge(path: Path, inputs: list[Sample], reference) -> tuple[float, float]:
    """(worst sample, pooled) SQNR of the file in LiteRT against onnxruntime."""
    litert = LiteRTModel(str(path), inputs[0])
    actual = [litert.run(sample) for sample in inputs]
    worst = min(_sqnr(r, a) for r, a in zip(reference, actual))
    return worst, _sqnr([x for r in reference for x in r], [x for a in actual for x in a])


def _write_eval_dir(folder: Path, inputs: list[Sample], names: list[str]) -> Path:
    """The first SEARCH_SAMPLES evaluation inputs as .npy files (one subdirectory per input
    when there are several), read by --eval-data like --calib."""
    for index, sample in enumerate(inputs[:SEARCH_SAMPLES]):
        for name, value in zip(names, sample):
            sub = folder / name if len(names) > 1 else folder
            sub.mkdir(parents=True, exist_ok=True)
            np.save(sub / f"eval_{index:03d}.npy", value)
    return folder


def bench_target(tflq: Path, out_dir: Path, spec, inputs: list[Sample], input_names: list[str],
                 timeout: float, variants=tuple(VARIANTS), log=print) -> list[TargetRow]:
    """The rows of one model (bench/run.py's ModelSpec, its calibration written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = onnxruntime_outputs(str(spec.onnx), inputs)
    base = [str(tflq), "convert", str(spec.onnx), "--mode", "full", "--dtype", "uint8",
            "--calib", str(spec.calib_dir), "--calib-samples", str(CALIB_SAMPLES), "-q"]
    plain = out_dir / "plain_uint8.tflite"
    child = run_child([*base, "-o", str(plain)], timeout)
    if not child.ok:
        return [TargetRow(spec.name, v, f"error: {child.first_error_line()}") for v in variants]
    plain_worst, _ = _judge(plain, inputs, reference)
    target = round(plain_worst + GAIN_DB, 2)
    eval_dir = _write_eval_dir(out_dir / "eval", inputs, input_names)
    rows = []
    for variant in variants:
        output, report_path = out_dir / f"target_{variant}.tflite", out_dir / f"target_{variant}.json"
        row = TargetRow(spec.name, variant, "ok", plain_worst, target)
        start = time.perf_counter()
        child = run_child([*base, *VARIANTS[variant], "-o", str(output), "--report", str(report_path),
                           "--target-sqnr", f"{target:g}", "--eval-data", str(eval_dir)], timeout)
        row.search_s = time.perf_counter() - start
        if not child.ok:
            row.status = f"error: {child.first_error_line()}"
            rows.append(row)
            continue
        precision = json.loads(report_path.read_text())["precision"]
        row.promoted_ops, row.tflite_ops = precision["promoted_ops"], precision["tflite_ops"]
        row.boundary_ops, row.nodes = precision["boundary_ops"], len(precision["promoted"])
        row.counted = precision.get("counted", "")
        row.worst_db, row.pooled_db = _judge(output, inputs, reference)
        log(f"[{spec.name}] target {target:g} dB ({variant}): {row.promoted_ops} of {row.tflite_ops} "
            f"ops promoted, LiteRT worst {row.worst_db:.2f} dB, {row.search_s:.1f} s")
        rows.append(row)
    return rows


def _db(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def target_table(rows: list[TargetRow]) -> str:
    lines = [f"### --target-sqnr: uint8 + {GAIN_DB:g} dB on the worst sample (issue 12)", "",
             "| model | variant | status | plain worst dB | target dB | promoted ops / file ops "
             "(+ edge QUANTIZE) | nodes | repairs counted | worst dB (LiteRT) | pooled dB | "
             f"≤ {SHARE:.0%} of ops and reached | convert s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ops = "" if r.promoted_ops is None else f"{r.promoted_ops} / {r.tflite_ops} (+{r.boundary_ops})"
        met = "" if r.met is None else ("yes" if r.met else "no")
        lines.append("| " + " | ".join([
            r.model, r.variant, r.status, _db(r.plain_worst_db), _db(r.target_db), ops,
            "" if r.nodes is None else str(r.nodes), r.counted, _db(r.worst_db), _db(r.pooled_db),
            met, "" if r.search_s is None else f"{r.search_s:.1f}"]) + " |")
    lines.append("")
    lines.append(f"The search measures on the first {SEARCH_SAMPLES} evaluation inputs (--eval-data); "
                 f"the worst and pooled figures are over all of them.")
    return "\n".join(lines)


def main() -> None:
    import run as bench_run  # (run.py imports this module: only here, not at the top)

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflq", type=Path, default=ROOT / ".venv-bench" / "bin" / "tflq")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "bench" / "models")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "target")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    specs = bench_run.model_specs(args.models_dir)
    rows = []
    for name in (n for n in MODELS if n in args.models and specs[n].onnx.exists()):
        spec = specs[name]
        bench_run.ensure_calibration(spec)
        names = [n for n, _, _ in bench_run.input_specs(spec.onnx)]
        rows += bench_target(args.tflq, args.out / name, spec, bench_run.evaluation_data(spec)[0],
                             names, args.timeout, args.variants,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    print(target_table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "target.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    sys.exit(main())
