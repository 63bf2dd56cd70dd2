"""Calibration and quantization: choosing 8-bit grids and rewriting the graph to use them."""
