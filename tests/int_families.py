"""Small models of the integer/boolean families real exports contain, built with onnx.helper:
token-id embeddings with an attention mask through Equal/Expand/Where, comparisons feeding Where
in an NCHW CNN, Cast chains, and index arithmetic (RoBERTa's position ids: Cast, CumSum, Mod).

Each family is (builder, input sampler): `build()` gives the ONNX model, `sample(rng)` one feed
dict. Shared by tests/test_int_families.py and `python -m tests.int_families` (the table)."""
from __future__ import annotations

import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
FLOAT_MIN = float(np.finfo(np.float32).min)  # what PyTorch's masked_fill(mask, finfo.min) writes


def _model(nodes, inputs, outputs, inits, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _w(rng, *shape, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale / np.sqrt(shape[0])).astype(np.float32)


# ---- 1. token ids -> embeddings, masked self-attention ------------------------------------
SEQ, VOCAB, DIM, HEADS = 16, 50, 32, 2


def bert_embedding_mask() -> onnx.ModelProto:
    """int64 input_ids and attention_mask; word + position embeddings, LayerNorm, one attention
    head pair whose scores are masked the way HF exports do: Unsqueeze -> Equal(0) -> Expand ->
    Where(finfo.min) -> Softmax."""
    rng = np.random.default_rng(7)
    hd = DIM // HEADS
    inits = {
        "word": rng.standard_normal((VOCAB, DIM)).astype(np.float32),
        "pos": (0.1 * rng.standard_normal((1, SEQ, DIM))).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, DIM).astype(np.float32), "beta": (0.1 * rng.standard_normal(DIM)).astype(np.float32),
        "wq": _w(rng, DIM, DIM), "wk": _w(rng, DIM, DIM), "wv": _w(rng, DIM, DIM), "wo": _w(rng, DIM, DIM),
        "heads": np.array([1, SEQ, HEADS, hd], np.int64), "merged": np.array([1, SEQ, DIM], np.int64),
        "axes12": np.array([1, 2], np.int64), "zero": np.array(0, np.int64),
        "scores_shape": np.array([1, HEADS, SEQ, SEQ], np.int64),
        "scale": np.array(1 / np.sqrt(hd), np.float32), "fill": np.array(FLOAT_MIN, np.float32),
    }
    n = helper.make_node
    nodes = [
        n("Gather", ["word", "input_ids"], ["tok"]),
        n("Add", ["tok", "pos"], ["emb"]),
        n("LayerNormalization", ["emb", "gamma", "beta"], ["h"], axis=-1, epsilon=1e-5),
    ]
    for name in ("q", "k", "v"):
        nodes += [n("MatMul", ["h", f"w{name}"], [f"{name}_flat"]),
                  n("Reshape", [f"{name}_flat", "heads"], [f"{name}_split"])]
    nodes += [
        n("Transpose", ["q_split"], ["q_t"], perm=[0, 2, 1, 3]),
        n("Transpose", ["k_split"], ["k_t"], perm=[0, 2, 3, 1]),
        n("Transpose", ["v_split"], ["v_t"], perm=[0, 2, 1, 3]),
        n("MatMul", ["q_t", "k_t"], ["raw"]), n("Mul", ["raw", "scale"], ["scores"]),
        n("Unsqueeze", ["attention_mask", "axes12"], ["mask4"]),
        n("Equal", ["mask4", "zero"], ["masked"]),
        n("Expand", ["masked", "scores_shape"], ["masked_full"]),
        n("Where", ["masked_full", "fill", "scores"], ["scores_masked"]),
        n("Softmax", ["scores_masked"], ["probs"], axis=-1),
        n("MatMul", ["probs", "v_t"], ["ctx"]),
        n("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ctx_t", "merged"], ["ctx_m"]),
        n("MatMul", ["ctx_m", "wo"], ["out"]),
    ]
    ids = [helper.make_tensor_value_info(k, TensorProto.INT64, [1, SEQ]) for k in ("input_ids", "attention_mask")]
    return _model(nodes, ids, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, SEQ, DIM])],
                  inits, "bert_embedding_mask")


def bert_sample(rng) -> dict[str, np.ndarray]:
    ids = rng.integers(-VOCAB, VOCAB, (1, SEQ)).astype(np.int64)  # negative ids count from the end
    length = int(rng.integers(1, SEQ + 1))
    mask = (np.arange(SEQ) < length).astype(np.int64)[None]
    return {"input_ids": ids, "attention_mask": mask}


# ---- 2. comparisons feeding Where in an NCHW CNN ------------------------------------------
def cnn_where_masks() -> onnx.ModelProto:
    """Conv features gated by comparisons: Where(x > t, x, 0.1 x), a band And/Or/Not mask, a
    per-channel threshold (a constant the layout pass permutes), nan_to_num via IsNaN, and a
    bool output (which pixels passed)."""
    rng = np.random.default_rng(11)
    c = 8
    inits = {
        "w1": (rng.standard_normal((c, 3, 3, 3)) / np.sqrt(27)).astype(np.float32),
        "b1": (0.1 * rng.standard_normal(c)).astype(np.float32),
        "t": (0.2 * rng.standard_normal((c, 1, 1))).astype(np.float32),
        "slope": np.array(0.1, np.float32), "lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32),
        "zero": np.array(0.0, np.float32),
        "w2": (rng.standard_normal((4, c, 1, 1)) / np.sqrt(c)).astype(np.float32),
    }
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w1", "b1"], ["f"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Greater", ["f", "t"], ["above"]),
        n("Mul", ["f", "slope"], ["leak"]),
        n("Where", ["above", "f", "leak"], ["g"]),
        n("Less", ["g", "lo"], ["low"]), n("GreaterOrEqual", ["g", "hi"], ["high"]),
        n("Or", ["low", "high"], ["outside"]), n("Not", ["outside"], ["inside"]),
        n("LessOrEqual", ["g", "hi"], ["not_high"]), n("And", ["inside", "not_high"], ["band"]),
        n("Where", ["band", "zero", "g"], ["sparse"]),
        n("IsNaN", ["sparse"], ["nan"]), n("Where", ["nan", "zero", "sparse"], ["clean"]),
        n("Conv", ["clean", "w2"], ["y"], kernel_shape=[1, 1]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12]),
                   helper.make_tensor_value_info("band", TensorProto.BOOL, [1, c, 12, 12])],
                  inits, "cnn_where_masks")


def cnn_sample(rng) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)}


# ---- 3. Cast chains ------------------------------------------------------------------------
def cast_chains() -> onnx.ModelProto:
    """float -> int32 (truncation) -> float, float -> bool -> int64 -> float, an int32 input
    cast to float and scaled, a bool input as a 0/1 multiplier; int64 and float outputs."""
    n = helper.make_node
    inits = {"scale": np.array(0.5, np.float32), "three": np.array(3.0, np.float32)}
    nodes = [
        n("Mul", ["x", "three"], ["x3"]),
        n("Cast", ["x3"], ["xi"], to=TensorProto.INT32), n("Cast", ["xi"], ["xf"], to=TensorProto.FLOAT),
        n("Cast", ["x"], ["xb"], to=TensorProto.BOOL), n("Cast", ["xb"], ["xl"], to=TensorProto.INT64),
        n("Cast", ["xl"], ["xlf"], to=TensorProto.FLOAT),
        n("Cast", ["count"], ["cf"], to=TensorProto.FLOAT), n("Mul", ["cf", "scale"], ["cs"]),
        n("Cast", ["keep"], ["kf"], to=TensorProto.FLOAT),
        n("Add", ["xf", "xlf"], ["s1"]), n("Add", ["s1", "cs"], ["s2"]), n("Mul", ["s2", "kf"], ["y"]),
        n("Cast", ["xi"], ["yi"], to=TensorProto.INT64),
    ]
    shape = [2, 3, 5]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                          helper.make_tensor_value_info("count", TensorProto.INT32, shape),
                          helper.make_tensor_value_info("keep", TensorProto.BOOL, shape)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape),
                   helper.make_tensor_value_info("yi", TensorProto.INT64, shape)], inits, "cast_chains")


def cast_sample(rng) -> dict[str, np.ndarray]:
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    x[0, 0, :2] = 0.0  # exact zeros: bool false
    return {"x": x, "count": rng.integers(-20, 20, (2, 3, 5)).astype(np.int32),
            "keep": rng.random((2, 3, 5)) < 0.7}


# ---- 4. index arithmetic: RoBERTa's position ids ----------------------------------------
PAD = 1


def roberta_positions() -> onnx.ModelProto:
    """position_ids = (cumsum(ids != pad) * (ids != pad)) + pad, as HF's
    create_position_ids_from_input_ids exports (Equal, Not, Cast, CumSum, Mul, Add), then a
    position-embedding Gather added to the word embeddings; plus a hashed id (Mod, fmod 0) into
    a second table, and the int64 position ids as a second output."""
    rng = np.random.default_rng(5)
    inits = {"pad": np.array(PAD, np.int64), "axis": np.array(1, np.int64), "buckets": np.array(7, np.int64),
             "word": rng.standard_normal((VOCAB, DIM)).astype(np.float32),
             "pos_table": rng.standard_normal((SEQ + PAD + 1, DIM)).astype(np.float32),
             "hash_table": rng.standard_normal((7, DIM)).astype(np.float32)}
    n = helper.make_node
    nodes = [
        n("Equal", ["input_ids", "pad"], ["is_pad"]), n("Not", ["is_pad"], ["keep"]),
        n("Cast", ["keep"], ["keep32"], to=TensorProto.INT32),
        n("CumSum", ["keep32", "axis"], ["running"]),
        n("Mul", ["running", "keep32"], ["incremental"]),
        n("Cast", ["incremental"], ["incremental64"], to=TensorProto.INT64),
        n("Add", ["incremental64", "pad"], ["position_ids"]),
        n("Gather", ["word", "input_ids"], ["w"]), n("Gather", ["pos_table", "position_ids"], ["p"]),
        n("Mod", ["input_ids", "buckets"], ["bucket"], fmod=0), n("Gather", ["hash_table", "bucket"], ["hb"]),
        n("Add", ["w", "p"], ["wp"]), n("Add", ["wp", "hb"], ["emb"]),
    ]
    return _model(nodes, [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [2, SEQ])],
                  [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [2, SEQ, DIM]),
                   helper.make_tensor_value_info("position_ids", TensorProto.INT64, [2, SEQ])],
                  inits, "roberta_positions")


def roberta_sample(rng) -> dict[str, np.ndarray]:
    ids = rng.integers(2, VOCAB, (2, SEQ)).astype(np.int64)
    for row in range(2):
        ids[row, int(rng.integers(1, SEQ + 1)):] = PAD
    return {"input_ids": ids}


# ---- 5. gathers and scatters with run-time indices ---------------------------------------
def gather_scatter() -> onnx.ModelProto:
    """A KV-cache slot write (ScatterND at a run-time position), GatherElements picking one
    value per row by run-time indices, Tile and Expand of the picks, Where on a GreaterOrEqual."""
    n = helper.make_node
    inits = {"reps": np.array([1, 2, 1], np.int64),
             "full": np.array([2, 4, 6], np.int64), "half": np.array(0.5, np.float32)}
    nodes = [
        # indices [1, 2, 1, 3]: (batch 0, head h, slot position) for h = 0, 1
        n("ScatterND", ["cache", "slot", "new"], ["cache_out"]),
        n("GatherElements", ["scores", "pick"], ["picked"], axis=2),  # [2, 2, 1]
        n("Tile", ["picked", "reps"], ["tiled"]),                    # [2, 4, 1]
        n("Expand", ["tiled", "full"], ["spread"]),                   # [2, 4, 6]
        n("GreaterOrEqual", ["spread", "half"], ["big"]),
        n("Where", ["big", "spread", "scores"], ["mixed"]),
    ]
    f = TensorProto.FLOAT
    return _model(nodes, [helper.make_tensor_value_info("cache", f, [1, 2, 6, 4]),
                          helper.make_tensor_value_info("new", f, [1, 2, 1, 4]),
                          helper.make_tensor_value_info("slot", TensorProto.INT64, [1, 2, 1, 3]),
                          helper.make_tensor_value_info("scores", f, [2, 4, 6]),
                          helper.make_tensor_value_info("pick", TensorProto.INT64, [2, 2, 1])],
                  [helper.make_tensor_value_info("cache_out", f, [1, 2, 6, 4]),
                   helper.make_tensor_value_info("mixed", f, [2, 4, 6])], inits, "gather_scatter")


def gather_scatter_sample(rng) -> dict[str, np.ndarray]:
    position = int(rng.integers(-6, 6))  # negative positions count from the end
    slot = np.array([[[[0, 0, position]], [[0, 1, position]]]], np.int64)
    return {"cache": rng.standard_normal((1, 2, 6, 4)).astype(np.float32),
            "new": rng.standard_normal((1, 2, 1, 4)).astype(np.float32), "slot": slot,
            "scores": rng.standard_normal((2, 4, 6)).astype(np.float32),
            "pick": rng.integers(-6, 6, (2, 2, 1)).astype(np.int64)}


FAMILIES = {
    "bert_embedding_mask": (bert_embedding_mask, bert_sample),
    "cnn_where_masks": (cnn_where_masks, cnn_sample),
    "cast_chains": (cast_chains, cast_sample),
    "roberta_positions": (roberta_positions, roberta_sample),
    "gather_scatter": (gather_scatter, gather_scatter_sample),
}


def measure(name: str, directory: str, samples: int = 8) -> dict:
    """Float worst-sample SQNR vs onnxruntime (integer outputs: exact or not), full int8 SQNR
    (worst sample), TRANSPOSE count, conversion time; the int8 and weights-only files are run."""
    from tests.conftest import run_litert, run_onnxruntime
    from tflq.config import ConvertConfig
    from tflq.ir.quant import sqnr_db
    from tflq.pipeline import convert

    build, sample = FAMILIES[name]
    path = f"{directory}/{name}.onnx"
    onnx.save(build(), path)
    rng = np.random.default_rng(2026)
    feeds = [sample(rng) for _ in range(samples)]
    calib = [sample(rng) for _ in range(16)]
    start = time.perf_counter()
    float_report = convert(ConvertConfig(model=path))
    seconds = time.perf_counter() - start
    result = {"name": name, "seconds": seconds, "transposes": float_report.op_counts.get("TRANSPOSE", 0),
              "float_db": float("inf"), "int8_db": float("inf"), "integers_exact": True,
              "io": list(float_report.io)}
    reports = {"float": float_report,
               "weights_int8": convert(ConvertConfig(model=path, mode="weights-only", dtype="int8",
                                                     min_weight_elements=64)),
               "full_int8": convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib))}
    for feed in feeds:
        expected = run_onnxruntime(path, feed)
        for mode, report in reports.items():
            actual = run_litert(report.tflite, list(feed.values()))
            for e, a in zip(expected, actual):
                assert e.shape == a.shape, (mode, e.shape, a.shape)
                if e.dtype.kind in "iub":
                    if mode == "float":
                        result["integers_exact"] &= bool(a.dtype == e.dtype and np.array_equal(e, a))
                    continue
                db = sqnr_db(e, a)
                key = {"float": "float_db", "full_int8": "int8_db"}.get(mode)
                if key:
                    result[key] = min(result[key], db)
    result["int8_float_ops"] = sorted({f.kind for f in reports["full_int8"].float_ops})
    return result


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        print("| family | float worst-sample SQNR | integer outputs | full int8 SQNR (worst) | "
              "TRANSPOSE | conversion |")
        print("|---|---|---|---|---|---|")
        for name in FAMILIES:
            r = measure(name, directory)
            print(f"| {name} | {r['float_db']:.1f} dB | {'exact' if r['integers_exact'] else 'WRONG'} | "
                  f"{r['int8_db']:.1f} dB | {r['transposes']} | {r['seconds']:.2f} s |")


if __name__ == "__main__":
    main()
