"""Measurement primitives for the benchmark: a timed child process, LiteRT runs, SQNR, latency.

Nothing here knows about models or configurations (that is ``bench/run.py``); every function
measures one thing and returns plain numbers. It deliberately does not import ``tests/conftest.py``
(which imports pytest); ``LiteRTModel`` follows the same I/O conventions: 4-D inputs are fed NHWC
(the data is NCHW, as for ONNX), 8-bit inputs are quantized with the input's scale and zero point,
8-bit outputs are dequantized and 4-D outputs are transposed back to NCHW.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

# Each input sample is a list of arrays in the model's input order, each with a batch of one.
Sample = list[np.ndarray]


@dataclass(frozen=True)
class ChildRun:
    """One finished child process: wall and CPU time, peak resident memory, exit code, stderr."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    returncode: int
    stderr: str
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def first_error_line(self) -> str:
        """The first stderr line that says "Error:" (a usage error starts with "Usage: ..."),
        else the first non-empty one, else a description of the exit."""
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        flagged = [line for line in lines if line.lower().startswith(("error:", "internal error:"))]
        if flagged or lines:
            return (flagged or lines)[0]
        return f"exit code {self.returncode}, no message"


# The launcher runs argv[2:] as its own child and prints "seconds cpu_seconds maxrss_kib
# wait_status timed_out". Why a separate small process: Linux carries the forking process's peak
# RSS over into the child (the high-water mark of the address space replaced at exec is kept in
# ru_maxrss), so a child forked straight from the benchmark, which holds models in memory, would
# report at least the benchmark's own size. Forked from this bare interpreter, the floor is ~6 MB.
# The launcher is a child subreaper (prctl PR_SET_CHILD_SUBREAPER): processes the command starts
# that outlive their parent (multiprocessing's forkserver, and through it the calibration
# workers) are reparented to it and reaped here, so the CPU time and peak RSS (getrusage of all
# reaped children: the sum of CPU, the largest single RSS) cover every process of the command.
_LAUNCHER = """
import ctypes, os, signal, sys, time
timeout, command = float(sys.argv[1]), sys.argv[2:]
try:
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except (OSError, AttributeError):
    pass
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"error: cannot run {command[0]}: {exc}\\n")
    os._exit(127)
timed_out = []
def kill(signum, frame):
    timed_out.append(1)
    os.kill(pid, signal.SIGKILL)
signal.signal(signal.SIGALRM, kill)
signal.setitimer(signal.ITIMER_REAL, timeout)
_, status = os.waitpid(pid, 0)  # retried after the alarm (PEP 475)
seconds = time.perf_counter() - start
signal.setitimer(signal.ITIMER_REAL, 0)
def give_up(signum, frame):
    raise TimeoutError
signal.signal(signal.SIGALRM, give_up)
signal.setitimer(signal.ITIMER_REAL, 10.0)  # descendants left behind get 10 s to finish
while True:
    try:
        os.waitpid(-1, 0)
    except (ChildProcessError, TimeoutError):
        break
signal.setitimer(signal.ITIMER_REAL, 0)
usage = __import__("resource").getrusage(__import__("resource").RUSAGE_CHILDREN)
print(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, status, len(timed_out))
"""


def run_child(command: Sequence[str], timeout: float) -> ChildRun:
    """Run ``command`` (an executable path and its arguments) and measure it alone.

    Measured by a bare launcher process (see ``_LAUNCHER``): wall time from fork to reaping;
    CPU time (user + system, all threads and processes), less disturbed than wall time by other
    load on a shared machine; and peak RSS, the largest ``ru_maxrss`` of the command's processes,
    which Linux reports in KiB (the result is in MB, 10^6 bytes). stdout is discarded; stderr goes through a
    temporary file so that no pipe can fill up.
    """
    with tempfile.TemporaryFile(mode="w+b") as stderr_file:
        launcher = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(timeout), *command],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=stderr_file, text=True, check=True)
        stderr_file.seek(0)
        stderr = stderr_file.read().decode("utf-8", errors="replace")
    seconds, cpu_seconds, maxrss_kib, status, timed_out = launcher.stdout.split()
    return ChildRun(seconds=float(seconds), cpu_seconds=float(cpu_seconds),
                    peak_rss_mb=int(maxrss_kib) * 1024 / 1e6,
                    returncode=os.waitstatus_to_exitcode(int(status)), stderr=stderr,
                    timed_out=timed_out == "1")


def litert_smoke_test(path: str, timeout: float) -> str | None:
    """Load and invoke the file once (zero inputs) in a child process; None if that worked.

    A malformed file can crash the interpreter outright; the benchmark must survive that, so a
    file is only loaded in-process once this check passed. Otherwise: a one-line reason.
    """
    try:
        from tflq.analysis.runtimes import invoke_in_child

        child = invoke_in_child(path, timeout)
    except subprocess.TimeoutExpired:
        return f"LiteRT smoke test timed out after {timeout:.0f} s"
    if child.returncode == 0:
        return None
    if child.returncode < 0:
        return f"LiteRT crashed (signal {-child.returncode})"
    lines = [line.strip() for line in child.stderr.splitlines()
             if line.strip() and not line.startswith("INFO:")]
    return f"LiteRT: {lines[-1] if lines else f'exit code {child.returncode}'}"


def onnxruntime_outputs(model_path: str, samples: Sequence[Sample]) -> list[list[np.ndarray]]:
    """The float ONNX model's outputs for each sample, from onnxruntime with no graph rewrites."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_inputs()]
    return [session.run(None, dict(zip(names, sample))) for sample in samples]


class LiteRTModel:
    """A .tflite file loaded in LiteRT with one thread, fed and read in ONNX layout and float."""

    def __init__(self, path: str, example: Sample) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=path, num_threads=1)
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        if len(self.inputs) != len(example):
            raise ValueError(f"{len(self.inputs)} TFLite inputs, {len(example)} ONNX inputs")
        for detail, value in zip(self.inputs, example):
            shape = _to_tflite_layout(value).shape
            if tuple(detail["shape"]) != shape:
                self.interpreter.resize_tensor_input(detail["index"], list(shape))
        self.interpreter.allocate_tensors()

    def set_inputs(self, sample: Sample) -> None:
        """Write one sample to the input tensors (transposed and quantized as the file needs)."""
        for detail, value in zip(self.inputs, sample):
            value = _to_tflite_layout(np.asarray(value))
            dtype = np.dtype(detail["dtype"])
            if dtype.kind in "iu" and dtype.itemsize == 1:
                scale, zero_point = detail["quantization"]
                info = np.iinfo(dtype)
                value = np.clip(np.round(value / scale) + zero_point, info.min, info.max)
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(value.astype(dtype)))

    def read_outputs(self) -> list[np.ndarray]:
        """The output tensors as float32 in ONNX layout (dequantized when 8-bit)."""
        results = []
        for detail in self.outputs:
            value = self.interpreter.get_tensor(detail["index"])
            if value.dtype != np.float32:
                scale, zero_point = detail["quantization"]
                if scale:
                    value = (value.astype(np.float32) - zero_point) * scale
                value = value.astype(np.float32)
            results.append(value.transpose(0, 3, 1, 2) if value.ndim == 4 else value)
        return results

    def run(self, sample: Sample) -> list[np.ndarray]:
        self.set_inputs(sample)
        self.interpreter.invoke()
        return self.read_outputs()

    def invoke_seconds(self) -> float:
        """Time one invoke on whatever inputs are set."""
        start = time.perf_counter()
        self.interpreter.invoke()
        return time.perf_counter() - start


def _to_tflite_layout(value: np.ndarray) -> np.ndarray:
    return value.transpose(0, 2, 3, 1) if value.ndim == 4 else value


def sqnr_db(reference: Sequence[np.ndarray], actual: Sequence[np.ndarray]) -> float:
    """10 log10(signal power / error power) over all elements; inf when identical."""
    ref = np.concatenate([np.asarray(r, np.float64).ravel() for r in reference])
    out = np.concatenate([np.asarray(a, np.float64).ravel() for a in actual])
    if ref.shape != out.shape:
        raise ValueError(f"output sizes differ: {ref.size} reference, {out.size} TFLite")
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-30) / noise))


@dataclass(frozen=True)
class Latency:
    """Invoke times of one model in milliseconds: median and spread of the timed rounds."""

    median_ms: float
    min_ms: float
    p25_ms: float
    p75_ms: float
    runs: int
    times_ms: tuple[float, ...] = field(default=(), repr=False)  # per round, in round order

    def summary(self) -> dict:
        """The figures without the per-round times (for the JSON results)."""
        return {k: v for k, v in asdict(self).items() if k != "times_ms"}


def paired_ratio(a: Latency, b: Latency) -> float:
    """Median over rounds of a's time over b's in the same round: load that changes from round
    to round cancels out of each pair (both were timed within milliseconds of each other)."""
    return statistics.median(x / y for x, y in zip(a.times_ms, b.times_ms))


def interleaved_latency(models: dict[str, LiteRTModel], sample: Sample, warmup: int,
                        runs: int, budget_s: float | None = None) -> dict[str, Latency]:
    """Time every model round-robin: each round invokes each model once, in a rotating order.

    On a shared, noisy machine, load changes hit all models of the same round alike, so the
    ratios between medians stay meaningful even when the absolute times drift. budget_s: a model
    whose `runs` invokes would take longer than that (judged by its last warm-up invoke) takes
    part in the first rounds only, at least 5 of them.
    """
    for model in models.values():
        model.set_inputs(sample)
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    quota = dict.fromkeys(names, runs)
    for round_index in range(warmup + runs):
        shift = round_index % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            if round_index >= warmup and len(times[name]) >= quota[name]:
                continue
            seconds = models[name].invoke_seconds()
            if round_index >= warmup:
                times[name].append(seconds * 1e3)
            elif round_index == warmup - 1 and budget_s is not None and seconds * runs > budget_s:
                quota[name] = max(5, int(budget_s / seconds))
    result = {}
    for name, values in times.items():
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        result[name] = Latency(median_ms=statistics.median(values), min_ms=min(values),
                               p25_ms=quartiles[0], p75_ms=quartiles[2], runs=len(values),
                               times_ms=tuple(values))
    return result
