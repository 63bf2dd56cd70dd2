"""The `tflq` command's entry point (and `python -m tflq`'s): the CLI imported under a Ctrl-C
guard. Importing it (click, numpy, the converter's commands) takes a few tenths of a second, and
a Ctrl-C then printed Python's KeyboardInterrupt traceback; now it is the CLI's own one line and
exit code (tflq.cli: 130, nothing written). Nothing here imports more than sys."""
from __future__ import annotations

import sys

EXIT_INTERRUPTED = 130  # as tflq.cli's, which this module must not import before its guard


def main() -> None:
    try:
        from tflq.cli import main as cli
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted; nothing was written\n")
        sys.exit(EXIT_INTERRUPTED)
    cli()
