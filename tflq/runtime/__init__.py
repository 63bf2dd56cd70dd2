"""Running tflq graphs in numpy with each op's reference kernel."""
