"""The error types tflq raises, each carrying machine-readable reason codes and per-node diagnostics."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in the input, tied to the ONNX node (or file, or tensor) it concerns."""

    node: str
    op_type: str
    reason_code: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"node '{self.node}' ({self.op_type})" if self.op_type else f"'{self.node}'"
        text = f"{where}: {self.message} (reason: {self.reason_code})"
        return f"{text}. {self.hint}" if self.hint else text


class TflqError(Exception):
    """Base class of every error tflq reports to a user; the CLI prints it without a traceback."""

    reason_code = "error"

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None,
                 reason_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics = list(diagnostics or [])
        if reason_code is not None:
            self.reason_code = reason_code

    def __str__(self) -> str:
        return self.message


class UnsupportedModelError(TflqError):
    """The model uses something tflq cannot convert (an op, an attribute value, a dtype)."""

    reason_code = "unsupported"


class InvalidModelError(TflqError):
    """The input file is not a valid ONNX model (truncated, malformed, inconsistent)."""

    reason_code = "invalid_model"


class ResourceLimitError(TflqError):
    """A tensor or a piece of work exceeds a limit (--max-tensor-bytes, folding bounds, int32 dims)."""

    reason_code = "resource_limit"


class CalibrationError(TflqError):
    """Calibration data is missing, malformed or does not fit the model."""

    reason_code = "calibration"


class InvalidConfigError(TflqError):
    """The options given do not make sense together."""

    reason_code = "invalid_config"


class OutputError(TflqError):
    """The output file cannot be written."""

    reason_code = "output"


class Unsupported(UnsupportedModelError):
    """Raised by an op importer for one node; the loader gathers these into one UnsupportedModelError.

    `node` is the onnx NodeProto being imported, or None for a problem of a graph input or output
    (or found outside any node): then `tensor` names the value, so every refusal names its subject.
    One that escapes the loader is still a TflqError: one line naming the node or tensor, exit 1.
    """

    def __init__(self, node, reason_code: str, message: str, hint: str = "", tensor: str = "") -> None:
        if node is not None:
            diagnostic = Diagnostic(node.name, node.op_type, reason_code, message, hint)
        else:
            diagnostic = Diagnostic(tensor or "(model)", "", reason_code, message, hint)
        super().__init__(str(diagnostic), reason_code=reason_code)
        self.diagnostic = diagnostic

    def __reduce__(self):
        d = self.diagnostic
        return _unsupported_from_diagnostic, (d,)


def _unsupported_from_diagnostic(diagnostic: Diagnostic) -> Unsupported:
    exc = Unsupported(None, diagnostic.reason_code, diagnostic.message, diagnostic.hint)
    exc.diagnostic = diagnostic
    exc.message = str(diagnostic)
    exc.args = (exc.message,)
    return exc
