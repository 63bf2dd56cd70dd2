"""Registry-driven op tests: every case of every op spec, converted and compared with onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import case_model, relative_error, run_litert, run_onnxruntime, save_model
from tflq import ops as registry
from tflq.config import ConvertConfig
from tflq.pipeline import convert, prepare_graph
from tflq.runtime.interpreter import run_graph

CASES = [(spec.kind, case) for spec in registry.all_specs() for case in spec.cases]
IDS = [f"{kind}-{case.name}" for kind, case in CASES]
FLOAT_TOLERANCE = 1e-4  # reference kernels vs onnxruntime: float arithmetic only


def test_every_spec_has_a_case():
    missing = [spec.kind for spec in registry.all_specs() if not spec.cases]
    assert not missing, f"op specs without test cases: {missing}"


def _nhwc(value: np.ndarray) -> np.ndarray:
    return value.transpose(0, 2, 3, 1) if value.ndim == 4 else value


@pytest.mark.parametrize("kind,case", CASES, ids=IDS)
def test_litert_matches_onnxruntime(kind, case, tmp_path):
    """Each case converted (float unless the case asks otherwise), run in LiteRT, vs onnxruntime."""
    model = case_model(case)
    path = save_model(model, tmp_path / "m.onnx")
    expected = run_onnxruntime(model, case.inputs)
    report = convert(ConvertConfig(model=path, output=str(tmp_path / "m.tflite"), **case.options))
    for emitted in (kind,) if case.emits is None else case.emits:
        assert emitted in report.op_counts, f"{emitted} not emitted: {report.op_counts}"
    actual = run_litert(report.tflite, list(case.inputs.values()))
    for e, a in zip(expected, actual):
        assert e.shape == a.shape
        assert relative_error(e, a) <= case.tolerance


@pytest.mark.parametrize("kind,case", CASES, ids=IDS)
def test_reference_kernels_match_onnxruntime(kind, case, tmp_path):
    """The numpy kernels calibration runs on agree with onnxruntime on the NHWC graph."""
    model = case_model(case)
    path = save_model(model, tmp_path / "m.onnx")
    expected = run_onnxruntime(model, case.inputs)
    graph, _ = prepare_graph(ConvertConfig(model=path, **case.options))
    outputs = run_graph(graph, {n: _nhwc(v) for n, v in case.inputs.items()})
    for e, name in zip(expected, graph.outputs):
        assert relative_error(_nhwc(e), outputs[name]) <= FLOAT_TOLERANCE
