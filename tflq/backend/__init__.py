"""Reading and writing TFLite flatbuffers."""
