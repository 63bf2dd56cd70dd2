"""Graph passes, grouped in phases: NORMALIZE -> LAYOUT -> FUSE -> QUANTIZE -> CLEANUP."""
