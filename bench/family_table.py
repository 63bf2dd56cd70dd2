"""The per-family table of issue 8: for every model of the family suites (1-D, recurrent,
integer/boolean, float math, shape arithmetic, control flow, transformers, tf2onnx NHWC), the float
file's worst-sample SQNR against onnxruntime, the full int8 file's worst-sample SQNR, the TRANSPOSE
count of the float file and its conversion time; optionally real models given on the command line.

    .venv-test/bin/python -m bench.family_table                    # every family (a few minutes)
    .venv-test/bin/python -m bench.family_table --family 1-D --family recurrent
    .venv-test/bin/python -m bench.family_table --family none \\
        --model /tmp/captcha_crnn.onnx --input-shape image:1,3,60,160 --reference

Each suite's own models, samples and runners are used (the same inputs its tests judge), so the
numbers here are the ones the suites assert floors on. Real-model inputs are uniform in [-1, 1]
(seed 0): 8 samples judged, 16 for calibration. SQNR is over float outputs; integer outputs of the
float file must match exactly (a mismatch prints "ints differ"). --reference adds onnxruntime vs
onnx's ReferenceEvaluator on the same samples: the float noise floor of the model itself.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.conftest import run_litert, run_onnxruntime  # noqa: E402
from tflq.config import ConvertConfig  # noqa: E402
from tflq.ir.quant import sqnr_db  # noqa: E402
from tflq.pipeline import convert  # noqa: E402

Feeds = dict[str, np.ndarray]
Runner = Callable[[bytes, Feeds], list[np.ndarray]]


@dataclass
class Entry:
    """One model to measure, with the samples and the runner its suite uses."""

    family: str
    name: str
    model: onnx.ModelProto | str  # a proto, or the path of a model file
    samples: list[Feeds]
    calib: list[Feeds]
    run: Runner | None = None  # default: LiteRT on the feeds' values in order, 4-D I/O NHWC
    input_shapes: dict = field(default_factory=dict)


def _default_run(tflite: bytes, feeds: Feeds) -> list[np.ndarray]:
    return run_litert(tflite, list(feeds.values()))


def _normal_feeds(model: onnx.ModelProto, count: int, seed: int) -> list[Feeds]:
    rng = np.random.default_rng(seed)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    return [{n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()} for _ in range(count)]


# ---- the families ------------------------------------------------------------------------------
def one_d() -> Iterator[Entry]:
    from tests import test_one_d as suite

    for name, build in suite.FAMILIES.items():
        model, layout = build()
        yield Entry("1-D", name, model, suite._samples(model, 8, seed=7), suite._samples(model, 16, seed=8),
                    lambda t, f, m=model, lay=layout: suite._run(t, m, f, lay))


def recurrent() -> Iterator[Entry]:
    from tests import test_recurrent as suite

    models = [(f"{kind}-{i}", suite.recurrent_model(kind, seed=i, **attrs))
              for i, (kind, attrs) in enumerate(suite.CELLS)] + [("crnn", suite.crnn_model())]
    for name, model in models:
        yield Entry("recurrent", name, model, suite._samples(model, 8, seed=11),
                    suite._samples(model, 32, seed=12), lambda t, f, m=model: suite.run_file(t, m, f))


def integer_boolean() -> Iterator[Entry]:
    from tests import int_families as suite

    for name, (build, sample) in suite.FAMILIES.items():
        rng = np.random.default_rng(2026)
        samples = [sample(rng) for _ in range(8)]
        yield Entry("integer/boolean", name, build(), samples, [sample(rng) for _ in range(16)])


def float_math() -> Iterator[Entry]:
    from tests import test_float_math_family as suite

    for name, family in suite.FAMILIES.items():
        model = family.build()
        yield Entry("float math", name, model, suite._samples(model, 8, seed=7),
                    suite._samples(model, 16, seed=11))


def shape_arithmetic() -> Iterator[Entry]:
    from tests import test_fuzz_graphs as suite

    for seed in range(6):
        builder = suite.ShapeGraph(7000 + seed)
        model, _ = builder.build()
        feeds = [{"x": x} for x in suite._inputs(builder.input_shape, 8, seed)]
        yield Entry("shape arithmetic", f"ShapeGraph seed {seed}", model, feeds, feeds)
    for seed in range(4):
        builder = suite.AttentionGraph(8000 + seed)
        model, _ = builder.build()
        feeds = [{"x": x} for x in suite._inputs(builder.input_shape, 8, seed)]
        yield Entry("shape arithmetic", f"AttentionGraph seed {seed}", model, feeds, feeds)


def control_flow() -> Iterator[Entry]:
    from tests import test_shape_folding as suite

    models = [("Loop, 5 iterations", suite._loop_model(5))]
    for args in [(0, 0, 0, 0), (1, 1, 0, 0), (2, 0, 1, 1)]:
        models.append((f"Scan axes/directions {args}", suite._scan_model(*args)[0]))
    for name, model in models:
        yield Entry("control flow", name, model, _normal_feeds(model, 8, 3), _normal_feeds(model, 16, 4))


def transformers() -> Iterator[Entry]:
    from tests import test_transformer_families as suite

    for name, family in suite.FAMILIES.items():
        path = os.path.join(suite.HERE, family.file)
        model = onnx.load(path)
        yield Entry("transformers", name, path, [suite._feeds(model, family, s) for s in range(8)],
                    [suite._feeds(model, family, 100 + s) for s in range(16)],
                    input_shapes=family.input_shapes)


def tf2onnx_nhwc() -> Iterator[Entry]:
    from tests.passes import test_nhwc_io as suite

    for kind in suite.KINDS:
        model, shape = suite._model(kind)
        yield Entry("tf2onnx NHWC", kind, model, [{"x": x} for x in suite._samples(shape, 8, 1)],
                    [{"x": x} for x in suite._samples(shape, 16, 2)],
                    lambda t, f: run_litert(t, [f["x"]], nchw_io=False))


FAMILIES = {"1-D": one_d, "recurrent": recurrent, "integer/boolean": integer_boolean,
            "float math": float_math, "shape arithmetic": shape_arithmetic, "control flow": control_flow,
            "transformers": transformers, "tf2onnx NHWC": tf2onnx_nhwc}


def real_model(path: str, shapes: dict[str, tuple[int, ...]]) -> Entry:
    """A model file with uniform [-1, 1] inputs: the --input-shape entries naming its inputs."""
    model = onnx.load(path, load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    shapes = {vi.name: shapes[vi.name] for vi in model.graph.input
              if vi.name not in initializers and vi.name in shapes}
    rng = np.random.default_rng(0)

    def draw() -> Feeds:
        return {n: rng.uniform(-1, 1, s).astype(np.float32) for n, s in shapes.items()}

    samples = [draw() for _ in range(8)]
    return Entry("real models", os.path.basename(path), path, samples, [draw() for _ in range(16)],
                 input_shapes=shapes)


# ---- measuring -----------------------------------------------------------------------------------
@dataclass
class Row:
    family: str
    name: str
    float_db: float
    int8_db: float
    transposes: int
    seconds: float
    note: str = ""


def _worst(path: str, tflite: bytes, samples: list[Feeds], run: Runner) -> tuple[float, bool]:
    """The worst SQNR over samples and float outputs; whether every integer output was exact."""
    worst, exact = float("inf"), True
    for feeds in samples:
        for e, a in zip(run_onnxruntime(path, feeds), run(tflite, feeds)):
            if e.dtype.kind in "iub":
                exact = exact and a.dtype == e.dtype and np.array_equal(e, a)
            else:
                worst = min(worst, sqnr_db(e, a))
    return worst, exact


def _reference_floor(path: str, samples: list[Feeds]) -> float:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(path)
    return min(sqnr_db(e, np.asarray(r)) for feeds in samples
               for e, r in zip(run_onnxruntime(path, feeds), evaluator.run(None, feeds))
               if e.dtype.kind == "f")


def measure(entry: Entry, directory: str, reference: bool = False) -> Row:
    path = entry.model if isinstance(entry.model, str) else os.path.join(directory, "model.onnx")
    if not isinstance(entry.model, str):
        onnx.save(entry.model, path)
    run = entry.run or _default_run
    start = time.perf_counter()
    report = convert(ConvertConfig(model=path, input_shapes=entry.input_shapes))
    seconds = time.perf_counter() - start
    float_db, exact = _worst(path, report.tflite, entry.samples, run)
    full = convert(ConvertConfig(model=path, input_shapes=entry.input_shapes, mode="full", dtype="int8",
                                 calib=entry.calib))
    int8_db, _ = _worst(path, full.tflite, entry.samples, run)
    notes = [] if exact else ["ints differ"]
    if full.float_ops:
        notes.append(f"{len(full.float_ops)} float op(s) in int8")
    if reference:
        notes.append(f"onnxruntime vs reference evaluator {_reference_floor(path, entry.samples):.1f} dB")
    return Row(entry.family, entry.name, float_db, int8_db, report.op_counts.get("TRANSPOSE", 0), seconds,
               "; ".join(notes))


def _db(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", action="append", help=f"one of {list(FAMILIES)} or 'none' (default: all)")
    parser.add_argument("--model", action="append", default=[], help="a real ONNX model to measure too")
    parser.add_argument("--input-shape", action="append", default=[],
                        help="NAME:D0,D1,... for the real models' inputs (each model takes the ones naming "
                             "its inputs; every input needs one)")
    parser.add_argument("--reference", action="store_true",
                        help="also measure onnxruntime against onnx's ReferenceEvaluator (real models)")
    args = parser.parse_args(argv)
    families = args.family or list(FAMILIES)
    unknown = [f for f in families if f not in FAMILIES and f != "none"]
    if unknown:
        parser.error(f"unknown families {unknown}")
    shapes = {name: tuple(int(d) for d in dims.split(","))
              for name, dims in (item.split(":") for item in args.input_shape)}
    entries: list[tuple[Entry, bool]] = [(e, False) for f in families if f != "none" for e in FAMILIES[f]()]
    entries += [(real_model(path, shapes), args.reference) for path in args.model]
    print("| family | model | float worst SQNR (dB) | full int8 worst SQNR (dB) | TRANSPOSE | "
          "conversion (s) | note |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for entry, reference in entries:
            row = measure(entry, directory, reference)
            rows.append(row)
            print(f"| {row.family} | {row.name} | {_db(row.float_db)} | {_db(row.int8_db)} | "
                  f"{row.transposes} | {row.seconds:.2f} | {row.note} |", flush=True)
    print("\n| family | models | float worst SQNR (dB) | full int8 SQNR (dB) | TRANSPOSE | conversion (s) |")
    print("|---|---|---|---|---|---|")
    for family in dict.fromkeys(r.family for r in rows):
        group = [r for r in rows if r.family == family]
        int8 = [r.int8_db for r in group]
        print(f"| {family} | {len(group)} | {_db(min(r.float_db for r in group))} (worst) | "
              f"{_db(min(int8))}-{_db(max(int8))} | {min(r.transposes for r in group)}-"
              f"{max(r.transposes for r in group)} | {max(r.seconds for r in group):.2f} (max) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
