"""What STYLE.md section 12 asks of quantize/ and calibration/, checked on the source: they work on
the IR (the importer records what the ONNX file says), so neither imports onnx, nor does the IR
they build on (ir/: its types' ONNX spellings are the importer's)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tflq

ROOT = Path(tflq.__file__).parent
FILES = sorted(p for folder in ("quantize", "calibration", "ir") for p in (ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_no_onnx_import(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        assert not any(n == "onnx" or n.startswith("onnx.") for n in names), \
            f"{path.relative_to(ROOT.parent)} imports {names}"
