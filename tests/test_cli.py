"""The command line as a user meets it: exit codes, one-line errors, no partial files."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper

from tflq.cli import main

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "sample_models", "digits_cnn.onnx")


def _run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _two_unsupported(path) -> str:
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok_relu"),
             helper.make_node("Bernoulli", ["a"], ["b"], name="bad_one"),
             helper.make_node("Relu", ["b"], ["c"], name="ok_relu2"),
             helper.make_node("Det", ["c"], ["y"], name="bad_two")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [4, 4])],
                              [helper.make_tensor_value_info("y", 1, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def test_help_lists_every_command():
    result = _run("--help")
    assert result.exit_code == 0
    for command in ("convert", "inspect", "ops"):
        assert command in result.output
    assert "Exit codes" in _run("convert", "--help").output


def test_help_has_no_placeholder_text():
    """Every command's --help reads as written: no range with a missing bound ("[x<=None]",
    as click describes a number option with neither bound) or other None left in the text."""
    for command in main.commands:
        output = _run(command, "--help").output
        assert "None" not in output, (command, output)


def test_convert_and_inspect(tmp_path):
    out = tmp_path / "digits.tflite"
    result = _run("convert", SAMPLE, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.exists() and out.read_bytes()[4:8] == b"TFL3"
    info = json.loads(_run("inspect", str(out), "--json").output)
    assert "CONV_2D" in [op["kind"] for op in info["ops"]]
    assert info["signatures"] == ["serving_default"]


def test_two_unsupported_ops_are_both_named_and_no_file_is_left(tmp_path):
    out = tmp_path / "bad.tflite"
    result = _run("convert", _two_unsupported(tmp_path / "bad.onnx"), "-o", str(out))
    assert result.exit_code == 1
    assert "bad_one" in result.output and "Bernoulli" in result.output
    assert "bad_two" in result.output and "Det" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_failed_conversion_keeps_existing_output(tmp_path):
    out = tmp_path / "keep.tflite"
    out.write_bytes(b"previous")
    result = _run("convert", _two_unsupported(tmp_path / "bad.onnx"), "-o", str(out))
    assert result.exit_code == 1
    assert out.read_bytes() == b"previous"


def test_truncated_model_is_a_one_line_error(tmp_path):
    data = open(SAMPLE, "rb").read()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 3])
    result = _run("convert", str(bad), "-o", str(tmp_path / "t.tflite"))
    assert result.exit_code == 1
    assert "truncated.onnx" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_not_onnx_at_all(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("hello, I am not a model")
    result = _run("convert", str(bad), "-o", str(tmp_path / "t.tflite"))
    assert result.exit_code == 1 and "notes.onnx" in result.output


def test_missing_input_is_a_usage_error(tmp_path):
    result = _run("convert", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "t.tflite"))
    assert result.exit_code == 2 and "does not exist" in result.output


def test_unwritable_output_directory(tmp_path):
    result = _run("convert", SAMPLE, "-o", str(tmp_path / "missing_dir" / "x.tflite"))
    assert result.exit_code == 1 and "missing_dir" in result.output


def test_output_may_not_overwrite_the_input(tmp_path):
    copy = tmp_path / "m.onnx"
    copy.write_bytes(open(SAMPLE, "rb").read())
    result = _run("convert", str(copy), "-o", str(copy))
    assert result.exit_code == 1 and "overwrite" in result.output
    assert copy.read_bytes() == open(SAMPLE, "rb").read()


def test_internal_error_exits_3(tmp_path, monkeypatch):
    import tflq.pipeline

    def explode(config):
        raise RuntimeError("injected")

    monkeypatch.setattr(tflq.pipeline, "convert", explode)
    result = _run("convert", SAMPLE, "-o", str(tmp_path / "x.tflite"))
    assert result.exit_code == 3 and "please report" in result.output
    assert "Traceback" not in result.output
    debug = _run("convert", SAMPLE, "-o", str(tmp_path / "x.tflite"), "--debug")
    assert debug.exit_code == 3 and "Traceback" in debug.output


def test_input_shape_option(tmp_path):
    out = tmp_path / "b4.tflite"
    result = _run("convert", SAMPLE, "-o", str(out), "--input-shape", "input:4,1,8,8")
    assert result.exit_code == 0, result.output
    info = json.loads(_run("inspect", str(out), "--json").output)
    assert info["tensors"][info["inputs"][0]]["shape"] == [4, 8, 8, 1]
    bad = _run("convert", SAMPLE, "-o", str(out), "--input-shape", "input:4,x")
    assert bad.exit_code == 2


def test_ops_lists_the_registry():
    result = _run("ops")
    assert result.exit_code == 0
    assert "CONV_2D" in result.output and "Conv" in result.output


def test_report_json_to_stdout(tmp_path):
    result = CliRunner().invoke(main, ["convert", SAMPLE, "-o", str(tmp_path / "r.tflite"), "-q",
                                       "--report", "-"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["mode"] == "float" and report["op_counts"]["CONV_2D"] == 3
    assert np.isfinite(report["seconds"])


def test_inspect_refuses_a_non_tflite_file(tmp_path):
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"\x00" * 64)
    result = _run("inspect", str(bad))
    assert result.exit_code == 1 and "TFL3" in result.output and "Traceback" not in result.output


def test_save_stats_may_not_overwrite_an_input(tmp_path):
    calib = os.path.join(os.path.dirname(SAMPLE), "digits_calib")
    copy = tmp_path / "m.onnx"
    copy.write_bytes(open(SAMPLE, "rb").read())
    result = _run("convert", str(copy), "-o", str(tmp_path / "x.tflite"), "--mode", "full",
                  "--calib", calib, "--save-stats", str(copy))
    assert result.exit_code == 1 and "overwrite" in result.output
    assert copy.read_bytes() == open(SAMPLE, "rb").read()
    same = _run("convert", str(copy), "-o", str(tmp_path / "x.tflite"), "--mode", "full",
                "--calib", calib, "--save-stats", str(tmp_path / "x.tflite"))
    assert same.exit_code == 1 and "same file" in same.output


def test_numbers_that_are_not_numbers_are_usage_errors(tmp_path):
    # every float comparison is false for NaN, so a range check alone lets it through
    out = tmp_path / "n.tflite"
    calib = os.path.join(os.path.dirname(SAMPLE), "digits_calib")
    for flags in (["--mode", "full", "--calib", calib, "--target-sqnr", "nan"],
                  ["--mode", "full", "--calib", calib, "--target-sqnr", "inf"],
                  ["--mode", "full", "--calib", calib, "--calib-method", "percentile", "--percentile", "nan"],
                  ["--scale", "nan"], ["--mean", "0,nan,0"], ["--std", "inf"]):
        result = _run("convert", SAMPLE, "-o", str(out), *flags)
        assert result.exit_code == 2, (flags, result.output)
        assert "finite" in result.output and "Traceback" not in result.output
        assert not out.exists()
    for value in ("nan", "-inf"):
        result = _run("eval", SAMPLE, str(out), "--data", calib, "--min-sqnr", value)
        assert result.exit_code == 2 and "finite" in result.output


def _session_processes(session: int) -> list[str]:
    """The live (not zombie) processes of a process group: `pid stat command`."""
    import subprocess

    lines = subprocess.run(["ps", "-eo", "pid,pgid,stat,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return [line for line in lines if line.split()[1] == str(session) and not line.split()[2].startswith("Z")]


def _as_from_a_terminal() -> None:
    """A command started from a terminal takes Ctrl-C; one started in the background by a
    shell without job control (`make test &`, a CI step run so) inherits SIGINT ignored and
    rightly keeps it so, which would make the interrupt tests pass or fail by how they were run."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", ["ctrl_c", "sigterm"])
def test_interrupt_during_calibration_with_workers_leaves_nothing(how, tmp_path):
    """Ctrl-C (SIGINT to the whole process group) while --jobs 2 calibrates on worker processes
    (the numpy engine's; onnxruntime's threads: test_parallel_calibration): click's 'Aborted!'
    and exit 1 before; the workers took the interrupt too, mid-answer. SIGTERM to tflq alone
    (kill, timeout, a cancelled CI job): it died at once and its forkserver and worker ran on,
    orphaned. Now exit 130 / 143, one line, no output or statistics file, no temporary file, no
    process of the group left running."""
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(0)
    nodes, inits, previous, channels = [], [], "x", 3
    for k in range(6):
        inits.append(onnx.numpy_helper.from_array(rng.normal(size=(32, channels, 3, 3)).astype(np.float32) * 0.1, f"w{k}"))
        nodes += [helper.make_node("Conv", [previous, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{k}"], [f"r{k}"])]
        previous, channels = f"r{k}", 32
    nodes.append(helper.make_node("GlobalAveragePool", [previous], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 3, 80, 80])],
                              [helper.make_tensor_value_info("y", 1, None)], inits)
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "a.npy", rng.normal(size=(400, 3, 80, 80)).astype(np.float32))
    out, stats = tmp_path / "m.tflite", tmp_path / "stats.npz"
    process = subprocess.Popen([sys.executable, "-m", "tflq.cli", "convert", str(model), "-o", str(out), "--mode", "full",
                                "--calib", str(calib), "--calib-engine", "numpy", "--jobs", "2",
                                "--save-stats", str(stats)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=_as_from_a_terminal)
    deadline = time.monotonic() + 60
    # this process, multiprocessing's resource tracker, the forkserver and a worker
    while len(_session_processes(process.pid)) < 4 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # (polling for the worker to exist, not a fixed wait)
    assert process.poll() is None, "calibration ended before its worker started"
    if how == "ctrl_c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        os.kill(process.pid, signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=30)
    finally:  # (a worker left running would hold the pipes open: end the group)
        if _session_processes(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
    expected = (130, "Interrupted") if how == "ctrl_c" else (143, "Terminated")
    assert process.returncode == expected[0], err[-2000:]
    assert err.strip().splitlines()[-1] == f"{expected[1]}; nothing was written", err[-2000:]
    assert "Traceback" not in err
    assert not out.exists() and not stats.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tflq-")]
    deadline = time.monotonic() + 20
    while _session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _session_processes(process.pid), _session_processes(process.pid)


def test_ctrl_c_while_the_command_imports_is_one_line_and_130():
    """The `tflq` command imports its CLI (click, numpy, the commands: a few tenths of a second)
    under a guard: a Ctrl-C then (here: raised by the import of tflq.cli) gave Python's
    KeyboardInterrupt traceback; now the CLI's line and exit 130. The installed command and
    `python -m tflq` start there."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="console_scripts", name="tflq")] == ["tflq._entry:main"]
    script = ("import sys\n"
              "class Interrupting:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'tflq.cli':\n"
              "            raise KeyboardInterrupt\n"
              "sys.meta_path.insert(0, Interrupting())\n"
              "import runpy\n"
              "runpy.run_module('tflq', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 130 and result.stderr == "Interrupted; nothing was written\n", result.stderr
    result = subprocess.run([sys.executable, "-m", "tflq", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "tflq" in result.stdout
