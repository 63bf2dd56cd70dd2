"""Which conversion mode a request means, once the model's QDQ facts are known."""
from __future__ import annotations

from dataclasses import replace

from tflq.config import ConvertConfig, Mode
from tflq.errors import InvalidConfigError
from tflq.ir.qdq import QdqModel


def resolve_mode(config: ConvertConfig, qdq: QdqModel | None) -> tuple[ConvertConfig, str | None]:
    """The config with a definite mode, and a note when the model decided it.

    A QDQ model is converted to full integer with its own parameters unless a mode is given.
    `--mode float` keeps its quantization as FAKE_QUANT ops (a float model that computes what the
    ONNX graph computes); weights-only is refused, since the graph already fixes every weight's
    quantization and dropping the activations' would change the model's numbers.
    """
    if qdq is None:
        return (config if config.mode is not None else replace(config, mode=Mode.FLOAT)), None
    if config.mode is None:
        return replace(config, mode=Mode.FULL), (
            "the model is quantized (QuantizeLinear/DequantizeLinear): --mode full inferred, "
            "with the graph's own scales and zero points (no calibration data needed)")
    if config.mode == Mode.WEIGHTS_ONLY:
        raise InvalidConfigError(
            f"{config.model}: the model is already quantized ({qdq.describe()}); --mode "
            f"weights-only cannot keep that quantization. Omit --mode (or use --mode full) for an "
            f"integer model with the graph's own parameters, or --mode float for a float model "
            f"that simulates them with FAKE_QUANT ops")
    if config.mode in (Mode.FLOAT, Mode.FLOAT16):
        return config, (f"{qdq.describe()}: --mode {config.mode.value} keeps them as FAKE_QUANT ops "
                        f"(the file computes what the ONNX graph computes); omit --mode for an "
                        f"integer model")
    return config, None


def unused_option_notes(config: ConvertConfig) -> list[str]:
    """Notes naming the options given that the settled mode does not use (they were ignored
    silently: `--calib data/` without `--mode full` wrote a float file and said nothing)."""
    if config.mode == Mode.FULL:
        return []
    full_only = [("--float-ops", bool(config.float_ops)), ("--int16-ops", bool(config.int16_ops)),
                 ("--target-sqnr", config.target_sqnr is not None), ("--eval-data", config.eval_data is not None),
                 ("--accept-below-target", config.accept_below_target), ("--io-type", config.io_type is not None),
                 ("--rounding", config.rounding == "adaround")]
    if config.mode == Mode.FLOAT:  # (float16 says so itself; weights-only corrects biases on --calib)
        full_only[:0] = [("--calib", config.calib is not None), ("--stats", bool(config.stats)),
                         ("--save-stats", bool(config.save_stats))]
    given = [flag for flag, value in full_only if value]
    if not given:
        return []
    written = ", and no statistics file is written" if config.save_stats and config.mode == Mode.FLOAT else ""
    return [f"{', '.join(given)} unused: they are for --mode full (this conversion is --mode "
            f"{config.mode.value}{written})"]
