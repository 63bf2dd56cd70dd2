"""Writing output files safely: to a temporary file beside the target, then renamed into place."""
from __future__ import annotations

import os
import tempfile

from tflq.errors import OutputError


def save_atomically(data: bytes, path: str) -> None:
    """Write to a temporary file beside `path`, then rename: never leave a partial file."""
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise OutputError(f"{path}: output directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tflq-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write to {directory} ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputError(f"{path}: cannot write ({exc.strerror})") from exc
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
