"""The supported-op table, generated from the registry: `tflq ops`, and README.md via `make readme`."""
from __future__ import annotations

import sys

from tflq import ops as registry
from tflq.ops.base import OpSpec


def _rule(spec: OpSpec) -> str:
    name = type(spec.quant).__name__
    types = "/".join(sorted(d.name.lower() for d in spec.quant.dtypes)) or "-"
    return f"{name} ({types})"


def support_table(markdown: bool = False) -> str:
    rows = []
    for spec in registry.all_specs():
        onnx = ", ".join(sorted(t for t, s in registry.onnx_types().items() if s is spec)) or "(emitted)"
        rows.append((spec.kind, onnx, _rule(spec), type(spec.layout).__name__))
    header = ("TFLite op", "ONNX ops imported", "quantization", "layout")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*r) for r in rows])

START, END = "<!-- ops-table:start -->", "<!-- ops-table:end -->"


def with_table(readme: str) -> str:
    """README text with the generated table between the markers."""
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{support_table(markdown=True)}\n{END}{tail}"


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "README.md"
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(with_table(text))
