"""The statistics file format (--save-stats / --stats): a .npz of every tensor's running statistics,
tagged with a fingerprint of the graph they were gathered on. No pickles."""
from __future__ import annotations

import hashlib
import io
import os
from typing import Iterable

import numpy as np

from tflq.calibration.statistics import NUM_BINS, CalibrationStats, TensorStats
from tflq.errors import CalibrationError
from tflq.fileio import save_atomically
from tflq.ir.graph import Graph
from tflq.datacheck import UNREADABLE_ARCHIVE, check_statistics

STATS_FORMAT = 1                           # bump when the .npz layout changes


def save_stats(stats: CalibrationStats, path: str, fingerprint: str) -> None:
    """Write `stats_bytes` to `path` atomically (the caller has checked it against its inputs)."""
    save_atomically(stats_bytes(stats, fingerprint), path)


def stats_bytes(stats: CalibrationStats, fingerprint: str) -> bytes:
    """The statistics as a .npz (no pickles) tagged with the model's fingerprint."""
    names = sorted(stats.tensors)
    partial = [n for n in names if not stats.tensors[n].has_histogram]
    if partial:
        raise CalibrationError(f"statistics gathered for minmax only (no histogram of tensor "
                               f"'{partial[0]}') cannot be saved")
    arrays = {
        "format": np.array(STATS_FORMAT, np.int64),
        "num_bins": np.array(NUM_BINS, np.int64),
        "fingerprint": np.array(fingerprint),
        "samples": np.array(stats.samples, np.int64),
        "names": np.array(names, dtype=np.str_) if names else np.zeros(0, np.str_),
        "minimum": np.array([stats.tensors[n].minimum for n in names], np.float64),
        "maximum": np.array([stats.tensors[n].maximum for n in names], np.float64),
        "exponent": np.array([stats.tensors[n].exponent for n in names], np.int64),
        "counts": np.array([stats.tensors[n].counts for n in names], np.int64).reshape(len(names), NUM_BINS),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def load_stats(path: str, fingerprint: str) -> CalibrationStats:
    """Read statistics written by `save_stats`; CalibrationError unless they belong to this model."""
    from tflq.fileio import not_a_regular_file

    problem = not_a_regular_file(path)
    if problem:
        raise CalibrationError(f"{path}: {problem}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {key: npz[key] for key in npz.files}
    except UNREADABLE_ARCHIVE as exc:
        raise CalibrationError(f"{path}: not a tflq statistics file ({exc})") from None
    expected = {"format", "num_bins", "fingerprint", "samples", "names", "minimum", "maximum",
                "exponent", "counts"}
    if not isinstance(data, dict) or not expected <= set(data):
        raise CalibrationError(f"{path}: not a tflq statistics file (written by --save-stats)")
    try:
        version, bins = int(data["format"]), int(data["num_bins"])
    except (TypeError, ValueError):
        raise CalibrationError(f"{path}: malformed statistics file (format and bin count)") from None
    if version != STATS_FORMAT or bins != NUM_BINS:
        raise CalibrationError(f"{path}: statistics format {int(data['format'])} with "
                               f"{int(data['num_bins'])} bins; this tflq reads format {STATS_FORMAT} "
                               f"with {NUM_BINS} bins")
    if str(data["fingerprint"]) != fingerprint:
        raise CalibrationError(f"{path}: statistics belong to another model (or other conversion "
                               f"options): fingerprint {str(data['fingerprint'])[:16]}, this model "
                               f"{fingerprint[:16]}")
    try:
        names = [str(n) for n in np.atleast_1d(data["names"])] if data["names"].size else []
        check_statistics(path, names, data["minimum"], data["maximum"], data["exponent"],
                         data["counts"], data["samples"], NUM_BINS)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: malformed statistics file ({exc})") from None
    counts = data["counts"]
    tensors = {n: TensorStats(float(data["minimum"][k]), float(data["maximum"][k]),
                              int(data["exponent"][k]), counts[k].astype(np.int64))
               for k, n in enumerate(names)}
    return CalibrationStats(tensors, int(data["samples"]))


def merge_files(paths: Iterable[str], fingerprint: str,
                per_file: list[tuple[str, int]] | None = None) -> CalibrationStats:
    """Load and merge statistics files (the result equals one run over all their samples).
    per_file, when given, receives (path, sample count) of each file, in order."""
    paths = list(paths)
    if not paths:
        raise CalibrationError("no statistics files given")
    _refuse_repeats([os.fspath(p) for p in paths])
    result = CalibrationStats()
    for path in paths:
        loaded = load_stats(os.fspath(path), fingerprint)
        if per_file is not None:
            per_file.append((os.fspath(path), loaded.samples))
        result.merge(loaded)
    return result


def _refuse_repeats(paths: list[str]) -> None:
    """A file given twice (or two copies of one) would count its samples twice: the merged
    histograms and sample count would no longer be those of one run over the samples."""
    from tflq.fileio import not_a_regular_file

    seen: dict[tuple, str] = {}
    for path in paths:
        problem = not_a_regular_file(path)
        if problem:  # (read whole below: /dev/zero would never end)
            raise CalibrationError(f"{path}: {problem}")
        try:
            info = os.stat(path)
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
        except OSError:
            continue  # load_stats names the unreadable file
        for key in ((info.st_dev, info.st_ino), digest):
            if key in seen:
                same = "is the same file as" if isinstance(key, tuple) else "holds the same statistics as"
                raise CalibrationError(f"statistics file '{path}' {same} '{seen[key]}': its samples "
                                       "would be counted twice")
            seen[key] = path


def graph_fingerprint(graph: Graph) -> str:
    """A hex digest of what the statistics depend on: the ops, the activation tensors' names,
    shapes, dtypes and layouts, and the constants' values."""
    digest = hashlib.sha256()
    digest.update(repr((graph.inputs, graph.outputs)).encode())
    for op in graph.ops:
        digest.update(repr((op.kind, op.inputs, op.outputs, op.attrs)).encode())
    for name in sorted(graph.tensors):
        t = graph.tensors[name]
        digest.update(repr((name, t.shape, t.dtype.name, t.layout.value, t.is_constant)).encode())
        if t.is_constant:
            digest.update(np.ascontiguousarray(t.data).tobytes())
    return digest.hexdigest()
