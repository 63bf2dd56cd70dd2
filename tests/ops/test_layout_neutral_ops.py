"""Data-movement ops on NCHW activations must convert without any TRANSPOSE (the layout pass remaps them)."""
from __future__ import annotations

import pytest

from tests.conftest import case_model, save_model
from tflq import ops as registry
from tflq.config import ConvertConfig
from tflq.pipeline import convert

KINDS = ("CONCATENATION", "STRIDED_SLICE", "SPLIT", "SPLIT_V", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH")
CASES = [(kind, case) for kind in KINDS for case in registry.spec(kind).cases]


@pytest.mark.parametrize("kind,case", CASES, ids=[f"{k}-{c.name}" for k, c in CASES])
def test_no_transpose(kind, case, tmp_path):
    path = save_model(case_model(case), tmp_path / "m.onnx")
    report = convert(ConvertConfig(model=path))
    assert report.transposes_inserted == 0
    assert "TRANSPOSE" not in report.op_counts, report.op_counts
