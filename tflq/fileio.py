"""The one write policy: every file tflq writes is checked against every input, then written atomically.

A `WritePolicy` is built before any work from the outputs (option -> path) and the sources (every
file or folder tflq reads). `check()` refuses, with OutputError naming the option and the path:
an empty path, a directory, a missing or unwritable folder, a path that is, or aliases (symlink,
hard link, another spelling of the same path), any source or anything inside a source folder, and
two outputs that name the same file. `write(option, data)` re-checks that output and writes it
through a temporary file in the same folder renamed into place, so a failure never leaves a partial
file, and an existing file keeps its permission bits. A device, FIFO or pipe (/dev/null, a shell's
process substitution) is written into directly: renaming onto it would replace the node itself.

Usage (any command that writes):

    policy = WritePolicy({"--output": out, "--save-stats": stats_out},
                         [Source("the input model", model), Source("calibration data", calib_dir)])
    policy.check()                       # before any work
    ...
    policy.write("--output", data)
"""
from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from typing import Iterable, Mapping

from tflq.errors import OutputError

# A source folder is walked to find hard links of its files; this bounds the walk.
MAX_SOURCE_FILES = 200_000


@dataclass(frozen=True)
class Source:
    """A path tflq reads: `what` says what it is in messages ("the input model")."""

    what: str
    path: str


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(os.path.abspath(path)))


def _identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file `path` resolves to, or None if it does not exist."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


class WritePolicy:
    """Outputs by option name, checked against each other and against every source."""

    def __init__(self, outputs: Mapping[str, str | None], sources: Iterable[Source] = ()) -> None:
        self.outputs = {option: path for option, path in outputs.items() if path is not None}
        self.sources: list[Source] = []
        self._identities: dict[tuple[int, int], Source] = {}
        self._folders: list[tuple[str, Source]] = []
        self.add_sources(sources)

    def add_sources(self, sources: Iterable[Source]) -> None:
        """Record more inputs (for example a model's external-data files, known after parsing)."""
        for source in sources:
            self.sources.append(source)
            identity = _identity(source.path)
            if identity is not None:
                self._identities.setdefault(identity, source)
            if os.path.isdir(source.path):
                self._folders.append((_real(source.path), source))
                self._add_folder_files(source)

    def _add_folder_files(self, source: Source) -> None:
        seen = 0
        for root, dirs, files in os.walk(source.path, followlinks=True):
            for name in dirs + files:
                identity = _identity(os.path.join(root, name))
                if identity is not None:
                    self._identities.setdefault(identity, source)
                seen += 1
            if seen > MAX_SOURCE_FILES:
                break

    # ---- checks ---------------------------------------------------------------------------
    def check(self) -> None:
        """Raise OutputError for the first output that may not be written."""
        for option in self.outputs:
            self.check_output(option)
        options = list(self.outputs)
        for i, first in enumerate(options):
            for second in options[i + 1:]:
                if self._same(self.outputs[first], self.outputs[second]):
                    raise OutputError(f"{self.outputs[second]}: {first} and {second} name the same file",
                                      reason_code="output_collision")

    def check_output(self, option: str) -> None:
        path = self.outputs[option]
        if not path:
            raise OutputError(f"{option}: the output path is empty", reason_code="output_empty")
        if os.path.isdir(path):
            raise OutputError(f"{path}: is a directory; give a file name for {option}",
                              reason_code="output_is_directory")
        folder = os.path.dirname(os.path.abspath(path))
        if _stream(path):  # written into, not replaced: its folder need not be writable
            if not os.access(path, os.W_OK):
                raise OutputError(f"{path}: {option} is not writable", reason_code="output_not_writable")
        elif not os.path.isdir(folder):
            raise OutputError(f"{path}: the folder {folder} for {option} does not exist",
                              reason_code="output_folder_missing")
        elif not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"{path}: the folder {folder} for {option} is not writable",
                              reason_code="output_folder_not_writable")
        identity = _identity(path)
        if identity is not None and identity in self._identities:
            source = self._identities[identity]
            raise OutputError(f"{path}: {option} would overwrite {source.what} ({source.path})",
                              reason_code="output_is_input")
        real = _real(path)
        for folder_real, source in self._folders:
            if real == folder_real or real.startswith(folder_real.rstrip(os.sep) + os.sep):
                raise OutputError(f"{path}: {option} would write inside {source.what} ({source.path})",
                                  reason_code="output_is_input")
        for source in self.sources:
            if self._same(path, source.path):
                raise OutputError(f"{path}: {option} would overwrite {source.what} ({source.path})",
                                  reason_code="output_is_input")

    @staticmethod
    def _same(a: str, b: str) -> bool:
        if _real(a) == _real(b):
            return True
        ia, ib = _identity(a), _identity(b)
        return ia is not None and ia == ib

    # ---- writing --------------------------------------------------------------------------
    def write(self, option: str, data: bytes) -> None:
        """Check `option`'s output again (the file system may have changed), then write it."""
        self.check_output(option)
        save_atomically(data, self.outputs[option])


def not_a_regular_file(path: str) -> str | None:
    """Why `path` cannot be read as a file (missing, a folder, a device such as /dev/zero, a FIFO),
    or None. Files read whole must be regular: reading /dev/zero as --stats or for tflq inspect
    grew until the OOM killer ended it (24 GB)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return "no such file"
    if stat.S_ISREG(mode):
        return None
    kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device")
    return f"is {kind}, not a file"


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _stream(path: str) -> bool:
    """True if `path` exists and is not a regular file or folder: a device (/dev/null), a FIFO or
    a pipe (a shell's process substitution, /dev/fd/N). Renaming a file onto it would replace
    the device node itself (as root, /dev/null became a regular file)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def save_atomically(data: bytes, path: str) -> None:
    """Write to a temporary file beside `path`, then rename: never leave a partial file.

    An existing file keeps its permission bits; a new one gets 0666 minus the umask. A stream
    (device, FIFO, pipe) is written into directly: it has no file to replace.
    Callers go through WritePolicy.write, which checks the path against the inputs first.
    """
    if not path:
        raise OutputError("the output path is empty", reason_code="output_empty")
    if _stream(path):
        try:
            with open(path, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise OutputError(f"{path}: cannot write ({exc.strerror})") from exc
        return
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise OutputError(f"{path}: output directory {directory} does not exist",
                          reason_code="output_folder_missing")
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = _new_file_mode()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tflq-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write to {directory} ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputError(f"{path}: cannot write ({exc.strerror})") from exc
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
