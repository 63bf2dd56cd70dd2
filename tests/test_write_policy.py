"""The one write policy: no output may be, or alias, an input or another output; writes are atomic
and keep an existing file's permission bits; a missing folder is refused before any work."""
from __future__ import annotations

import hashlib
import os
import stat

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import tflq
from tflq.cli import main
from tflq.errors import OutputError


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A small model with external data, a calibration folder, and a statistics file."""
    root = tmp_path_factory.mktemp("policy")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model_path = root / "m.onnx"
    onnx.save(model, str(model_path), save_as_external_data=True, location="m.data", size_threshold=0)
    calib = root / "calib"
    calib.mkdir()
    for k in range(2):
        np.save(calib / f"s{k}.npy", rng.normal(size=(1, 3, 6, 6)).astype(np.float32))
    stats = root / "stats.npz"
    tflq.convert(str(model_path), None, mode="full", calib=str(calib), save_stats=str(stats))
    return root


def _inputs(root):
    return {"model": root / "m.onnx", "external data": root / "m.data", "calib file": root / "calib" / "s0.npy",
            "calib folder": root / "calib", "stats": root / "stats.npz"}


def _digest(root) -> str:
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                h.update(path.encode())
                h.update(open(path, "rb").read())
    return h.hexdigest()


def _alias(root, target, kind: str, tag: str) -> str:
    """A path naming `target`: itself, another spelling, a symlink, or a hard link."""
    if kind == "same":
        return str(target)
    if kind == "spelling":
        return os.path.join(str(root), "calib", "..", os.path.relpath(target, root))
    link = root / f"alias_{tag}"
    if os.path.lexists(link):
        os.unlink(link)
    if kind == "symlink":
        os.symlink(target, link)
    else:
        if os.path.isdir(target):
            return str(target)
        os.link(target, link)
    return str(link)


WRITE_OPTIONS = ("output", "save_stats", "report")
INPUT_KINDS = ("model", "external data", "calib file", "calib folder", "stats")


def _convert(root, **outputs):
    options = dict(mode="full", calib=str(root / "calib"), stats=(str(root / "stats.npz"),))
    options.update(outputs)
    output = options.pop("output", str(root / "out.tflite"))
    return tflq.convert(str(root / "m.onnx"), output, **options)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(WRITE_OPTIONS), which=st.sampled_from(INPUT_KINDS),
       kind=st.sampled_from(["same", "spelling", "symlink", "hardlink"]))
def test_every_write_option_refuses_every_input(workspace, option, which, kind):
    target = _inputs(workspace)[which]
    path = _alias(workspace, target, kind, option)
    before = _digest(workspace)
    with pytest.raises(OutputError):
        _convert(workspace, **{option: path})
    assert _digest(workspace) == before
    assert not (workspace / "out.tflite").exists()


@pytest.mark.parametrize("first,second", [("output", "report"), ("output", "save_stats"),
                                          ("report", "save_stats")])
def test_two_outputs_may_not_name_one_file(workspace, tmp_path, first, second):
    path = str(tmp_path / "same")
    with pytest.raises(OutputError, match="same file"):
        _convert(workspace, **{first: path, second: path})
    os.symlink(tmp_path / "target", tmp_path / "link")
    with pytest.raises(OutputError, match="same file"):
        _convert(workspace, **{first: str(tmp_path / "target"), second: str(tmp_path / "link")})
    assert os.listdir(tmp_path) == ["link"]


def test_new_file_inside_the_calibration_folder_is_refused(workspace):
    for option in WRITE_OPTIONS:
        with pytest.raises(OutputError, match="inside calibration data"):
            _convert(workspace, **{option: str(workspace / "calib" / "new.bin")})
    assert sorted(os.listdir(workspace / "calib")) == ["s0.npy", "s1.npy"]


def test_cli_report_onto_the_model_and_report_onto_output(workspace, tmp_path):
    before = _digest(workspace)
    model = workspace / "m.onnx"
    result = _run("convert", model, "-o", tmp_path / "x.tflite", "--report", model)
    assert result.exit_code == 1 and "--report would overwrite the input model" in result.output
    same = _run("convert", model, "-o", tmp_path / "x.tflite", "--report", tmp_path / "x.tflite")
    assert same.exit_code == 1 and "same file" in same.output
    assert _digest(workspace) == before and not os.listdir(tmp_path)


def test_missing_report_folder_is_refused_before_any_work(workspace, tmp_path, monkeypatch):
    import tflq.pipeline

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded the model before checking the outputs")

    monkeypatch.setattr(tflq.pipeline, "load_onnx", must_not_load)
    result = _run("convert", workspace / "m.onnx", "-o", tmp_path / "x.tflite",
                  "--report", tmp_path / "missing" / "r.json")
    assert result.exit_code == 1 and "missing" in result.output and "does not exist" in result.output
    assert "Traceback" not in result.output and not os.listdir(tmp_path)


def test_empty_output_path_is_refused(workspace):
    result = _run("convert", workspace / "m.onnx", "-o", "")
    assert result.exit_code == 1 and "empty" in result.output


def test_report_is_written_atomically_next_to_the_output(workspace, tmp_path):
    out, report = tmp_path / "x.tflite", tmp_path / "r.json"
    result = _run("convert", workspace / "m.onnx", "-o", out, "--report", report, "-q")
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[4:8] == b"TFL3" and b'"mode": "float"' in report.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["r.json", "x.tflite"]


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755])
def test_existing_output_keeps_its_permission_bits(workspace, tmp_path, mode):
    out = tmp_path / "x.tflite"
    out.write_bytes(b"old")
    os.chmod(out, mode)
    assert _run("convert", workspace / "m.onnx", "-o", out, "-q").exit_code == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == mode and out.read_bytes()[4:8] == b"TFL3"


def test_new_output_follows_the_umask(workspace, tmp_path):
    old = os.umask(0o027)
    try:
        assert _run("convert", workspace / "m.onnx", "-o", tmp_path / "x.tflite", "-q").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "x.tflite").st_mode) == 0o640


def test_a_fifo_output_is_written_into_not_replaced(workspace, tmp_path):
    """-o onto a device, FIFO or pipe (/dev/null, >(gzip > f)): the temporary file was renamed
    onto it, replacing the node itself (as root, /dev/null became a regular file)."""
    import threading

    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo, "rb").read()), daemon=True)
    reader.start()
    result = _run("convert", workspace / "m.onnx", "-o", fifo, "-q")
    reader.join(timeout=20)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced by a file"
    assert received and received[0][4:8] == b"TFL3"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tflq-")]

