"""Accuracy tooling: a .tflite measured against its float ONNX model, per output and per layer."""
