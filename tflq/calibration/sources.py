"""Calibration data: read .npy/.npz/image files or Python iterables into validated {input name: array} samples.

A *sample* is one model invocation: a dict holding, for each model input, an array of exactly
that input's ONNX-layout shape (batch included). Files may hold several samples; everything is
cut into *rows* along the leading (batch) axis and regrouped into the model's batch size, so a
file of shape [N, 3, 224, 224] feeds N samples to a model with batch 1, or N/4 to batch 4.

Accepted file shapes for an input of shape [B, *rest]:
  [B, *rest]        one sample (B rows)
  [N, *rest]        N rows (a batch with a leading sample axis)
  [N, B, *rest]     N stacked samples
  rest              one row without its batch axis
Files are read in sorted name order, headers first (shapes and dtypes are checked before any
sample is produced), data lazily (.npy files are memory-mapped), so memory stays at one sample.

Images (.png, .jpg, .jpeg) feed a 4-D input: NCHW, or NHWC when the last dimension is 1 or 3
and the second is not; images.py decodes them (RGB, or grayscale for one channel, resized to
(H, W), normalized).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from tflq.calibration.images import (ImageNormalization, decode_image, image_geometry,
                                     normalization, pillow)
from tflq.datacheck import UNREADABLE_ARCHIVE, check_npy_payload, describe_path
from tflq.errors import CalibrationError
from tflq.ir.graph import Graph
from tflq.ir.layout import onnx_shape

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 500  # samples used when no limit is given; the TFLite docs recommend 100-500
ARRAY_SUFFIXES = (".npy", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ALL_SUFFIXES = ARRAY_SUFFIXES + IMAGE_SUFFIXES


@dataclass(frozen=True)
class InputSpec:
    """A model input as calibration data must match it: ONNX layout, static shape incl. batch."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    convert: bool = False  # accept other numeric types and cast (the calib_convert option)
    bounds: tuple[int, int, str] | None = None  # an index input's valid values (Graph.index_bounds)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def batch(self) -> int:
        """Rows per sample: the leading dimension (1 for a scalar input)."""
        return self.shape[0] if self.shape else 1

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    def expected(self) -> str:
        rest = ", ".join(str(d) for d in self.row_shape)
        return f"{list(self.shape)} for one sample, or [N{', ' if rest else ''}{rest}] for N"


def graph_input_specs(graph: Graph) -> list[InputSpec]:
    """The InputSpecs of a graph's non-constant inputs, in ONNX layout (NHWC inputs mapped back)."""
    specs = []
    for name in graph.inputs:
        t = graph.tensors[name]
        if t.is_constant:
            continue
        shape = onnx_shape(t)
        specs.append(InputSpec(name, shape, t.dtype.numpy, bounds=graph.index_bounds.get(name)))
    return specs


# ---- parts: one input's rows from one file (or one Python item), loaded on demand ------------


@dataclass(frozen=True)
class _Part:
    """Rows for one input. `load()` returns an array-like of shape [rows, *row_shape] (may be a memmap)."""

    label: str          # names the file (and member) in messages
    rows: int
    load: Callable[[], np.ndarray]


def _rows_in(shape: tuple[int, ...], spec: InputSpec, label: str) -> tuple[int, tuple[int, ...]]:
    """How many rows an array of `shape` holds for `spec`, and the [rows, *row_shape] view shape."""
    rest = spec.row_shape
    if spec.shape and len(shape) == len(spec.shape) + 1 and shape[1:] == spec.shape:
        rows = shape[0] * spec.batch
    elif len(shape) == len(rest) + 1 and shape[1:] == rest:
        rows = shape[0]
    elif shape == rest:
        rows = 1
    else:
        raise CalibrationError(f"{label}: shape {list(shape)} does not fit input '{spec.name}' "
                               f"(expected {spec.expected()} samples){_channels_last_hint(shape, rest)}")
    return rows, (rows,) + rest


def _channels_last_hint(shape: tuple[int, ...], row_shape: tuple[int, ...]) -> str:
    """A hint when `shape` is the input's channels-first row shape (C, H, W...) with the channels
    moved last, with or without a leading sample axis: images saved as (H, W, C), the commonest
    mistake with data prepared for TensorFlow."""
    if len(row_shape) < 3:
        return ""
    last = tuple(row_shape[1:]) + (row_shape[0],)
    if row_shape[0] != row_shape[-1] and shape[-len(last):] == last and len(shape) - len(last) in (0, 1):
        return f"; it looks channels-last: the model reads channels first " \
               f"(np.moveaxis(a, -1, {-len(row_shape)}) reorders it)"
    return ""


def _check_dtype(dtype: np.dtype, spec: InputSpec, label: str) -> None:
    """Data must have the input's exact type; with `spec.convert` (--calib-convert), float data
    of another width feeds a float input and integers that cast safely feed an integer input."""
    if dtype == spec.dtype:
        return
    if spec.convert and (
            (spec.dtype.kind == "f" and dtype.kind == "f")
            or (dtype.kind in "iu" and spec.dtype.kind in "iu" and np.can_cast(dtype, spec.dtype, "safe"))):
        return
    if spec.dtype.kind == "f" and dtype.kind != "f":
        what = "integer" if dtype.kind in "iub" else str(dtype)
        raise CalibrationError(f"{label}: {what} data ({dtype}) for float input '{spec.name}' (expected "
                               f"{spec.dtype}, shape {spec.expected()}); convert with .astype(np.float32) "
                               "after normalizing (only images are converted automatically)")
    hint = "" if spec.convert else " (--calib-convert casts it)" if (
        (spec.dtype.kind == "f" and dtype.kind == "f")
        or (dtype.kind in "iu" and spec.dtype.kind in "iu" and np.can_cast(dtype, spec.dtype, "safe"))) else ""
    raise CalibrationError(f"{label}: data of type {dtype} for input '{spec.name}' of type "
                           f"{spec.dtype} (expected shape {spec.expected()}){hint}")


def _read_npy_header(fp, label: str) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as exc:  # noqa: BLE001 - numpy parses the header text; a corrupt one fails many ways
        raise CalibrationError(f"{label}: not a readable .npy array ({type(exc).__name__}: {exc})") from None
    if dtype.hasobject or dtype.names is not None:
        raise CalibrationError(f"{label}: holds {dtype} data; calibration data must be numeric arrays")
    return tuple(int(d) for d in shape), dtype


def _load_npy(path: str, view_shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:  # e.g. an empty array cannot be memory-mapped
        arr = np.load(path, allow_pickle=False)
    return arr.reshape(view_shape)


def _npy_part(path: str, spec: InputSpec) -> _Part:
    try:
        with open(path, "rb") as fp:
            shape, dtype = _read_npy_header(fp, path)
            check_npy_payload(path, path, fp.tell(), shape, dtype)
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    _check_dtype(dtype, spec, path)
    rows, view = _rows_in(shape, spec, path)
    return _Part(path, rows, lambda: _load_npy(path, view))


def _npz_members(path: str) -> dict[str, str]:
    """Array name -> zip member name of a .npz file."""
    try:
        with zipfile.ZipFile(path) as zf:
            return {m[:-4]: m for m in zf.namelist() if m.endswith(".npy")}
    except UNREADABLE_ARCHIVE as exc:
        raise CalibrationError(f"{path}: not a readable .npz file ({exc})") from None


def _load_npz_member(path: str, key: str, view_shape: tuple[int, ...]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return npz[key].reshape(view_shape)
    except (*UNREADABLE_ARCHIVE, KeyError) as exc:
        raise CalibrationError(f"{path}[{key}]: cannot be read ({exc})") from None


def _npz_parts(path: str, specs: Sequence[InputSpec]) -> dict[str, _Part]:
    members = _npz_members(path)
    parts = {}
    for spec in specs:
        key = spec.name
        if key not in members:
            if len(specs) == 1 and len(members) == 1:
                key = next(iter(members))
            else:
                have = ", ".join(f"'{k}'" for k in members) or "none"
                raise CalibrationError(f"{path}: no array for input '{spec.name}' (expected shape "
                                       f"{spec.expected()}; the file holds {have})")
        label = f"{path}[{key}]"
        try:
            with zipfile.ZipFile(path) as zf, zf.open(members[key]) as fp:
                shape, dtype = _read_npy_header(fp, label)
        except UNREADABLE_ARCHIVE as exc:
            raise CalibrationError(f"{label}: cannot be read ({exc})") from None
        _check_dtype(dtype, spec, label)
        rows, view = _rows_in(shape, spec, label)
        parts[spec.name] = _Part(label, rows, lambda k=key, v=view: _load_npz_member(path, k, v))
    _check_same_sample_count(parts, specs, path)
    return parts


def _check_same_sample_count(parts: Mapping[str, _Part], specs: Sequence[InputSpec], label: str) -> None:
    """Within one file (or item) every input must describe the same number of samples."""
    counts = {spec.name: parts[spec.name].rows / spec.batch for spec in specs}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"'{n}': {parts[n].rows} rows" for n in counts)
        raise CalibrationError(f"{label}: the inputs hold different numbers of samples ({detail}; "
                               f"expected {'; '.join(f'{s.name} {s.expected()}' for s in specs)})")


# ---- images ----------------------------------------------------------------------------------


def _image_part(path: str, spec: InputSpec, norm: ImageNormalization) -> _Part:
    """One image's row: the header is checked now, the pixels decoded when the row is read."""
    image_module = pillow()
    geometry = image_geometry(spec, path)
    if spec.dtype.kind != "f" and not norm.is_identity:
        raise CalibrationError(f"{path}: --mean/--std/--scale need a float input; input '{spec.name}' "
                               f"is {spec.dtype}")
    for name, values in (("mean", norm.mean), ("std", norm.std)):
        if values is not None and len(values) not in (1, geometry.channels):
            raise CalibrationError(f"--{name} has {len(values)} values; input '{spec.name}' has "
                                   f"{geometry.channels} channel(s)")
    try:
        with image_module.open(path) as image:
            image.size  # the header is parsed on open; decoding waits for load()
    except (OSError, ValueError, image_module.DecompressionBombError) as exc:
        raise CalibrationError(f"{path}: not a readable image ({exc})") from None
    return _Part(path, 1, lambda: decode_image(path, spec, geometry, norm))


# ---- finding the files -------------------------------------------------------------------------


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _list_files(directory: str, suffixes: tuple[str, ...]) -> list[str]:
    try:
        entries = sorted(os.listdir(directory))
    except OSError as exc:
        raise CalibrationError(f"{directory}: cannot be listed ({exc.strerror or exc})") from None
    files = []
    for e in entries:
        path = os.path.join(directory, e)
        if e.startswith(".") or _suffix(e) not in suffixes or os.path.isdir(path):
            continue
        what = describe_path(path)
        if what is not None:
            raise CalibrationError(f"{path}: is {what}, not a calibration file")
        files.append(path)
    return files


def _file_part(path: str, spec: InputSpec, norm: ImageNormalization) -> _Part:
    if _suffix(path) == ".npy":
        return _npy_part(path, spec)
    return _image_part(path, spec, norm)


def _scan_until(paths: Iterable[str], make: Callable[[str], Any], rows_of: Callable[[Any], int],
                wanted_rows: int) -> list:
    """Validate files in order until `wanted_rows` rows are known (files after that stay unread)."""
    result, rows = [], 0
    for path in paths:
        if rows >= wanted_rows:
            break
        item = make(path)
        result.append(item)
        rows += rows_of(item)
    return result


def _from_path(path: str, specs: Sequence[InputSpec], limit: int,
               norm: ImageNormalization) -> CalibrationData:
    names = [s.name for s in specs]
    wanted = {s.name: limit * s.batch for s in specs}
    if os.path.isfile(path):
        suffix = _suffix(path)
        if suffix not in ALL_SUFFIXES:
            raise CalibrationError(f"{path}: unknown calibration file type (use {', '.join(ALL_SUFFIXES)})")
        files: list[str] = [path]
        directory_files: dict[str, list[str]] | None = None
    elif os.path.isdir(path):
        try:
            entries = sorted(e for e in os.listdir(path) if not e.startswith("."))
        except OSError as exc:
            raise CalibrationError(f"{path}: cannot be listed ({exc.strerror or exc})") from None
        subdirs = [n for n in names if n in entries and os.path.isdir(os.path.join(path, n))]
        files = _list_files(path, ALL_SUFFIXES)
        directory_files = None
        if subdirs:
            missing = [n for n in names if n not in subdirs]
            if missing:
                raise CalibrationError(f"{path}: has subdirectories for inputs {subdirs} but none for "
                                       f"{missing}")
            if files:
                raise CalibrationError(f"{path}: holds both per-input subdirectories and calibration files "
                                       f"({os.path.basename(files[0])}, ...); keep one arrangement")
            directory_files = {}
            for n in names:
                listed = _list_files(os.path.join(path, n), (".npy",) + IMAGE_SUFFIXES)
                if not listed:
                    raise CalibrationError(f"{os.path.join(path, n)}: no calibration files "
                                           f"(.npy, {', '.join(IMAGE_SUFFIXES)}) for input '{n}'")
                directory_files[n] = listed
        elif not files:
            folders = [e for e in entries if os.path.isdir(os.path.join(path, e))]
            if folders:
                raise CalibrationError(f"{path}: holds no calibration files, and its subfolders "
                                       f"({', '.join(folders[:5])}) are not named after the model's "
                                       f"inputs {names}")
            extra = (f"; for a model with inputs {names} use one subdirectory per input or .npz files "
                     "keyed by input name" if len(names) > 1 else "")
            raise CalibrationError(f"{path}: no calibration files ({', '.join(ALL_SUFFIXES)}) found{extra}")
    else:
        raise CalibrationError(f"{path}: no such file or directory")

    if directory_files is None:
        npz = [f for f in files if _suffix(f) == ".npz"]
        if npz and len(npz) != len(files):
            raise CalibrationError(f"{path}: mixes .npz files with other calibration files; use one kind")
        if npz:
            per_file = _scan_until(npz, lambda f: _npz_parts(f, specs),
                                   lambda parts: min(parts[n].rows // s.batch for n, s in zip(names, specs)),
                                   limit)
            parts = {n: [p[n] for p in per_file] for n in names}
            return _file_data(path, specs, limit, parts, norm, any_images=False)
        if len(specs) > 1:
            raise CalibrationError(f"{path}: .npy and image files only feed single-input models; this model has "
                                   f"inputs {names}: put each input's files in a subdirectory named after it, "
                                   "or use .npz files keyed by input name")
        directory_files = {names[0]: files}

    parts = {}
    for spec in specs:
        parts[spec.name] = _scan_until(directory_files[spec.name], lambda f, s=spec: _file_part(f, s, norm),
                                       lambda part: part.rows, wanted[spec.name])
    any_images = any(_suffix(f) in IMAGE_SUFFIXES for fs in directory_files.values() for f in fs)
    return _file_data(path, specs, limit, parts, norm, any_images)


def _file_data(path: str, specs: Sequence[InputSpec], limit: int, parts: dict[str, list[_Part]],
               norm: ImageNormalization, any_images: bool) -> CalibrationData:
    if not norm.is_identity and not any_images:
        raise CalibrationError(f"{path}: --mean/--std/--scale apply to images only, and this holds none")
    available = {s.name: sum(p.rows for p in parts[s.name]) // s.batch for s in specs}
    if min(available.values()) == 0:
        spec = min(specs, key=lambda s: available[s.name])
        rows = sum(p.rows for p in parts[spec.name])
        raise CalibrationError(f"{path}: {rows} row(s) for input '{spec.name}', fewer than one sample of "
                               f"shape {list(spec.shape)}")
    counts = {n: min(c, limit) for n, c in available.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"'{n}': {c}" for n, c in available.items())
        raise CalibrationError(f"{path}: the inputs have different numbers of samples ({detail})")
    count = next(iter(counts.values()))
    for spec in specs:
        leftover = sum(p.rows for p in parts[spec.name]) - count * spec.batch
        if count < limit and leftover:
            log.warning("%s: %d row(s) of input '%s' left over: fewer than the model's batch of %d; "
                        "ignored", path, leftover, spec.name, spec.batch)
    return CalibrationData(specs, count, lambda: {n: iter(ps) for n, ps in parts.items()}, count)


# ---- Python iterables ------------------------------------------------------------------------


def _item_parts(item: Any, index: int, specs: Sequence[InputSpec]) -> dict[str, _Part]:
    label = f"calibration sample {index}"
    if isinstance(item, Mapping):
        unknown = [k for k in item if k not in {s.name for s in specs}]
        if unknown:
            raise CalibrationError(f"{label}: unknown input(s) {unknown}; the model's inputs are "
                                   f"{[s.name for s in specs]}")
        arrays = {}
        for spec in specs:
            if spec.name not in item:
                raise CalibrationError(f"{label}: no array for input '{spec.name}' (expected shape "
                                       f"{spec.expected()})")
            arrays[spec.name] = item[spec.name]
    elif isinstance(item, (list, tuple)) and len(item) == len(specs) and len(specs) > 1:
        arrays = {s.name: v for s, v in zip(specs, item)}
    elif len(specs) == 1:
        arrays = {specs[0].name: item}
    else:
        raise CalibrationError(f"{label}: expected a dict {{input name: array}} for inputs "
                               f"{[s.name for s in specs]}, got {type(item).__name__}")
    parts = {}
    for spec in specs:
        try:
            arr = np.asarray(arrays[spec.name])
        except (ValueError, TypeError) as exc:
            raise CalibrationError(f"{label}: input '{spec.name}' is not an array ({exc})") from None
        _check_dtype(arr.dtype, spec, label)
        rows, view = _rows_in(arr.shape, spec, label)
        parts[spec.name] = _Part(label, rows, lambda a=arr, v=view: a.reshape(v))
    _check_same_sample_count(parts, specs, label)
    return parts


class _SharedItems:
    """Hands out one Python item's per-input parts to each input's reader (a one-pass source)."""

    def __init__(self, items: Iterable[Any], specs: Sequence[InputSpec]) -> None:
        self._items = enumerate(items)
        self._specs = specs
        self._queues: dict[str, list[_Part]] = {s.name: [] for s in specs}

    def parts(self, name: str) -> Iterator[_Part]:
        while True:
            if not self._queues[name]:
                nxt = next(self._items, None)
                if nxt is None:
                    return
                for key, part in _item_parts(nxt[1], nxt[0], self._specs).items():
                    self._queues[key].append(part)
            yield self._queues[name].pop(0)


# ---- the sample stream --------------------------------------------------------------------------


class _RowReader:
    """Takes rows of one input from its parts, in order, casting and checking for NaN/Inf."""

    def __init__(self, spec: InputSpec, parts: Iterator[_Part]) -> None:
        self.spec = spec
        self.parts = parts
        self.current: np.ndarray | None = None
        self.label = ""
        self.position = 0
        self.pending = 0  # rows taken for a sample the data ran out before completing

    def take(self, count: int) -> np.ndarray | None:
        pieces = []
        while count > 0:
            if self.current is None or self.position >= len(self.current):
                part = next(self.parts, None)
                if part is None:
                    self.pending = sum(len(p) for p in pieces)
                    return None
                self.current, self.label, self.position = part.load(), part.label, 0
            n = min(count, len(self.current) - self.position)
            piece = np.array(self.current[self.position:self.position + n], dtype=self.spec.dtype)
            if piece.dtype.kind == "f" and not np.isfinite(piece).all():
                bad = int(np.flatnonzero(~np.isfinite(piece.reshape(n, -1)).all(axis=1))[0])
                raise CalibrationError(f"{self.label}: row {self.position + bad} contains NaN or Inf "
                                       f"(input '{self.spec.name}')")
            if self.spec.bounds is not None:
                self._check_bounds(piece)
            pieces.append(piece)
            self.position += n
            count -= n
        rows = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        return rows.reshape(self.spec.shape)

    def _check_bounds(self, rows: np.ndarray) -> None:
        """Index data must lie where the model defines the op that reads it (a token id within
        the embedding's rows): the ONNX model fails on others, the TFLite file reads a wrong row."""
        low, high, what = self.spec.bounds
        outside = (rows < low) | (rows > high)
        if outside.any():
            row = int(np.flatnonzero(outside.reshape(len(rows), -1).any(axis=1))[0])
            value = rows[row][outside[row]].flat[0]
            raise CalibrationError(f"{self.label}: row {self.position + row} of input '{self.spec.name}' "
                                   f"holds {value}, outside [{low}, {high}]: {what}")

    def has_more(self) -> bool:
        if self.current is not None and self.position < len(self.current):
            return True
        part = next(self.parts, None)
        if part is None:
            return False
        self.current, self.label, self.position = part.load(), part.label, 0
        return True


READ_AHEAD = 2  # samples read from files ahead of the one being calibrated


def read_ahead(items: Iterator, depth: int) -> Iterator:
    """`items`, produced by a thread of their own up to `depth` ahead of the consumer: reading
    and decoding files (numpy's reads and Pillow's decoding release Python's lock) overlap the
    calibration of the sample before (MobileNetV2's 100 .npy files: 0.045 s of 1.4 s). An
    exception of `items` is raised where it would have been; when the consumer stops early (an
    error, Ctrl-C, a sample limit), the thread ends after the item it is producing."""
    slots, ready = threading.Semaphore(depth), queue.SimpleQueue()
    stop = threading.Event()

    def produce() -> None:
        try:
            while True:
                slots.acquire()
                if stop.is_set():
                    return
                item = next(items, _END)
                ready.put((item, None))
                if item is _END:
                    return
        except BaseException as exc:  # noqa: BLE001 - raised again in the consumer
            ready.put((_END, exc))

    def consume() -> Iterator:
        thread = threading.Thread(target=produce, name="tflq-calibration-reader", daemon=True)
        thread.start()  # (at the first item: an iterator never started leaves no thread)
        try:
            while True:
                item, error = ready.get()
                if error is not None:
                    raise error
                if item is _END:
                    return
                slots.release()
                yield item
        finally:
            stop.set()
            slots.release()  # (wakes the producer if it waits for a slot)
            thread.join()

    return consume()


_END = object()


class CalibrationData:
    """An iterable of validated samples {input name: array of the input's exact shape}.

    `len()` is the number of samples when the source is files; for a Python iterable it is
    unknown (len raises TypeError; `operator.length_hint` gives the source's length if any).
    File sources can be iterated any number of times; a Python iterable as often as it can.
    """

    def __init__(self, specs: Sequence[InputSpec], limit: int,
                 open_parts: Callable[[], dict[str, Iterator[_Part]]], count: int | None,
                 hint: int = 0) -> None:
        self.specs = list(specs)
        self.limit = limit
        self._open_parts = open_parts
        self._count = count
        self._hint = hint

    def __len__(self) -> int:
        if self._count is None:
            raise TypeError("the number of samples of a Python iterable is not known in advance")
        return self._count

    def __length_hint__(self) -> int:
        return self._count if self._count is not None else self._hint

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        if self._count is not None and self._count > 1:
            # files: the next samples are read and decoded by a thread while this one computes
            return read_ahead(self._samples(), READ_AHEAD)
        return self._samples()  # (a Python iterable stays in the caller's thread)

    def _samples(self) -> Iterator[dict[str, np.ndarray]]:
        parts = self._open_parts()
        readers = [_RowReader(spec, parts[spec.name]) for spec in self.specs]
        for produced in range(self.limit):
            sample = {}
            for reader in readers:
                value = reader.take(reader.spec.batch)
                if value is None:
                    self._finish(readers, reader, produced)
                    return
                sample[reader.spec.name] = value
            yield sample

    @staticmethod
    def _finish(readers: list[_RowReader], exhausted: _RowReader, produced: int) -> None:
        """The data ran out: fine if every input ran out together; rows left over are dropped."""
        index = readers.index(exhausted)
        ahead = readers[:index] + [r for r in readers[index + 1:] if r.has_more()]
        if ahead:
            raise CalibrationError(f"input '{exhausted.spec.name}' ran out of data after {produced} "
                                   f"sample(s) while input '{ahead[0].spec.name}' has more")
        if exhausted.pending:
            log.warning("%d row(s) of input '%s' left over: fewer than the model's batch of %d; ignored",
                        exhausted.pending, exhausted.spec.name, exhausted.spec.batch)
        if produced == 0:
            raise CalibrationError(f"no complete calibration sample for input '{exhausted.spec.name}' "
                                   f"(expected {exhausted.spec.expected()} samples)")


def load_samples(source: Any, specs: Sequence[InputSpec], limit: int | None = None,
                 mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
                 scale: float | None = None) -> CalibrationData:
    """Calibration samples from `source`, checked against `specs` (the model's inputs, ONNX layout).

    source: a directory, a .npy/.npz/.png/.jpg file, a Python iterable of {input name: array}
    (a bare array, or a tuple in input order, also works), or one such dict.
    A directory holds .npy files or images for a single-input model, .npz files keyed by input
    name, or one subdirectory per input name holding .npy files or images. Files are read in
    sorted name order. limit: at most this many samples (default DEFAULT_LIMIT = 500).
    mean, std, scale: image normalization, x = (pixel * scale - mean[c]) / std[c] with pixels
    0..255 in RGB order; images only.
    Shapes and dtypes of files are checked here, before any data is read; NaN/Inf and the
    items of a Python iterable are checked as samples are produced. Raises CalibrationError.
    """
    if not specs:
        raise CalibrationError("the model has no inputs to calibrate")
    limit = DEFAULT_LIMIT if limit is None else int(limit)
    if limit < 1:
        raise CalibrationError(f"the number of calibration samples must be >= 1, got {limit}")
    norm = normalization(mean, std, scale)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(os.fspath(source), specs, limit, norm)
    if not norm.is_identity:
        raise CalibrationError("--mean/--std/--scale apply to image files only, not to arrays given in Python")
    if isinstance(source, (Mapping, np.ndarray)):
        source = [source]
    if not isinstance(source, Iterable):
        raise CalibrationError(f"calibration data must be a path or an iterable of {{input name: array}}, "
                               f"got {type(source).__name__}")
    hint = min(limit, len(source)) if hasattr(source, "__len__") else 0

    def open_parts() -> dict[str, Iterator[_Part]]:
        shared = _SharedItems(source, specs)
        return {s.name: shared.parts(s.name) for s in specs}

    return CalibrationData(specs, limit, open_parts, None, hint)
