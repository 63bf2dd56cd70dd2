"""What the tiny-model export scripts share (tests/sequence_models/export.py,
tests/speech_models/export.py and the one reusing it, tests/dense_vision_models/export.py).
They run as scripts under the export venv: each puts the repository root on sys.path first."""
from __future__ import annotations


def strip_metadata(path: str) -> None:
    """Drop the exporter's per-node metadata (stack traces, module paths) from the .onnx file at
    `path`, in place: most of the file's bytes."""
    import onnx

    model = onnx.load(path)
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        del vi.metadata_props[:]
    for init in model.graph.initializer:
        del init.metadata_props[:]
    del model.metadata_props[:]
    onnx.save(model, path)
