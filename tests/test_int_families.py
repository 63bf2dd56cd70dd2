"""Integer/boolean model families (tests/int_families.py): float files match onnxruntime at
>= 80 dB SQNR on the worst of 8 random inputs with integer/boolean outputs exact; weights-only
int8 and full int8 files load and run in LiteRT (their outputs checked for shape), and the full
int8 worst-sample SQNR is recorded (`python -m tests.int_families` prints the table)."""
from __future__ import annotations

import numpy as np
import pytest

from tests import int_families
from tests.conftest import importorskip
from tflq.backend.tflite_reader import read_tflite
from tflq.config import ConvertConfig
from tflq.pipeline import convert

FLOAT_FLOOR_DB = 80.0
# Full int8 must not collapse (bert_embedding_mask was 1.4 dB while its finfo.min mask was int8).
INT8_FLOOR_DB = 15.0
# bert: the model's own Transposes (attention heads split and merged). gather_scatter: its 4-D
# KV cache enters and leaves in NHWC, TFLite's default I/O layout, while SCATTER_ND needs the
# ONNX axis order: 4 edge transposes, 0 with --keep-io-layout (test below).
MODEL_TRANSPOSES = {"bert_embedding_mask": 4, "cnn_where_masks": 0, "cast_chains": 0,
                    "roberta_positions": 0, "gather_scatter": 4}


@pytest.mark.parametrize("name", list(int_families.FAMILIES))
def test_family_float_exact_and_int8_runs(name, tmp_path, record_property):
    importorskip("ai_edge_litert.interpreter")
    result = int_families.measure(name, str(tmp_path))
    record_property("full_int8_sqnr_db", result["int8_db"])
    print(f"{name}: float {result['float_db']:.1f} dB, full int8 {result['int8_db']:.1f} dB")
    assert result["float_db"] >= FLOAT_FLOOR_DB
    assert result["integers_exact"]
    assert result["int8_db"] >= INT8_FLOOR_DB
    assert result["transposes"] == MODEL_TRANSPOSES[name]


def test_int64_ids_stay_int64_and_the_summary_says_so(tmp_path):
    path = str(tmp_path / "bert.onnx")
    import onnx

    onnx.save(int_families.bert_embedding_mask(), path)
    report = convert(ConvertConfig(model=path))
    assert "input 'input_ids': int64 [1, 16]" in report.to_text()
    assert "input 'attention_mask': int64 [1, 16]" in report.to_text()
    info = read_tflite(report.tflite)
    assert [info.tensors[i].dtype for i in info.inputs] == ["int64", "int64"]
    kinds = info.op_kinds()
    for kind in ("GATHER", "FLOOR_MOD", "EQUAL", "BROADCAST_TO", "SELECT_V2"):
        assert kind in kinds, kinds


def test_full_int8_keeps_integer_tensors_and_quantizes_the_select(tmp_path):
    path = str(tmp_path / "cnn.onnx")
    import onnx

    onnx.save(int_families.cnn_where_masks(), path)
    rng = np.random.default_rng(0)
    report = convert(ConvertConfig(model=path, mode="full", dtype="int8",
                                   calib=[int_families.cnn_sample(rng) for _ in range(8)]))
    info = read_tflite(report.tflite)
    for op in info.ops:
        if op.kind == "SELECT_V2":
            assert info.tensors[op.inputs[0]].dtype == "bool"
            assert info.tensors[op.outputs[0]].dtype == "int8"
        if op.kind in ("LOGICAL_AND", "LOGICAL_OR", "LOGICAL_NOT"):
            assert all(info.tensors[i].dtype == "bool" for i in op.inputs + op.outputs)
    assert info.tensors[info.outputs[1]].dtype == "bool"
    assert {f.kind for f in report.float_ops} <= {"GREATER", "LESS", "GREATER_EQUAL", "LESS_EQUAL",
                                                  "NOT_EQUAL"}


def test_kv_cache_scatter_needs_no_transpose_with_onnx_io_layout(tmp_path):
    import onnx

    path = str(tmp_path / "gs.onnx")
    onnx.save(int_families.gather_scatter(), path)
    report = convert(ConvertConfig(model=path, keep_io_layout=True))
    assert "TRANSPOSE" not in report.op_counts
    from tests.conftest import relative_error, run_litert, run_onnxruntime

    feed = int_families.gather_scatter_sample(np.random.default_rng(3))
    for e, a in zip(run_onnxruntime(path, feed), run_litert(report.tflite, list(feed.values()), nchw_io=False)):
        assert relative_error(e, a) <= 1e-6


def _one_node_model(tmp_path, nodes, inputs, outputs, inits=None) -> str:
    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph(nodes, "m", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    return path


def test_data_dependent_range_is_refused_naming_the_node(tmp_path):
    from onnx import TensorProto, helper

    from tflq.errors import UnsupportedModelError

    path = _one_node_model(tmp_path, [helper.make_node("Range", ["s", "n", "d"], ["y"], name="positions")],
                           [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
                           [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
                           {"s": np.array(0, np.int64), "d": np.array(1, np.int64)})
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    [diagnostic] = [d for d in info.value.diagnostics if d.node == "positions"]
    assert diagnostic.reason_code == "data_dependent_shape" and "'n'" in diagnostic.message


def test_plain_8bit_arithmetic_is_refused(tmp_path):
    from onnx import TensorProto, helper

    from tflq.errors import UnsupportedModelError

    path = _one_node_model(tmp_path, [helper.make_node("Cast", ["x"], ["b"], to=TensorProto.UINT8),
                                      helper.make_node("Add", ["b", "b"], ["y"], name="add_bytes")],
                           [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                           [helper.make_tensor_value_info("y", TensorProto.UINT8, [4])])
    with pytest.raises(UnsupportedModelError) as info:
        convert(ConvertConfig(model=path))
    assert [d.reason_code for d in info.value.diagnostics] == ["plain_8bit_arithmetic"]
    assert info.value.diagnostics[0].node == "add_bytes"
