"""--mode float16 on the benchmark models: the file's size against tflq's float file, and the SQNR
of LiteRT's output against onnxruntime's float output, next to an independent reference: the SQNR
of onnxruntime on the ONNX model with its Conv/Gemm/MatMul weights rounded to float16 in numpy
(--all-initializers: every float initializer, BatchNorm statistics included). Worst sample of 20
seeded standard-normal inputs.

    .venv-bench/bin/python bench/models.py bench/models      # once
    .venv-bench/bin/python bench/float16.py [--all-initializers] [MODELS_DIR [NAME ...]]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
import tflq
from ai_edge_litert.interpreter import Interpreter

def sqnr(ref, x):
    ref = ref.astype(np.float64); n = np.sum((ref - x) ** 2)
    return float(10 * np.log10(np.sum(ref ** 2) / n)) if n else float("inf")

def ort_run(model, feeds):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [s.run(None, f)[0] for f in feeds]

def litert_run(data, feeds):
    it = Interpreter(model_content=data, num_threads=1); it.allocate_tensors()
    (d,) = it.get_input_details(); (o,) = it.get_output_details(); out = []
    for f in feeds:
        x = next(iter(f.values()))
        it.set_tensor(d["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1))); it.invoke()
        out.append(it.get_tensor(o["index"]).copy())
    return out

ALL = "--all-initializers" in sys.argv
ARGS = [a for a in sys.argv[1:] if a != "--all-initializers"]
DIRECTORY = ARGS[0] if ARGS else str(Path(__file__).resolve().parent / "models")
for name in ARGS[1:] or ["mobilenet_v2", "resnet18"]:
    path = Path(DIRECTORY) / f"{name}.onnx"
    model = onnx.load(str(path))
    inp = model.graph.input[0]
    rng = np.random.default_rng(123)
    feeds = [{inp.name: rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(20)]
    ref = ort_run(model, feeds)
    rounded = onnx.load(str(path))
    weights = {n.input[1] for n in rounded.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    for init in rounded.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and (ALL or init.name in weights):
            init.CopyFrom(numpy_helper.from_array(a.astype(np.float16).astype(np.float32), init.name))
    oracle = ort_run(rounded, feeds)
    t = time.perf_counter(); f32 = tflq.convert(str(path), mode="float").tflite
    r = tflq.convert(str(path), mode="float16"); secs = time.perf_counter() - t
    got = litert_run(r.tflite, feeds)
    s_tflq = min(sqnr(a, b) for a, b in zip(ref, got)); s_np = min(sqnr(a, b) for a, b in zip(ref, oracle))
    print(f"{name}: float {len(f32)/1e6:.2f} MB, float16 {len(r.tflite)/1e6:.2f} MB ({len(r.tflite)/len(f32):.4f}x); "
          f"worst-sample SQNR vs onnxruntime float: tflq float16 in LiteRT {s_tflq:.2f} dB, "
          f"{'all initializers' if ALL else 'Conv/Gemm weights'} rounded to float16 in onnxruntime {s_np:.2f} dB (diff {s_tflq - s_np:+.2f} dB)")
