"""Attention masks as transformers' older causal LMs and ModernBERT write them, over two layers:

- gpt_neo: Where(causal, scores, finfo.min) + Where(keep, 0, finfo.min), the padding mask shared
  by both layers and the one finfo.min scalar by all three selects. The masked sum is -inf in
  float32 (finfo.min + finfo.min), which stopped calibration ("holds Inf values"); with finite
  fills it kept both selects, the sum and the softmax float (no grid holds the fill next to the
  scores). masks.finite_mask_fills halves the fill, masks.mask_fills_apart makes the sum scores +
  (Where(causal, 0, fill) + padding mask).
- modernbert: a global padding mask and a sliding-window one, Where(keep, 0, finfo.min) and
  Where(keep & window, 0, finfo.min), reading the same 0 and finfo.min constants: shared, they
  kept the masks float.
- torch_encoder: nn.TransformerEncoder's key padding mask as TorchScript writes it, Where(padding,
  -inf, 0) made once and reshaped and broadcast by each layer: shared, it stayed float.
- with -1e9 or -1e4 for the fill: no overflow, but the gpt_neo sum's grid spanned twice the
  fill (2.7 dB, every op integer) and the shared constants left the modernbert masks a computed
  grid narrowed by at most 2^12 (4.9 dB).

Judged against onnxruntime's float output on the worst of 8 held-out samples (each keeping its
first position); in full uint8 and int8 the masks, sums, selects and softmax run integer."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import relative_error, run_litert, run_onnxruntime, save_model, worst_sqnr_db
from tflq.config import ConvertConfig
from tflq.pipeline import convert

T, D = 8, 16
LOWEST = float(np.finfo(np.float32).min)
# measured worst of 8 (any fill): gpt_neo uint8 17.7 int8 17.8 (with the masks, their sums and the
# softmax kept float: 17.9), modernbert 23.1 / 22.5, torch_encoder 19.7 / 20.8
FLOORS = {"gpt_neo": 15.0, "modernbert": 20.0, "torch_encoder": 17.0}


def _model(form: str, fill: float) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(op, inputs, out, **attrs):
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    const("fill", fill)
    const("zero", 0.0)
    keep = node("Unsqueeze", [node("Cast", ["attention_mask"], "keep_bool", to=TensorProto.BOOL),
                              const("axes", [1, 2], np.int64)], "keep")
    causal = const("causal", np.tril(np.ones((1, 1, T, T), bool)), np.bool_)
    padding = node("Where", [keep, "zero", "fill"], "padding")
    window = const("window", (np.abs(np.subtract.outer(np.arange(T), np.arange(T))) <= 2)[None, None], np.bool_)
    local = node("Where", [node("And", [keep, window], "keep_local"), "zero", "fill"], "local")
    x = "x"
    for layer in range(2):
        def w(label):
            return const(f"w{label}{layer}", rng.standard_normal((D, D)) / np.sqrt(D))
        q = node("MatMul", [x, w("q")], f"q{layer}")
        k = node("Transpose", [node("MatMul", [x, w("k")], f"k{layer}")], f"kt{layer}", perm=[0, 2, 1])
        v = node("MatMul", [x, w("v")], f"v{layer}")
        s = node("Unsqueeze", [node("MatMul", [q, k], f"s{layer}"), const(f"head{layer}", [1], np.int64)],
                 f"scores{layer}")
        if form == "torch_encoder":  # each layer reshapes and broadcasts the one padding mask
            moved = node("Reshape", [padding, const(f"mask_shape{layer}", [1, 1, 1, T], np.int64)], f"mask{layer}")
            moved = node("Expand", [moved, const(f"wide_shape{layer}", [1, 1, T, T], np.int64)], f"mask_wide{layer}")
            s = node("Add", [s, moved], f"masked{layer}")
        elif form == "gpt_neo":
            s = node("Add", [node("Where", [causal, s, "fill"], f"causal_fill{layer}"), padding], f"masked{layer}")
        else:
            s = node("Add", [s, local if layer % 2 else padding], f"masked{layer}")
        p = node("Squeeze", [node("Softmax", [s], f"p{layer}", axis=-1), f"head{layer}"], f"p{layer}_3d")
        x = node("Add", [x, node("MatMul", [p, v], f"o{layer}")], f"x{layer + 1}")
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(nodes, form, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, D]),
                                            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, T])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _samples(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        mask = np.zeros((1, T), np.int64)
        mask[:, :int(rng.integers(1, T + 1))] = 1
        out.append({"x": rng.standard_normal((1, T, D)).astype(np.float32), "attention_mask": mask})
    return out


@pytest.mark.parametrize("form, fill", [("gpt_neo", LOWEST), ("modernbert", LOWEST), ("gpt_neo", -1e9),
                                        ("modernbert", -1e9), ("gpt_neo", -1e4), ("torch_encoder", -np.inf)])
def test_shared_masks_run_integer(form, fill, tmp_path):
    path = save_model(_model(form, fill), tmp_path / f"{form}.onnx")
    held = _samples(1, 8)
    report = convert(ConvertConfig(model=path))
    assert max(relative_error(run_onnxruntime(path, s)[0], run_litert(report.tflite, list(s.values()))[0])
               for s in held) < 1e-5
    for dtype in ("uint8", "int8"):
        report = convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=_samples(2, 16)))
        kept = [(op.kind, op.reason) for op in report.float_ops if op.kind in ("ADD", "SELECT_V2", "SOFTMAX")]
        assert not kept, kept
        worst = worst_sqnr_db(path, report.tflite, held)
        assert worst >= FLOORS[form], f"{form} {fill:g} {dtype}: worst {worst:.1f} dB"


def test_masked_sums_kept_float(tmp_path):
    """--float-ops on the masked sums and softmax: what only they make and read is not calibrated,
    and the plan asked for its range ("no calibration statistics for tensor 'masked0/masks'")."""
    path = save_model(_model("gpt_neo", LOWEST), tmp_path / "gpt_neo.onnx")
    names = ("causal_fill0", "masked0", "p0", "causal_fill1", "masked1", "p1")
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=_samples(2, 16), float_ops=names))
    assert {op.kind for op in report.float_ops} == {"ADD", "SELECT_V2", "SOFTMAX"}
    # (and the padding mask they read: finfo.min on no grid a float reader narrows)
    assert {op.origin for op in report.float_ops} <= set(names) | {"padding"}
    assert worst_sqnr_db(path, report.tflite, _samples(1, 8)) >= FLOORS["gpt_neo"]
