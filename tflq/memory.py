"""Give memory that a phase freed back to the operating system before the next one grows.

glibc keeps freed blocks of up to 32 MB in its heap (its mmap threshold rises to the largest
block freed), and a large model frees hundreds of them between phases: the ONNX file's weights
once the graph holds its own, the float weights once they are quantized. Freed, they are only
reused by later allocations of their sizes; the flatbuffer builder and the file's bytes (one block
each, the size of the model) are new pages on top of them. On a BERT-base-width model (210 MB of
weights) 350 MB of RSS were such blocks when the writer started. malloc_trim(0) returns the free
pages in the middle of the heap too (glibc 2.8 and later). Elsewhere (macOS, musl) this does nothing.
"""
from __future__ import annotations

import ctypes
import functools
import sys


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> None:
    """Return the C heap's free pages to the operating system (glibc; elsewhere a no-op)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
