"""tflq's graph IR: tensors by name, TFLite op kinds, quantization parameters."""
