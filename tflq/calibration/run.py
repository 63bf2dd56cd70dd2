"""Calibration, run: gather the statistics a full-integer conversion needs, from saved files
(--stats), by running the float graph over samples (--calib), or both merged."""
from __future__ import annotations

import logging
import operator
import os
import time
from concurrent.futures import Executor
from dataclasses import replace
from typing import Callable, Iterable, Mapping

import numpy as np

from tflq.calibration.sources import graph_input_specs, load_samples
from tflq.calibration.statistics import CalibrationStats, NonFiniteError, non_finite_message
from tflq.calibration.stats_file import graph_fingerprint, merge_files, stats_bytes
from tflq.config import CalibEngine, CalibMethod, ConvertConfig
from tflq.errors import CalibrationError, InvalidConfigError
from tflq.fileio import Source, WritePolicy
from tflq.ir.graph import Graph, Tensor
from tflq.ir.integer_paths import integer_arithmetic_tensors
from tflq.ir.layout import to_channels_last
from tflq.report import ConversionReport
from tflq.runtime.interpreter import GraphRunner

log = logging.getLogger(__name__)


def collect_statistics(graph: Graph, config: ConvertConfig, report: ConversionReport,
                       write: Callable[[str, bytes], None] | None = None) -> CalibrationStats:
    """The statistics for `graph`: loaded from config.stats, calibrated on config.calib, or both."""
    fingerprint = graph_fingerprint(graph)
    stats = None
    saved: list[tuple[str, int]] = []
    if config.stats:
        stats = merge_files(list(config.stats), fingerprint, saved)
    if config.calib is not None:
        start = time.perf_counter()
        specs = [replace(spec, convert=config.calib_convert) for spec in graph_input_specs(graph)]
        samples = load_samples(config.calib, specs, config.calib_samples,
                               mean=config.mean, std=config.std, scale=config.scale)
        # minmax needs only each tensor's extremes; the other methods and saved statistics
        # need the histograms, which cost about as much as the forward pass
        histogram = config.calib_method != CalibMethod.MINMAX or bool(config.save_stats)
        from tflq.calibration.engines import equalized_tensors

        fresh, engine = _calibrate(graph, samples, calibrated_tensors(graph, config.float_ops),
                                   config.show_progress, histogram, config.jobs,
                                   config.executor, config.calib_engine, config.model, config.input_shapes,
                                   equalized_tensors(graph, report.equalization))
        report.calibration = {"samples": fresh.samples, "method": config.calib_method.value,
                              "seconds": time.perf_counter() - start, "engine": engine}
        if stats is None:
            stats = fresh
        else:
            stats.merge(fresh)
    if stats is None:
        raise InvalidConfigError("--mode full needs calibration data (--calib DIR) or saved "
                                 "statistics (--stats FILE)")
    if not report.calibration:  # ranges from saved statistics only: nothing calibrated in this run
        report.calibration = {"samples": 0, "method": config.calib_method.value, "seconds": 0.0}
    if saved:  # where the ranges came from besides this run's samples
        report.calibration["stats_files"] = [{"path": path, "samples": n} for path, n in saved]
    if config.save_stats:
        if write is None:  # called without the pipeline's write policy: check against the model
            write = WritePolicy({"--save-stats": config.save_stats},
                                [Source("the input model", config.model)]).write
        write("--save-stats", stats_bytes(stats, fingerprint))
    return stats


def calibrated_tensors(graph: Graph, float_ops=()) -> set[str]:
    """The tensors calibration records: every non-constant float tensor (graph inputs included)
    but those that only ops of the --float-ops nodes produce and read, and the float values of
    integer arithmetic (tflq.ir.integer_paths), which no plan quantizes (and which may hold what
    no grid holds: the NaN of a Log on the branch an If on the data does not take, the -inf of
    log(0) in T5's relative position buckets)."""
    named = set(float_ops)
    producers, consumers = (graph.producers(), graph.consumer_map()) if named else ({}, {})
    outputs = set(graph.outputs)
    integer = integer_arithmetic_tensors(graph)
    return {n for n, t in graph.tensors.items() if not t.is_constant and t.dtype.is_float
            and n not in integer
            and not (n in producers and producers[n].origin in named and n not in outputs
                     and all(op.origin in named for op in consumers.get(n, ())))}


def calibrate(graph: Graph, samples: Iterable[Mapping[str, np.ndarray]], tensors: set[str] | None = None,
              show_progress: bool = True, *, histogram: bool = True, jobs: int | None = 1,
              executor: Executor | None = None, engine: CalibEngine | str = CalibEngine.NUMPY,
              model: str | None = None, input_shapes: Mapping[str, tuple[int, ...]] | None = None
              ) -> CalibrationStats:
    """Run the float `graph` on each sample and gather statistics of `tensors` (default: every
    non-constant float tensor, graph inputs included).

    Samples are {input name: array} in ONNX layout (see tflq.calibration.sources.load_samples); inputs
    the graph holds as NHWC are transposed here. Only running statistics are kept, never the
    activations. histogram: also keep the histograms the percentile/mse/entropy methods and saved
    statistics need (else minimum and maximum only). jobs: the CPUs to run on (1: this thread;
    None: as many as this process may use), as threads on one onnxruntime session, or as worker
    processes of the numpy engine, started only when calibration is long enough to gain from
    them; executor: any concurrent.futures.Executor to run the shards on instead (e.g. Dask's
    Client.get_executor()). The statistics, and so the output file, are the same whatever the
    split. BLAS runs one thread throughout. engine: what runs the graph
    (tflq.calibration.engines; onnxruntime and auto need `model`, the ONNX file `graph` was
    imported from, with its `input_shapes`). Raises CalibrationError when a tracked tensor
    becomes NaN or Inf, or a worker or the executor fails.
    """
    return _calibrate(graph, samples, tensors, show_progress, histogram, jobs, executor, engine, model,
                      input_shapes)[0]


def _calibrate(graph, samples, tensors, show_progress, histogram, jobs, executor, engine, model,
               input_shapes, changed=frozenset()) -> tuple[CalibrationStats, str]:
    """calibrate(), and the name of the engine that ran."""
    from tflq.calibration.engines import (OnnxruntimeFailure, engines_agree, plan_onnxruntime,
                                          resolve_engine, unsettled_minima)
    from tflq.calibration.parallel import CalibrationJob, one_blas_thread, run_calibration

    if tensors is None:
        tensors = calibrated_tensors(graph)
    tensors = frozenset(tensors)
    job = CalibrationJob(graph, tensors, histogram)
    engine = resolve_engine(engine)
    stats = runner = None
    total = operator.length_hint(samples, 0) or None
    name = CalibEngine.NUMPY.value
    if engine == CalibEngine.ONNXRUNTIME:
        plan, reason = (None, "no ONNX model was given") if model is None else \
            plan_onnxruntime(graph, tensors, histogram, model, input_shapes, changed)
        if plan is not None:
            # The first sample runs here, so that a model onnxruntime refuses falls back to numpy;
            # with TFLQ_DEBUG (--debug) also in numpy, and the engines must agree on every tensor.
            samples = iter(samples)
            head = next(samples, None)
            if head is None:
                raise CalibrationError("no calibration samples")
            total = None if total is None else total - 1
            with one_blas_thread():
                try:
                    runner, stats = _first_sample(plan, head, histogram, executor)
                    unsettled = unsettled_minima(runner.plan, stats)
                    if unsettled:  # their samples held no 0: the minima whole, from sample 0 again
                        log.debug("calibration: %d sampled minima not settled by sample 0", len(unsettled))
                        plan, reason = plan_onnxruntime(graph, tensors, histogram, model, input_shapes,
                                                        changed, whole_minima=unsettled)
                        if plan is None:
                            raise OnnxruntimeFailure(reason)
                        runner, stats = _first_sample(plan, head, histogram, executor)
                except OnnxruntimeFailure as exc:
                    reason = str(exc)
                if os.environ.get("TFLQ_DEBUG") and not reason:
                    reference = SampleRunner(graph, tensors, histogram).run([head], 0)
                    reason = engines_agree(reference, stats)
            if reason:  # sample 0 again, in numpy
                runner = SampleRunner(graph, tensors, histogram)
                with one_blas_thread():
                    stats = runner.run([head], 0)
            else:
                name = CalibEngine.ONNXRUNTIME.value
                # an executor's tasks carry the model; in this process, the session has it
                job = CalibrationJob(None, tensors, histogram, plan=plan if executor is not None else runner.plan)
                log.info("calibration engine: onnxruntime (%s)", plan.describe())
            plan = None  # (the job holds what is needed)
        if reason:
            log.info("calibration engine: numpy (%s)", reason)
    stats = run_calibration(job, samples, jobs=jobs, executor=executor, show_progress=show_progress,
                            stats=stats, runner=runner, total=total)
    if stats.samples == 0:
        raise CalibrationError("no calibration samples")
    return stats, name


def _first_sample(plan, head, histogram: bool, executor):
    """A runner of `plan` in onnxruntime and its statistics of sample 0 (`head`). This process's
    threads run onnxruntime's optimized graph (made here: it is of this machine); an executor's
    workers get the model as planned."""
    from tflq.calibration.engines import OnnxruntimeFailure, OnnxruntimeRunner, optimized_plan

    try:
        runner = OnnxruntimeRunner(plan if executor is not None else optimized_plan(plan), histogram)
    except OnnxruntimeFailure as exc:
        if executor is not None:
            raise
        # onnxruntime refused its own optimized graph: the model as planned
        log.debug("%s (its optimized graph); the model as planned", exc)
        runner = OnnxruntimeRunner(plan, histogram)
    return runner, runner.run([head], 0)


class SampleRunner:
    """The float graph prepared once (constants, kernels), run on samples into statistics."""

    def __init__(self, graph: Graph, tensors: frozenset[str], histogram: bool) -> None:
        self.graph = graph
        self.tensors = tensors
        self.histogram = histogram
        self.producers = graph.producers()
        self.runner = GraphRunner(graph)

    def run(self, samples: Iterable[Mapping[str, np.ndarray]], first: int = 0,
            stats: CalibrationStats | None = None) -> CalibrationStats:
        """Add the samples (numbered from `first` in messages) to `stats` (or to new statistics)."""
        stats = CalibrationStats(histogram=self.histogram) if stats is None else stats
        tensors, producers = self.tensors, self.producers
        index = first

        def on_tensor(name: str, value: np.ndarray) -> None:
            if name not in tensors:
                return
            try:
                stats.update(name, value)
            except NonFiniteError as exc:
                op = producers.get(name)
                where = f" (output of {op.kind} from node '{op.origin}')" if op is not None else " (graph input)"
                raise CalibrationError(non_finite_message(index, name, where, str(exc))) from None

        for index, sample in enumerate(samples, start=first):
            self.runner.run(_feeds(self.graph, sample, index), on_tensor=on_tensor)
            stats.samples += 1
        return stats


def _feeds(graph: Graph, sample: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """Graph input name -> array in the graph's layout (ONNX NCHW samples become NHWC)."""
    return sample_feeds([graph.tensors[name] for name in graph.inputs], sample, index)


def sample_feeds(inputs: Iterable[Tensor], sample: Mapping[str, np.ndarray], index: int,
                 transpose: bool = True) -> dict[str, np.ndarray]:
    """Input name -> array, checked against the `inputs` tensors; in their layout unless
    not `transpose` (then as given, in ONNX layout)."""
    feeds = {}
    for t in inputs:
        name = t.name
        if t.is_constant:
            continue
        if name not in sample:
            raise CalibrationError(f"calibration sample {index}: no array for input '{name}'")
        value = np.asarray(sample[name])
        given = value
        if t.layout.channels_last and value.ndim == t.rank:
            # contiguous: every kernel and statistic that reads the input then reads it in order
            value = value.transpose(to_channels_last(t.rank))
            if transpose:
                value = np.ascontiguousarray(value)
        if value.shape != t.shape:
            raise CalibrationError(f"calibration sample {index}: input '{name}' has shape "
                                   f"{list(value.shape)}, expected {list(t.shape)} ({t.layout.value})")
        feeds[name] = value if transpose else given
    return feeds


# Samples --target-sqnr measures on: each candidate layer costs one run over all of them.
EVALUATION_SAMPLES = 8


def evaluation_samples(graph: Graph, config: ConvertConfig,
                       limit: int = EVALUATION_SAMPLES) -> list[dict[str, np.ndarray]]:
    """The samples SQNR is measured on, as feeds in the graph's layout: the first of
    config.eval_data (read like calibration data), else the first calibration samples."""
    source = config.calib if config.eval_data is None else config.eval_data
    count = min(limit, config.calib_samples or limit) if config.eval_data is None else limit
    specs = [replace(spec, convert=config.calib_convert) for spec in graph_input_specs(graph)]
    samples = load_samples(source, specs, count, mean=config.mean, std=config.std, scale=config.scale)
    return [_feeds(graph, sample, index) for index, sample in enumerate(samples)]
