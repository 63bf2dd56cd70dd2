"""Generated from schemas/tflite.fbs by `make schema`; never edit by hand."""
