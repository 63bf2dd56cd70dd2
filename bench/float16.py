"""--mode float16 on the benchmark models: the file's size against tflq's float file, and the SQNR
of LiteRT's output against onnxruntime's float output, next to an independent reference: the SQNR
of onnxruntime on the ONNX model with its Conv/Gemm/MatMul weights rounded to float16 in numpy
(--all-initializers: every float initializer, BatchNorm statistics included), and the SQNR of
onnxruntime on the model with each Conv -> BatchNormalization folded in numpy and the folded
weights rounded (the weights a converter that folds BatchNorm first stores; biases stay float32,
as in tflq's scheme). Worst sample of 20 seeded standard-normal inputs.

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

def fold_batchnorm(model):
    """Each Conv whose only reader is a BatchNormalization takes the BatchNorm in, in float64:
    W' = W * g / sqrt(v + eps) per output channel, b' = (b - m) * g / sqrt(v + eps) + beta."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    readers = {}
    for n in model.graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    keep, renamed = [], {}
    for n in model.graph.node:
        nxt = readers.get(n.output[0], []) if n.op_type == "Conv" else []
        if len(nxt) == 1 and nxt[0].op_type == "BatchNormalization":
            bn = nxt[0]; g, beta, m, v = (inits[t].astype(np.float64) for t in bn.input[1:5])
            eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
            k = g / np.sqrt(v + eps); w = inits[n.input[1]].astype(np.float64)
            b = inits[n.input[2]].astype(np.float64) if len(n.input) > 2 else np.zeros(w.shape[0])
            wname, bname = n.output[0] + "/folded_w", n.output[0] + "/folded_b"
            inits[wname] = (w * k.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32)
            inits[bname] = ((b - m) * k + beta).astype(np.float32)
            conv = onnx.helper.make_node(
                "Conv", [n.input[0], wname, bname], [bn.output[0]], name=n.name)
            conv.attribute.extend(n.attribute); keep.append(conv); renamed[bn.name] = True
        elif not (n.op_type == "BatchNormalization" and n.name in renamed):
            keep.append(n)
    del model.graph.node[:]; model.graph.node.extend(keep)
    used = {t for n in keep for t in n.input}
    del model.graph.initializer[:]
    model.graph.initializer.extend(numpy_helper.from_array(a, k) for k, a in inits.items() if k in used)
    return model

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
    folded = fold_batchnorm(onnx.load(str(path)))
    fweights = {n.input[1] for n in folded.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    for init in folded.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.float32 and init.name in fweights:
            init.CopyFrom(numpy_helper.from_array(a.astype(np.float16).astype(np.float32), init.name))
    folded_oracle = ort_run(folded, feeds)
    t = time.perf_counter(); f32 = tflq.convert(str(path), mode="float").tflite
    r = tflq.convert(str(path), mode="float16"); secs = time.perf_counter() - t
    got = litert_run(r.tflite, feeds)
    s_tflq = min(sqnr(a, b) for a, b in zip(ref, got)); s_np = min(sqnr(a, b) for a, b in zip(ref, oracle))
    s_fold = min(sqnr(a, b) for a, b in zip(ref, folded_oracle))
    print(f"{name}: float {len(f32)/1e6:.2f} MB, float16 {len(r.tflite)/1e6:.2f} MB "
          f"({len(r.tflite)/len(f32):.4f}x); worst-sample SQNR vs onnxruntime float: "
          f"tflq float16 in LiteRT {s_tflq:.2f} dB; "
          f"{'all initializers' if ALL else 'Conv/Gemm weights'} rounded to float16 in onnxruntime "
          f"{s_np:.2f} dB (diff {s_tflq - s_np:+.2f} dB); "
          f"BatchNorm folded, then weights rounded {s_fold:.2f} dB (diff {s_tflq - s_fold:+.2f} dB)")
