"""Calibration over processes and executors: the same statistics and file for every split, named
failures, no workers left behind, BLAS held to one thread and given back."""
from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Executor, Future

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper

from tests.conftest import importorskip, run_onnxruntime
from tflq.cli import main
from tflq.config import ConvertConfig
from tflq.errors import CalibrationError, InvalidConfigError
from tflq.pipeline import convert, prepare_graph
from tflq.calibration import parallel
from tflq.calibration.parallel import CalibrationJob, run_calibration
from tflq.calibration.run import calibrate

SAMPLES = 24


def _model(path) -> str:
    rng = np.random.default_rng(7)

    def const(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], group=8, pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w3"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", 1, [1, 5])],
                              [const("w1", 8, 3, 3, 3), const("b1", 8), const("w2", 8, 1, 3, 3),
                               const("b2", 8), const("w3", 5, 8)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def _samples(count: int = SAMPLES) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(11)
    return [{"x": rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(count)]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return _model(tmp_path_factory.mktemp("parallel") / "net.onnx")


def _convert(model: str, **options) -> bytes:
    config = ConvertConfig(model=model, mode="full", dtype="int8", calib=_samples(), **options)
    return convert(config).tflite


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_every_number_of_jobs_writes_the_same_file(model, method):
    files = {jobs: _convert(model, jobs=jobs, calib_method=method) for jobs in (1, 2, 3)}
    assert files[2] == files[1] and files[3] == files[1]
    assert not multiprocessing.active_children()


def test_sharded_statistics_match_numpy_and_onnxruntime(model):
    graph, _ = prepare_graph(ConvertConfig(model=model, mode="full"))
    samples = _samples()
    stats = calibrate(graph, samples, show_progress=False, histogram=False, jobs=2)
    assert stats.samples == SAMPLES
    x = np.stack([s["x"] for s in samples])
    assert stats.range("x") == (float(x.min()), float(x.max()))
    outputs = np.stack([run_onnxruntime(model, s)[0] for s in samples])
    low, high = stats.range("y")
    assert abs(low - outputs.min()) < 1e-5 and abs(high - outputs.max()) < 1e-5
    assert not any(t.has_histogram for t in stats.tensors.values())


def test_dask_cluster_executor_writes_the_same_file(model):
    distributed = importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_cluster = _convert(model, executor=client.get_executor(), calib_method="mse")
    assert on_cluster == _convert(model, jobs=1, calib_method="mse")


def test_calibrate_command_shards_merge_into_the_same_file(model, tmp_path):
    samples = _samples()
    for name, part in (("a", samples[:10]), ("b", samples[10:])):
        np.save(tmp_path / f"{name}.npy", np.concatenate([s["x"] for s in part]))
    runner = CliRunner()
    for name in ("a", "b"):
        result = runner.invoke(main, ["calibrate", model, "--calib", str(tmp_path / f"{name}.npy"),
                                      "--save-stats", str(tmp_path / f"{name}.npz"), "-q"])
        assert result.exit_code == 0, result.output
    out = tmp_path / "merged.tflite"
    result = runner.invoke(main, ["convert", model, "-o", str(out), "--mode", "full", "--dtype", "int8",
                                  "--stats", str(tmp_path / "a.npz"), "--stats", str(tmp_path / "b.npz"),
                                  "--calib-method", "entropy", "-q"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == _convert(model, calib_method="entropy")


@pytest.mark.parametrize("jobs", ["0", "-2"])
def test_jobs_below_one_is_a_usage_error(model, tmp_path, jobs):
    result = CliRunner().invoke(main, ["convert", model, "-o", str(tmp_path / "m.tflite"), "--mode",
                                       "full", "--calib", str(tmp_path), "--jobs", jobs])
    assert result.exit_code == 2 and "--jobs" in result.output
    with pytest.raises(InvalidConfigError, match="jobs"):
        ConvertConfig(model=model, jobs=int(jobs))


class _Deadly:
    """A sample value that kills the process that reads it (a worker killed mid-shard)."""

    def __init__(self, value: np.ndarray) -> None:
        self.shape, self.dtype = value.shape, value.dtype

    def __array__(self, dtype=None, copy=None):
        os._exit(9)


def test_a_worker_that_dies_fails_naming_its_shard_and_leaves_no_process(model, monkeypatch):
    monkeypatch.setattr(parallel, "MAIN_PROCESS_SHARDS", False)  # every shard goes to a worker
    graph, _ = prepare_graph(ConvertConfig(model=model, mode="full"))
    samples = _samples()
    samples[13] = {"x": _Deadly(samples[13]["x"])}
    job = CalibrationJob(graph, frozenset(graph.inputs), histogram=False)
    number = 13 // parallel.SHARD_SAMPLES
    first = number * parallel.SHARD_SAMPLES
    last = first + parallel.SHARD_SAMPLES - 1
    with pytest.raises(CalibrationError, match=rf"worker died .*shard {number} \(samples {first}-{last}\)"):
        run_calibration(job, samples, jobs=2)
    assert not multiprocessing.active_children()


class _RefusingExecutor(Executor):
    def submit(self, fn, /, *args, **kwargs):
        raise RuntimeError("cluster is gone")


class _FailingExecutor(Executor):
    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        future.set_exception(ConnectionError("scheduler lost"))
        return future


def test_an_executor_that_raises_is_named_with_its_error(model, tmp_path):
    out = tmp_path / "m.tflite"
    for executor, text in ((_RefusingExecutor(), "refused shard 0 .*RuntimeError: cluster is gone"),
                           (_FailingExecutor(), "failed on shard 0 .*ConnectionError: scheduler lost")):
        with pytest.raises(CalibrationError, match=f"executor \\({type(executor).__name__}\\) {text}"):
            convert(ConvertConfig(model=model, output=str(out), mode="full", calib=_samples(),
                                  executor=executor))
        assert not out.exists()


def test_blas_holds_one_thread_while_calibrating_and_is_restored(model, monkeypatch):
    threadpoolctl = importorskip("threadpoolctl")
    from tflq.calibration import run as calibrate_module

    graph, _ = prepare_graph(ConvertConfig(model=model, mode="full"))
    seen = []
    original = calibrate_module.SampleRunner.run

    def recording_run(self, *args, **kwargs):
        seen.extend(p["num_threads"] for p in threadpoolctl.threadpool_info())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(calibrate_module.SampleRunner, "run", recording_run)
    with threadpoolctl.threadpool_limits(limits=2):
        before = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
        calibrate(graph, _samples(4), show_progress=False, jobs=1)
        after = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
    assert seen and set(seen) == {1}
    assert after == before


def test_an_unguarded_script_calibrates_on_workers_once(model, tmp_path):
    """The Python API starts workers by default, as the CLI does; a script without the
    `if __name__ == "__main__":` guard is not run again in them (Python's forkserver would)."""
    import subprocess
    import sys

    assert ConvertConfig(model=model).jobs is None
    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np, tflq\n"
        "print('top level', flush=True)\n"
        "rng = np.random.default_rng(0)\n"
        "samples = [{'x': rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]\n"
        f"tflq.convert({model!r}, {str(tmp_path / 'm.tflite')!r}, mode='full', dtype='int8',\n"
        "             calib=samples, jobs=2)\n")
    child = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    assert child.stdout.count("top level") == 1
    assert (tmp_path / "m.tflite").exists()


def test_workers_exit_while_the_conversion_goes_on_and_are_gone_after_it(model, monkeypatch):
    """In workers_exit_later (what convert runs in) calibration returns without waiting for its
    workers to exit; the block waits, so none is left when it ends."""
    monkeypatch.setattr(parallel, "MAIN_PROCESS_SHARDS", False)  # the shards go to the workers
    graph, _ = prepare_graph(ConvertConfig(model=model, mode="full"))
    job = CalibrationJob(graph, frozenset(graph.inputs), histogram=False)
    with parallel.workers_exit_later():
        together = run_calibration(job, _samples(), jobs=2)
        told = [processes for _, processes, _ in parallel._exiting]
        assert len(told) == 1 and len(told[0]) == 2
    assert not multiprocessing.active_children() and parallel._exiting is None
    alone = run_calibration(job, _samples(), jobs=1)
    assert together.tensors == alone.tensors


def test_the_command_starts_the_workers_before_it_imports_the_converter(model, tmp_path):
    """`tflq convert` asks for its calibration workers first, so their imports (about a second)
    run while the command imports the converter (tflq.pipeline and what it imports)."""
    import subprocess
    import sys

    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "x.npy", _samples(1)[0]["x"])
    script = ("import sys\n"
              "from tflq.calibration import parallel\n"
              "seen = []\n"
              "parallel.start_workers_early = lambda *args: seen.append('tflq.pipeline' in sys.modules)\n"
              "from tflq.cli import main\n"
              f"main(['convert', {model!r}, '-o', {str(tmp_path / 'm.tflite')!r}, '--mode', 'full',\n"
              f"      '--calib', {str(calib)!r}, '--calib-engine', 'numpy', '--jobs', '1', '-q'],\n"
              "     standalone_mode=False)\n"
              "print(seen)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[False, True]"  # the command's, then convert's


def test_onnxruntimes_default_jobs_run_threads_and_start_no_process(model, monkeypatch):
    """jobs=None with the onnxruntime engine: as many threads as this process may use, however
    short the calibration (a thread costs nothing to start), no worker process, and the file of
    one thread."""
    importorskip("onnxruntime")
    monkeypatch.setattr(parallel, "available_cpus", lambda: 3)
    threads, seen = _threads(), []
    original = parallel._run_on_threads
    monkeypatch.setattr(parallel, "_run_on_threads", lambda count, *args: seen.append(count) or original(count, *args))
    default = _convert(model, calib_engine="onnxruntime")
    assert seen == [3]
    assert default == _convert(model, calib_engine="onnxruntime", jobs=1)
    assert not multiprocessing.active_children() and _threads() == threads


def _threads() -> set[threading.Thread]:
    """This process's threads but tqdm's monitor, which the first progress bar of the process
    starts and which lives on (so counting it made these tests depend on their order)."""
    return {t for t in threading.enumerate() if t.name != "tqdm_monitor"}


def test_an_interrupt_while_threads_calibrate_stops_them_after_their_sample(model, monkeypatch):
    """Ctrl-C reaches the calling thread (here: raised while it reads the next sample): the
    queued shards are dropped, each thread ends after the sample it runs, and the interrupt goes
    on, with no thread left."""
    importorskip("onnxruntime")
    from tflq.calibration import engines

    graph, _ = prepare_graph(ConvertConfig(model=model, mode="full"))
    samples = _samples()

    def interrupted():
        for index, sample in enumerate(samples):
            if index == 9:
                raise KeyboardInterrupt
            yield sample

    ran = []
    run = engines.OnnxruntimeRunner.run
    monkeypatch.setattr(engines.OnnxruntimeRunner, "run",
                        lambda self, shard, *args: ran.append(len(shard)) or run(self, shard, *args))
    threads = _threads()
    with pytest.raises(KeyboardInterrupt):
        calibrate(graph, interrupted(), show_progress=False, histogram=False, jobs=3,
                  engine="onnxruntime", model=model)
    assert 0 < sum(ran) <= 9
    assert _threads() == threads and not multiprocessing.active_children()


def test_at_the_end_the_calling_process_runs_the_rest_when_workers_hold_as_much():
    """One worker holding 3 samples with 3 left to hand out: it would finish 3 samples after this
    process got the last one, and this process waits; so this process runs the rest (each ends
    after 3). With 4 left, the worker gets the next; a full queue is never added to."""
    assert parallel.runs_here(2, 3, window=2, workers=1, left=3)           # (and queue full)
    assert parallel.runs_here(1, 3, window=2, workers=1, left=3)
    assert not parallel.runs_here(1, 3, window=2, workers=1, left=4)
    assert not parallel.runs_here(1, 2, window=4, workers=2, left=2)       # 1 sample each < 2
    assert parallel.runs_here(2, 4, window=4, workers=2, left=2)
    assert not parallel.runs_here(1, 2, window=2, workers=1, left=None)    # count unknown
    assert parallel.runs_here(2, 4, window=2, workers=1, left=None)


def test_ctrl_c_while_the_forkserver_starts_interrupts_once_it_has_started():
    """While the forkserver starts, SIGINT is held back, not ignored: what is started then has it
    blocked (its preload printed a KeyboardInterrupt traceback), and a Ctrl-C arriving then
    interrupts this process as soon as the start is over (ignored, it was lost and the
    conversion ran on to exit 0)."""
    import signal
    import subprocess
    import sys

    from tflq.calibration.parallel import _interrupts_ignored_by_children

    def sigint_blocked(pid: int) -> bool:
        with open(f"/proc/{pid}/status") as status:
            mask = next(line.split()[1] for line in status if line.startswith("SigBlk:"))
        return bool(int(mask, 16) >> (signal.SIGINT - 1) & 1)

    interrupted = False
    child = None
    # as from a terminal: run in the background by a shell (`make test &`), SIGINT is ignored
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _interrupts_ignored_by_children():
            child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                     stdin=subprocess.PIPE)
            os.kill(os.getpid(), signal.SIGINT)  # held back: nothing raised in here
            assert signal.SIGINT in signal.sigpending()
        signal.sigpending()  # (a bytecode boundary: the handler runs after the unblock)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, handler)
        if child is not None:
            blocked = sigint_blocked(child.pid)
            child.communicate(b"")
    assert interrupted, "the Ctrl-C that arrived while the forkserver started was lost"
    assert blocked, "a process started meanwhile does not hold SIGINT back"
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())
