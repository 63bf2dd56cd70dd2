"""Calibration spread over this process's threads, worker processes, or any concurrent.futures.Executor.

The samples go out in shards; each task's statistics merge exactly (see statistics.TensorStats),
so the result, and the file written from it, does not depend on the number of workers nor on the
order in which shards finish. The calling process reads the samples and keeps at most a few
shards per worker in flight (so its memory does not grow with the number of samples).

The onnxruntime engine runs its shards on threads of this process, all on its one session:
onnxruntime releases Python's lock while it runs, and runs a session from several threads at
once. Threads start at once and share the model, where worker processes each took 0.1-0.2 s to
start and held a copy of it (MobileNetV2, 100 samples: --jobs 2 calibrated 1.55x faster than
--jobs 1 with a process, 1.62x with threads; ResNet-18 1.72x and 1.81x). tflq's interpreter (the
numpy engine) holds that lock, so it runs on worker processes forked from a forkserver, each with
one copy of the graph; the calling process calibrates shards itself whenever their queue is full.

BLAS is held to one thread in every process that runs the graph (threadpoolctl, scoped: the
caller's setting is restored after an in-process run), and onnxruntime to one thread a session
run. Each thread of computation then runs on one core, and N of them use N; BLAS's own threads buy
nothing on these small GEMMs and on a busy machine they spin against the other load (measured:
7.7x slower per sample with one competing process).
"""
from __future__ import annotations

import logging
import multiprocessing
import operator
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

import numpy as np

from tflq.errors import CalibrationError, TflqError
from tflq.ir.graph import Graph
from tflq.progress import progress

log = logging.getLogger(__name__)

SHARD_SAMPLES = 2            # samples per task: small enough to balance, large enough to amortize
THREAD_SHARD_SAMPLES = 1     # a thread's task costs ~20 us: one sample each balances best
USER_SHARD_SAMPLES = 16      # with a caller's executor each task also carries the graph
IN_FLIGHT_PER_WORKER = 2     # shards queued per worker: keeps workers busy, memory bounded
# jobs=None: start workers only if the rest would take longer than this in-process (a worker
# forked from the forkserver, started early, is ready in about 0.4 s with ResNet-18's session)
WORTH_WORKERS_SECONDS = 2.0

Sample = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class CalibrationJob:
    """What a worker needs to calibrate: the float graph (or the plan of the onnxruntime engine,
    calibration.engines, which needs no copy of it), the tensors to track, the statistics kind."""

    graph: Graph | None
    tensors: frozenset[str]
    histogram: bool
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # names the job in worker caches
    plan: object = None


def make_runner(job: CalibrationJob):
    """The runner of `job`'s engine: run(samples, first, stats) -> statistics."""
    if job.plan is not None:
        from tflq.calibration.engines import OnnxruntimeRunner

        return OnnxruntimeRunner(job.plan, job.histogram)
    from tflq.calibration.run import SampleRunner

    return SampleRunner(job.graph, job.tensors, job.histogram)


@dataclass(frozen=True)
class ShardResult:
    """A task's answer: statistics, or the message of a CalibrationError, or a bug's traceback."""

    stats: object = None
    error: str | None = None
    internal: str | None = None


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_jobs(jobs: int | None) -> None:
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive integer or None, got {jobs!r}")


_warned_no_threadpoolctl = False


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Hold the BLAS and OpenMP thread pools to one thread inside the block, then restore them."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        global _warned_no_threadpoolctl
        if not _warned_no_threadpoolctl:
            _warned_no_threadpoolctl = True
            log.warning("threadpoolctl is not installed (a dependency of tflq): BLAS keeps its "
                        "own threads during calibration, which is slow on a busy machine")
        yield
        return
    with threadpool_limits(limits=1):
        yield


# ---- the worker side ------------------------------------------------------------------------

_worker_cache: dict[str, object] = {}   # job key -> SampleRunner; one job per worker at a time
_worker_limits = None


def _runner_for(job: CalibrationJob | bytes | str):
    """The runner of `job` (a job, its pickle, or the key of the job the pool was started with)."""
    if isinstance(job, str):
        return _worker_cache[job]
    if isinstance(job, bytes):
        key = job[-32:].decode()  # see _job_payload: the key rides at the end of the pickle
        if key in _worker_cache:
            return _worker_cache[key]
        job = pickle.loads(memoryview(job)[:-32])  # no copy of the bytes
    if job.key not in _worker_cache:
        _worker_cache.clear()  # at most one graph per worker
        _worker_cache[job.key] = make_runner(job)
    return _worker_cache[job.key]


_worker_slot = -1        # this worker's row in the pool's table of (pid, shard running)
_worker_table = None


def _start_worker(box: list[bytes], table, slots) -> None:
    """Initializer of tflq's own pool: the graph once per process, BLAS at one thread for its
    life, and a row in `table` where the worker notes which shard it runs (named if it dies).
    The job's pickle comes in a list emptied here: the pool keeps its initializer's arguments
    for the worker's life, and the bytes would be a second copy of the graph."""
    global _worker_limits, _worker_slot, _worker_table
    # Ctrl-C reaches the whole process group: the calling process ends the workers (_stop), and
    # a worker interrupted while it writes its answer would leave the pool's queue half-written.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    payload = box.pop()
    try:
        from threadpoolctl import threadpool_limits

        _worker_limits = threadpool_limits(limits=1)
    except ImportError:
        pass
    with slots.get_lock():
        _worker_slot = slots.value
        slots.value += 1
    _worker_table = table
    table[2 * _worker_slot] = os.getpid()
    table[2 * _worker_slot + 1] = -1
    _runner_for(payload)


def _pool_shard(number: int, key: str, first: int, samples: list[Sample]) -> ShardResult:
    """calibrate_shard in tflq's own pool, with the shard noted in the worker's row meanwhile."""
    _worker_table[2 * _worker_slot + 1] = number
    result = calibrate_shard(key, first, samples)
    _worker_table[2 * _worker_slot + 1] = -1
    return result


def calibrate_shard(job: CalibrationJob | bytes | str, first: int, samples: list[Sample]) -> ShardResult:
    """Statistics of `samples` (numbered from `first`). The task every executor runs."""
    try:
        runner = _runner_for(job)
        with one_blas_thread():
            return ShardResult(stats=runner.run(samples, first))
    except TflqError as exc:
        return ShardResult(error=exc.message)
    except Exception:  # noqa: BLE001 - a bug: its traceback goes back to the caller
        return ShardResult(internal=traceback.format_exc())


# ---- the calling side -------------------------------------------------------------------------

def _job_payload(job: CalibrationJob) -> bytes:
    return pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL) + job.key.encode()


def _shards(samples: Iterable[Sample], size: int, first: int = 0, end: int | None = None,
            tail: int = 0) -> Iterator[tuple[int, list[Sample]]]:
    """(first sample's number, samples) of `size` samples; of one sample each for the last `tail`
    before sample number `end` (when known), so that no process waits long for the others."""
    shard: list[Sample] = []
    for sample in samples:
        shard.append(sample)
        if len(shard) == size or (end is not None and first + len(shard) > end - tail):
            yield first, shard
            first += len(shard)
            shard = []
    if shard:
        yield first, shard


def _shard_name(number: int, first: int, count: int) -> str:
    last = first + count - 1
    return f"shard {number} (sample{'s' if count > 1 else ''} {first}{f'-{last}' if count > 1 else ''})"


def _take(result: ShardResult, name: str, stats) -> None:
    if result.error is not None:
        raise CalibrationError(result.error)
    if result.internal is not None:
        raise RuntimeError(f"calibration {name} failed in a worker:\n{result.internal}")
    stats.merge(result.stats)


def start_workers_early(jobs: int | None, executor: Executor | None) -> None:
    """Start the forkserver that tflq's numpy-engine workers fork from (a fresh interpreter
    importing tflq's interpreter, about a second) now, while the model is still being loaded, if
    calibration may use it."""
    if executor is not None or jobs == 1 or available_cpus() < 2:
        return
    from multiprocessing import forkserver

    _context().set_forkserver_preload(PRELOAD)
    try:
        with _interrupts_ignored_by_children():
            forkserver.ensure_running()
    except OSError as exc:  # no processes here: calibration will say so if it needs workers
        log.debug("calibration workers could not start early: %s", exc)


@contextmanager
def _interrupts_ignored_by_children() -> Iterator[None]:
    """The forkserver (and the workers it forks) start with SIGINT blocked, a mask that exec
    keeps: Ctrl-C reaches the whole process group, and a forkserver still importing its preload
    printed a KeyboardInterrupt traceback to the terminal. The forkserver then ignores SIGINT
    itself (which drops one left pending), and so does each worker (_start_worker); this process
    handles Ctrl-C and ends the workers itself. Blocked, not ignored, here too: a Ctrl-C while
    the forkserver starts waits for the unblock and interrupts the conversion then; ignoring it
    lost it, and the conversion ran to the end and exited 0. (Only the main thread's mask is
    inherited by what it starts.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_workers_for(config) -> None:
    """start_workers_early for a conversion (a ConvertConfig) that calibrates on samples in
    tflq's numpy interpreter (onnxruntime's engine calibrates on threads, which need no start).
    The CLI calls it before it imports the converter, so the workers' imports run beside its own."""
    from importlib.util import find_spec

    from tflq.config import CalibEngine, Mode

    if config.mode == Mode.FULL and config.calib is not None:
        engine = CalibEngine(config.calib_engine)
        if engine == CalibEngine.NUMPY or (engine == CalibEngine.AUTO and find_spec("onnxruntime") is None):
            start_workers_early(config.jobs, config.executor)


# What the forkserver imports for its workers (a module missing is skipped): tflq's interpreter
# (with tflq.ops and onnx, about a second), so that a worker forked from it is ready at once.
PRELOAD = ["tflq.calibration.parallel", "tflq.calibration.run", "tflq.runtime.interpreter"]
MAIN_PROCESS_SHARDS = True  # the calling process calibrates shards too (tests turn it off)


def worth_processes(per_sample: float, left: int | None) -> int:
    """The processes (this one and workers) to calibrate `left` more samples on (None: unknown)
    that take `per_sample` seconds each here (jobs=None): all this process may use when the
    rest would take longer than WORTH_WORKERS_SECONDS in-process, else 1; at most one per shard."""
    if left is None:
        return available_cpus()
    if per_sample * left < WORTH_WORKERS_SECONDS:
        return 1
    return max(1, min(available_cpus(), -(-left // SHARD_SAMPLES)))


def _context():
    return multiprocessing.get_context("forkserver")


def run_calibration(job: CalibrationJob, samples: Iterable[Sample], jobs: int | None = None,
                    executor: Executor | None = None, show_progress: bool = False, *,
                    stats=None, runner=None, total: int | None = None):
    """Statistics of `job` over `samples` (see run.calibrate for jobs and executor), added to
    `stats` when given (its samples are numbered first); `runner`: this process's runner of the
    job when one exists already; `total`: the number of samples when `samples` cannot say."""
    from tflq.calibration.statistics import CalibrationStats

    check_jobs(jobs)
    stats = CalibrationStats(histogram=job.histogram) if stats is None else stats
    if total is None:
        total = operator.length_hint(samples, 0) or None
    done = stats.samples
    with progress(None if total is None else total + done, "Calibrating", enabled=show_progress) as bar:
        bar.update(done)
        if executor is not None:
            _run_on_executor(executor, job, _shards(samples, USER_SHARD_SAMPLES, done), stats, bar)
            return stats
        cpus = available_cpus() if jobs is None else jobs
        iterator = iter(samples)
        runner = make_runner(job) if runner is None else runner
        with one_blas_thread():
            if cpus > 1 and job.plan is not None:
                # onnxruntime's runs release the interpreter lock: threads on this process's one
                # session, which start at once and share its model
                _run_on_threads(cpus, runner, _shards(iterator, THREAD_SHARD_SAMPLES, stats.samples), stats, bar)
                return stats
            if cpus > 1 and jobs is None:
                # Time a first shard here: workers cost CPU to start, worth it only when the
                # rest of the calibration takes a while (worth_processes).
                start = time.perf_counter()
                head = [s for _, s in zip(range(SHARD_SAMPLES), iterator)]
                runner.run(head, done, stats)
                bar.update(len(head))
                per_sample = (time.perf_counter() - start) / max(len(head), 1)
                left = (total - len(head)) if total is not None else None
                cpus = worth_processes(per_sample, left) if len(head) == SHARD_SAMPLES else 1
            # the last shards: as many one-sample shards as the workers may hold queued
            shards = _shards(iterator, SHARD_SAMPLES, stats.samples, None if total is None else done + total,
                             IN_FLIGHT_PER_WORKER * SHARD_SAMPLES * max(cpus - 1, 0))
            if cpus <= 1:
                for first, shard in shards:
                    runner.run(shard, first, stats)
                    bar.update(len(shard))
            else:
                _run_on_own_pool(cpus, job, shards, stats, bar, runner,
                                 None if total is None else done + total)
    return stats


def _run_on_threads(threads: int, runner, shards, stats, bar) -> None:
    """The shards on `threads` threads of this process, each with a runner of its own on
    `runner`'s session (runner.sibling()) and statistics of its own, merged into `stats` at the
    end (exactly, as shards' are). This thread reads the samples meanwhile and keeps at most
    IN_FLIGHT_PER_WORKER shards a thread queued; a shard's error is raised in shard order, and
    on any error or interrupt the queued shards are dropped and the running ones finish (one
    shard each) before this returns."""
    from concurrent.futures import ThreadPoolExecutor

    from tflq.calibration.statistics import CalibrationStats

    local = threading.local()
    partial: list[CalibrationStats] = []
    lock = threading.Lock()
    stop = threading.Event()

    def task(first: int, shard: list[Sample]) -> int:
        if stop.is_set():
            return 0
        mine = getattr(local, "mine", None)
        if mine is None:
            mine = local.mine = (runner.sibling(), CalibrationStats(histogram=stats.histogram))
            with lock:
                partial.append(mine[1])
        mine[0].run(shard, first, mine[1])
        return len(shard)

    pending: deque[Future] = deque()
    window = threads * IN_FLIGHT_PER_WORKER
    pool = ThreadPoolExecutor(threads, thread_name_prefix="tflq-calibration")
    try:
        for first, shard in shards:
            while len(pending) >= window:
                bar.update(pending.popleft().result())
            pending.append(pool.submit(task, first, shard))
        while pending:
            bar.update(pending.popleft().result())
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
    for part in partial:
        stats.merge(part)


class _OwnPool:
    """tflq's forkserver workers for one job, being started by a thread (starting one blocks for
    about a second: the forkserver forks it and sends it the graph, measured on MobileNetV2)."""

    def __init__(self, job: CalibrationJob, workers: int) -> None:
        context = _context()
        context.set_forkserver_preload(PRELOAD)
        self.key, self.workers = job.key, workers
        self.table = context.Array("q", 2 * workers, lock=False)
        self.slots = context.Value("i", 0)
        self.job = job
        self.pool: ProcessPoolExecutor | None = None
        self.started: list = []
        self.starter = threading.Thread(target=self._start, name="tflq-calibration-workers", daemon=True)
        self.starter.start()

    def _start(self) -> None:
        """The pool and its workers (in this thread: each worker's start releases the calling
        thread's interpreter lock mostly)."""
        job, self.job = self.job, None
        try:
            self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_context(),
                                            initializer=_start_worker,
                                            initargs=([_job_payload(job)], self.table, self.slots))
            del job
            with _main_script_hidden():
                for _ in range(self.workers):  # each submit starts one more worker
                    self.started.append(self.pool.submit(_worker_ready))
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
            self.started.append(exc)


def _run_on_own_pool(jobs: int, job: CalibrationJob, shards, stats, bar, runner, end: int | None = None) -> None:
    """This process and jobs - 1 forkserver workers (no fork of a threaded parent; each gets the
    graph once). The workers' queue is kept short, and whenever it is full this process runs the
    next shard itself, so it computes while the workers start and no core waits at the end.
    `end`: the number after the last sample's, when known: once the workers hold as many samples
    each as are left to hand out, this process runs the rest itself, so that it does not wait
    for their queue to drain (ResNet-18: ~1.5 samples, 2% of --jobs 2's calibration)."""
    workers = jobs - 1 if MAIN_PROCESS_SHARDS else jobs
    own = _OwnPool(job, workers)
    table, started, starter = own.table, own.started, own.starter
    processes: dict = {}
    names: dict[int, str] = {}
    pending: deque[tuple[str, int, Future]] = deque()
    window = workers * IN_FLIGHT_PER_WORKER

    def collect() -> None:
        try:
            _collect(pending.popleft(), stats, bar, pool=True)
        except BrokenProcessPool:
            raise CalibrationError(f"a calibration worker died (killed, or out of memory?) while "
                                   f"running {_dead_workers_shard(processes, table, names, pending)}; "
                                   f"nothing was written") from None

    if not MAIN_PROCESS_SHARDS:
        starter.join()
    try:
        for number, (first, shard) in enumerate(shards):
            names[number] = _shard_name(number, first, len(shard))
            if starter.is_alive():  # workers still starting: calibrate here meanwhile
                runner.run(shard, first, stats)
                bar.update(len(shard))
                continue
            while pending and pending[0][2].done():
                collect()
            if MAIN_PROCESS_SHARDS and runs_here(len(pending), sum(c for _, c, _ in pending), window,
                                                 workers, None if end is None else end - first):
                runner.run(shard, first, stats)
                bar.update(len(shard))
                continue
            while len(pending) >= window:
                collect()
            if own.pool is None:
                break  # the workers could not start: said below
            try:
                with _main_script_hidden():  # the pool starts its workers within submit
                    future = own.pool.submit(_pool_shard, number, job.key, first, shard)
            except BrokenProcessPool:
                break  # a worker died: the shards in flight report it below
            processes.update(getattr(own.pool, "_processes", None) or {})
            pending.append((names[number], len(shard), future))
        while pending:
            collect()
        starter.join()
        failed = [e for e in started if isinstance(e, BaseException)]
        if failed and not isinstance(failed[0], BrokenProcessPool):
            raise failed[0]
    except BaseException:
        starter.join()
        if own.pool is not None:
            _stop(own.pool, pending, processes)
        raise
    pool = own.pool
    if _exiting is None:
        pool.shutdown(wait=True)
    else:  # (shutdown forgets its thread and processes unless it waits)
        _exiting.append((pool._executor_manager_thread, list((pool._processes or {}).values()),
                         pool._result_queue))
        pool.shutdown(wait=False)


def runs_here(queued: int, held: int, window: int, workers: int, left: int | None) -> bool:
    """Whether the calling process runs the next shard itself rather than queue it: when the
    workers hold `queued` shards of `held` samples (at most `window` shards), and `left` samples
    (None: unknown), the next shard's included, are still to be handed out. It does when their
    queue is full, or when they hold as many samples each as are left: then it runs the rest
    and both finish about together, rather than it waiting for their queue to drain."""
    return queued >= window or (left is not None and held >= workers * left)


_exiting: list | None = None  # in workers_exit_later: (manager thread, processes, result queue) of pools


@contextmanager
def workers_exit_later() -> Iterator[None]:
    """Within the block, calibration's workers exit (free their session and graph, about 0.1 s)
    while the caller goes on; the block ends once they have (none is left running)."""
    global _exiting
    outer, _exiting = _exiting, [] if _exiting is None else _exiting
    try:
        yield
    finally:
        if outer is None:
            pools, _exiting = _exiting, None
            for thread, processes, results in pools:
                if thread is not None:
                    thread.join()
                for process in processes:
                    process.join()
                if results is not None:
                    results.close()


def _worker_ready() -> None:
    """The first task of each worker: it starts the worker (initializer included)."""


@contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Start workers without the caller's main script. Python's forkserver and spawn workers
    first run the __main__ script again (so that objects defined there unpickle), which makes a
    script that calls tflq.convert without an `if __name__ == "__main__":` guard run itself in
    every worker and fail. tflq's workers only unpickle tflq's functions and numpy arrays, so
    the script is hidden from multiprocessing while it starts them, then put back."""
    main = sys.modules.get("__main__")
    saved = {k: v for k, v in vars(main).items() if k in ("__file__", "__spec__")} if main else {}
    if not saved:
        yield
        return
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


def _dead_workers_shard(processes: dict, table, names: dict[int, str], pending) -> str:
    """The shard the dead worker was running: its row in the table, found by its exit code
    (the pool ends the other workers with SIGTERM once one has died); when it died before its
    row said (while receiving the shard), the shards that were in flight."""
    running = {int(table[2 * i]): int(table[2 * i + 1]) for i in range(len(table) // 2)}
    for process in processes.values():
        process.join(timeout=5)
    dead = [p.pid for p in processes.values()
            if p.exitcode is not None and p.exitcode != -signal.SIGTERM]
    known = [names[running[pid]] for pid in dead if running.get(pid, -1) in names]
    if known:
        return " or ".join(known)
    return "one of " + ", ".join([name for name, _, _ in pending][:len(running)] or ["the shards"])


def _stop(pool: ProcessPoolExecutor, pending, known: dict) -> None:
    """Cancel what is queued and end the workers now (no orphans, nothing left running)."""
    for _, _, future in pending:
        future.cancel()
    processes = list({**known, **(getattr(pool, "_processes", None) or {})}.values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
    for process in processes:
        process.join(timeout=5)


def _collect(entry: tuple[str, int, Future], stats, bar, pool: bool, executor: Executor | None = None) -> None:
    name, count, future = entry
    try:
        result = future.result()
    except BrokenProcessPool:
        if pool:
            raise  # tflq's own pool names the shard of the dead worker
        raise CalibrationError(f"a worker of the calibration executor ({type(executor).__name__}) "
                               f"died while {name} was in flight (killed, or out of memory?)") from None
    except Exception as exc:  # noqa: BLE001 - whatever the executor raises is reported as its error
        if pool:
            raise
        raise CalibrationError(f"the calibration executor ({type(executor).__name__}) failed on "
                               f"{name}: {type(exc).__name__}: {exc}") from None
    if not isinstance(result, ShardResult):
        raise CalibrationError(f"the calibration executor ({type(executor).__name__}) returned "
                               f"{type(result).__name__} for {name}, not the shard's statistics")
    _take(result, name, stats)
    bar.update(count)


def _run_on_executor(executor: Executor, job: CalibrationJob, shards, stats, bar) -> None:
    """A caller's executor: each task carries the pickled graph (a worker keeps the last one)."""
    payload = _job_payload(job)
    window = IN_FLIGHT_PER_WORKER * max(1, available_cpus())
    pending: deque[tuple[str, int, Future]] = deque()
    try:
        for number, (first, shard) in enumerate(shards):
            while len(pending) >= window:
                _collect(pending.popleft(), stats, bar, pool=False, executor=executor)
            name = _shard_name(number, first, len(shard))
            try:
                future = executor.submit(calibrate_shard, payload, first, shard)
            except Exception as exc:  # noqa: BLE001
                raise CalibrationError(f"the calibration executor ({type(executor).__name__}) "
                                       f"refused {name}: {type(exc).__name__}: {exc}") from None
            pending.append((name, len(shard), future))
        while pending:
            _collect(pending.popleft(), stats, bar, pool=False, executor=executor)
    except BaseException:
        for _, _, future in pending:
            future.cancel()
        raise
