"""Calibration: sample sources (sources.py, images.py), running statistics (statistics.py) and their
file format (stats_file.py), and the run over samples (run.py)."""
