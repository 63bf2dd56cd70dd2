"""Peak memory of converting a large model: a BERT-base-width encoder built at bench time.

The model is made here with onnx.helper from a config (hidden 768, 12 heads, FFN 3072, vocabulary
30522, 4 layers: about 210 MB of float32 weights, seeded random values; nothing is downloaded),
written to a temporary folder, and converted in float, weights-only int8 and full int8 (8 calibration
samples of token ids) through the CLI in a child process (bench/measure.py: peak RSS of the child alone).
The table gives the peak over the weights' size: what a model W bytes large needs at least is
about 3 W (the graph's weights, the flatbuffer builder's and the file's bytes). The figures are
ratios within one run; the machine is shared.

    .venv-bench/bin/python bench/memory.py [--layers 4] [--tflq PATH] [--timeout 600]
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from measure import run_child

CONFIG = {"vocab": 30522, "hidden": 768, "heads": 12, "ffn": 3072, "positions": 512, "sequence": 128}


def encoder(layers: int, seed: int = 0) -> onnx.ModelProto:
    """A post-norm BERT encoder (embeddings, LayerNorms, erf GELU, no attention mask) in opset 17."""
    c = CONFIG
    rng = np.random.default_rng(seed)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, *shape: int, std: float = 0.02) -> str:
        inits.append(numpy_helper.from_array(rng.normal(0, std, shape).astype(np.float32), name))
        return name

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def layer_norm(x: str, name: str) -> str:
        scale = const(f"{name}.gamma", np.ones(c["hidden"], np.float32))
        bias = const(f"{name}.beta", np.zeros(c["hidden"], np.float32))
        return node("LayerNormalization", [x, scale, bias], f"{name}.out", axis=-1, epsilon=1e-12)

    def dense(x: str, name: str, n_in: int, n_out: int) -> str:
        y = node("MatMul", [x, weight(f"{name}.weight", n_in, n_out)], f"{name}.matmul")
        return node("Add", [y, weight(f"{name}.bias", n_out)], f"{name}.out")

    h, heads, seq = c["hidden"], c["heads"], c["sequence"]
    words = node("Gather", [weight("embeddings.word", c["vocab"], h), "input_ids"], "embeddings.words")
    positions = node("Gather", [weight("embeddings.position", c["positions"], h),
                                const("position_ids", np.arange(seq, dtype=np.int64)[None])], "embeddings.positions")
    x = layer_norm(node("Add", [words, positions], "embeddings.sum"), "embeddings.norm")
    split = const("heads_shape", np.array([1, seq, heads, h // heads], np.int64))
    merged = const("merged_shape", np.array([1, seq, h], np.int64))
    for i in range(layers):
        p = f"layer{i}"
        q, k, v = (node("Transpose", [node("Reshape", [dense(x, f"{p}.{n}", h, h), split], f"{p}.{n}.heads")],
                        f"{p}.{n}.t", perm=perm) for n, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]),
                                                                ("v", [0, 2, 1, 3])))
        scores = node("Div", [node("MatMul", [q, k], f"{p}.scores"),
                              const(f"{p}.sqrt_d", np.float32(math.sqrt(h // heads)))], f"{p}.scaled")
        attention = node("MatMul", [node("Softmax", [scores], f"{p}.softmax", axis=-1), v], f"{p}.context")
        context = node("Reshape", [node("Transpose", [attention], f"{p}.context.t", perm=[0, 2, 1, 3]), merged],
                       f"{p}.context.merged")
        x = layer_norm(node("Add", [x, dense(context, f"{p}.attention.out", h, h)], f"{p}.residual1"), f"{p}.norm1")
        up = dense(x, f"{p}.ffn.up", h, c["ffn"])
        erf = node("Erf", [node("Div", [up, const(f"{p}.sqrt2", np.float32(math.sqrt(2)))], f"{p}.gelu.scaled")],
                   f"{p}.gelu.erf")
        gelu = node("Mul", [node("Mul", [up, node("Add", [erf, const(f"{p}.one", np.float32(1))], f"{p}.gelu.sum")],
                                 f"{p}.gelu.prod"), const(f"{p}.half", np.float32(0.5))], f"{p}.gelu")
        x = layer_norm(node("Add", [x, dense(gelu, f"{p}.ffn.down", c["ffn"], h)], f"{p}.residual2"), f"{p}.norm2")
    graph = helper.make_graph(nodes, "bert_base_width",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, seq, h])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tflq", type=Path, default=Path(sys.executable).parent / "tflq")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tflq-bench-memory-") as tmp:
        folder = Path(tmp)
        model = encoder(args.layers)
        weights_mb = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer) / 1e6
        onnx.save(model, folder / "encoder.onnx")
        del model
        calib = folder / "calib"
        calib.mkdir()
        rng = np.random.default_rng(1)
        for i in range(8):
            ids = rng.integers(0, CONFIG["vocab"], (1, CONFIG["sequence"]), dtype=np.int64)
            np.save(calib / f"ids_{i}.npy", ids)
        print(f"\n### Peak memory: BERT-base-width encoder, {args.layers} layers, "
              f"{weights_mb:.0f} MB of float32 weights\n")
        print("| mode | status | peak MB | peak / weights | convert s |")
        print("|---|---|---:|---:|---:|")
        for mode, flags in (("float", []), ("weights-only int8", ["--mode", "weights-only", "--dtype", "int8"]),
                            ("full int8", ["--mode", "full", "--dtype", "int8", "--calib", str(calib)])):
            out = folder / f"{mode.replace(' ', '_')}.tflite"
            command = [str(args.tflq), "convert", str(folder / "encoder.onnx"), "-o", str(out), "-q", *flags]
            child = run_child(command, args.timeout)
            status = "ok" if child.ok else child.first_error_line()
            print(f"| {mode} | {status} | {child.peak_rss_mb:.0f} | {child.peak_rss_mb / weights_mb:.2f} | "
                  f"{child.seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
