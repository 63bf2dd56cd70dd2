"""--target litert|xnnpack|tflm, judged by the runtimes themselves.

- tflm: every full-int8 file tflq writes for the registry's quantizable cases and the sample model
  runs in TFLite Micro with LiteRT's reference kernels' outputs (within one quantization step:
  both round the same integer arithmetic); a case with an op TFLM cannot run is an error naming
  the node, and `tflq check` finds nothing in the files written.
- xnnpack: every int8 file loads with XNNPACK (none refused), and the ops left to LiteRT's
  builtin kernels are exactly those the profile predicts (`tflq check` notes): where it predicts
  none, the whole file is one XNNPACK partition.
- litert: `tflq check` finds no violation in tflq's own int8 and uint8 files.
"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from tests.conftest import case_model, save_graph, save_model
from tests.delegation import xnnpack_delegation
from tests.ops.test_quantized_ops import STEPS, _check_accuracy, _perturbed, _quantizable_cases
from tests.test_tflite_micro import OPTIMIZED, REFERENCE, SAMPLE, SAMPLE_CALIB, SAMPLE_EVAL, \
    assert_micro_matches_litert
from tflq.backend.tflite_reader import read_tflite
from tflq.checker import NOTE, VIOLATION, check_model
from tflq.cli import main
from tflq.config import ConvertConfig
from tflq.errors import InvalidConfigError, UnsupportedModelError
from tflq.pipeline import convert
from tflq.targets import TARGETS, get_target

CASES = list(_quantizable_cases())
IDS = [f"{spec.kind}-{case.name}" for spec, case in CASES]
# LiteRT's reference resolver has no ELU, only version 1 of DEPTH_TO_SPACE, and a wrong int8 SUM
# (see test_tflite_micro.py): files with those are compared with its optimized kernels.
NOT_IN_REFERENCE = {"ELU", "DEPTH_TO_SPACE", "SUM"}


def _convert(spec, case, tmp_path, target: str, dtype: str = "int8"):
    path = save_model(case_model(case), tmp_path / "m.onnx")
    calib = _perturbed(case.calib_inputs or case.inputs)
    return convert(ConvertConfig(model=path, mode="full", dtype=dtype, calib=calib, target=target,
                                 **case.options))


def _violations(tflite: bytes, target: str) -> list[str]:
    return [str(f) for f in check_model(read_tflite(tflite), get_target(target)) if f.severity == VIOLATION]


@pytest.mark.parametrize("spec,case", CASES, ids=IDS)
def test_tflm_file_runs_in_micro_or_the_node_is_named(spec, case, tmp_path):
    try:
        report = _convert(spec, case, tmp_path, "tflm")
    except UnsupportedModelError as exc:
        nodes = {op.origin for op in _graph_ops(case, tmp_path)}
        assert exc.diagnostics and all(d.node in nodes for d in exc.diagnostics), exc.diagnostics
        return
    assert report.float_ops == []
    assert _violations(report.tflite, "tflm") == []
    resolver = OPTIMIZED if set(report.op_counts) & NOT_IN_REFERENCE else REFERENCE
    samples = [list(s.values()) for s in _perturbed(case.inputs, 2)]
    assert_micro_matches_litert(report.tflite, samples, resolver)


def _graph_ops(case, tmp_path):
    from tflq.pipeline import prepare_graph

    graph, _ = prepare_graph(ConvertConfig(model=str(tmp_path / "m.onnx"), **case.options))
    return graph.ops


def test_tflm_sample_model_runs_in_micro():
    images = np.load(SAMPLE_EVAL)["input"]
    report = tflq_convert_sample("tflm")
    assert _violations(report.tflite, "tflm") == []
    assert_micro_matches_litert(report.tflite, [[images[i:i + 1]] for i in range(0, 240, 15)])


def tflq_convert_sample(target: str):
    return convert(ConvertConfig(model=SAMPLE, mode="full", dtype="int8", calib=SAMPLE_CALIB,
                                 io_type="int8", target=target))


def _gelu_model(path) -> str:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first_relu"),
             helper.make_node("Gelu", ["r"], ["y"], name="my_gelu")]
    return save_graph(path, nodes, {"x": [1, 8]}, "y", opset=20)


def test_an_op_tflm_lacks_is_an_error_naming_the_node(tmp_path):
    path = _gelu_model(tmp_path / "gelu.onnx")
    out = tmp_path / "gelu.tflite"
    calib = [{"x": np.random.default_rng(s).standard_normal((1, 8)).astype(np.float32)} for s in range(4)]
    with pytest.raises(UnsupportedModelError) as caught:
        convert(ConvertConfig(model=path, output=str(out), mode="full", dtype="int8", calib=calib,
                              target="tflm"))
    assert [(d.node, d.op_type) for d in caught.value.diagnostics] == [("my_gelu", "GELU")]
    assert not out.exists()
    with pytest.raises(UnsupportedModelError) as caught:  # float: TFLM has no GELU kernel at all
        convert(ConvertConfig(model=path, target="tflm"))
    assert [(d.node, d.reason_code) for d in caught.value.diagnostics] == [("my_gelu", "missing_kernel")]
    # litert: GELU runs int8
    assert "GELU" in convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib)).op_counts


@pytest.mark.parametrize("spec,case", CASES, ids=IDS)
def test_xnnpack_delegates_what_the_profile_says(spec, case, tmp_path):
    report = _convert(spec, case, tmp_path, "xnnpack")
    findings = check_model(read_tflite(report.tflite), get_target("xnnpack"))
    assert [str(f) for f in findings if f.severity == VIOLATION] == []
    predicted = sorted(f.kind for f in findings if f.severity == NOTE)
    delegation = xnnpack_delegation(report.tflite)  # loading with XNNPACK must not fail
    assert sorted(delegation.undelegated) == predicted
    if not predicted:
        assert delegation.partitions == 1
    # the adjusted parameters keep the accuracy the registry test demands (an output a float op
    # makes, when the op stayed float for XNNPACK, has no output step to judge by)
    info = read_tflite(report.tflite)
    producers = {o: op.kind for op in info.ops for o in op.outputs}
    if all(info.tensors[i].scale or producers.get(i) in ("DEQUANTIZE", None) or
           info.tensors[i].dtype in ("bool", "int32", "int64") for i in info.outputs):
        _check_accuracy(case_model(case), case, report.tflite, info, STEPS[type(spec.quant)])


@pytest.mark.parametrize("spec,case", CASES[::2], ids=IDS[::2])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_litert_files_have_no_violations(spec, case, dtype, tmp_path):
    report = _convert(spec, case, tmp_path, "litert", dtype)
    assert _violations(report.tflite, "litert") == []


def _layer_norm(path) -> str:
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.uniform(0.5, 2, 16).astype(np.float32), "g"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, name="ln")]
    return save_graph(path, nodes, {"x": [2, 5, 16]}, "y", inits)


def test_xnnpack_limits_are_met_by_adjusting_parameters(tmp_path):
    """LayerNorm's epsilon, a constant far finer than the ADD's output grid: on its own grid the
    input/output scale ratio is below XNNPACK's 2^-10 and the ADD falls back to LiteRT; the
    xnnpack target puts it on a coarser grid (a note says so) and XNNPACK takes the whole file."""
    path = _layer_norm(tmp_path / "ln.onnx")
    calib = [{"x": np.random.default_rng(s).standard_normal((2, 5, 16)).astype(np.float32)} for s in range(8)]
    plain = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib))
    assert "ADD" in xnnpack_delegation(plain.tflite).undelegated
    fitted = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib, target="xnnpack"))
    assert any("XNNPACK: ADD of node 'ln': constant" in n and "requantized" in n for n in fitted.notes), \
        fitted.notes
    assert xnnpack_delegation(fitted.tflite).undelegated == []


def _cancelling_add(path, k: float = -0.999) -> str:
    """a + (-0.999 a): the output's range is a thousandth of the inputs', so the ratio of input to
    output scale (1000) is above XNNPACK's 256."""
    nodes = [helper.make_node("Mul", ["a", "k"], ["b"]), helper.make_node("Add", ["a", "b"], ["y"], name="sum")]
    return save_graph(path, nodes, {"a": [1, 64]}, "y", [numpy_helper.from_array(np.array(k, np.float32), "k")])


def test_xnnpack_output_scale_raised_into_the_add_limit(tmp_path):
    path = _cancelling_add(tmp_path / "c.onnx")
    calib = [{"a": np.random.default_rng(s).uniform(-4, 4, (1, 64)).astype(np.float32)} for s in range(8)]
    plain = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib))
    assert "ADD" in xnnpack_delegation(plain.tflite).undelegated
    fitted = convert(ConvertConfig(model=path, mode="full", dtype="int8", calib=calib, target="xnnpack"))
    assert any("ADD of node 'sum': output 'y" in n and "scale raised" in n for n in fitted.notes), fitted.notes
    assert xnnpack_delegation(fitted.tflite).undelegated == []


def test_unknown_target_is_a_usage_error_listing_the_known_ones(tmp_path):
    result = CliRunner().invoke(main, ["convert", SAMPLE, "-o", str(tmp_path / "x.tflite"),
                                       "--target", "edgetpu"])
    assert result.exit_code == 2
    assert all(name in result.output for name in TARGETS)
    with pytest.raises(InvalidConfigError, match="litert, xnnpack, tflm"):
        ConvertConfig(model=SAMPLE, target="edgetpu")
    assert "compiler is not available" in CliRunner().invoke(main, ["convert", "--help"]).output


def test_tflm_refuses_types_it_has_no_kernels_for(tmp_path):
    for options in ({"mode": "full", "dtype": "uint8", "calib": SAMPLE_CALIB}, {"mode": "float16"}):
        with pytest.raises(InvalidConfigError, match="tflm"):
            convert(ConvertConfig(model=SAMPLE, target="tflm", **options))
    with pytest.raises(UnsupportedModelError) as caught:  # weights-only: TFLM has no hybrid kernels
        convert(ConvertConfig(model=SAMPLE, target="tflm", mode="weights-only", dtype="int8",
                              min_weight_elements=16))
    assert {d.reason_code for d in caught.value.diagnostics} == {"hybrid"}


def test_litert_add_never_aborts_the_loading_process(tmp_path):
    """a + (-0.9999999 a): the output grid is 10^7 times finer than the inputs'. LiteRT's int8 ADD
    aborts the process (TFLITE_CHECK in QuantizeMultiplierSmallerThanOneExp) at a ratio of 2^19;
    the output scale is kept above it (the ADD spec's min_output_scale), `tflq check` agrees, and
    the file loads and runs (in a child process, so that an abort fails this test only)."""
    import subprocess
    import sys

    path = _cancelling_add(tmp_path / "c.onnx", k=-0.9999999)
    calib = [{"a": np.random.default_rng(s).uniform(-4, 4, (1, 64)).astype(np.float32)} for s in range(8)]
    report = convert(ConvertConfig(model=path, output=str(tmp_path / "c.tflite"), mode="full",
                                   dtype="int8", calib=calib))
    assert _violations(report.tflite, "litert") == []
    code = ("import sys, numpy as np; from ai_edge_litert.interpreter import Interpreter as I, OpResolverType as R;"
            "i = I(model_path=sys.argv[1], experimental_op_resolver_type=R.BUILTIN_REF); i.allocate_tensors();"
            "i.set_tensor(i.get_input_details()[0]['index'], np.ones((1, 64), np.float32)); i.invoke()")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.tflite")], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-500:]
