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

    A QDQ model that quantizes only its weights (DequantizeLinear of integer constants, no
    activation grid: a weight-compressed export) is a weights-only model: that mode is inferred,
    storing the graph's own integers (the constants it keeps float stay float). `--mode
    weights-only` stores the graph's integers too and quantizes the rest by tflq's rules; `--mode
    full` needs --calib or --stats, as the graph gives no activation its range. Blocked weights
    (block_size, onnxruntime's 4-bit MatMul QDQ and MatMulNBits) make such a model too: TFLite has
    no grid for their blocks, so they are stored on a per-channel int8 grid of tflq's.
    """
    if qdq is None:
        return (config if config.mode is not None else replace(config, mode=Mode.FLOAT)), None
    if not qdq.activation_types and (qdq.constants or qdq.blocked):
        return _weights_only_qdq(config, qdq)
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


def _weights_only_qdq(config: ConvertConfig, qdq: QdqModel) -> tuple[ConvertConfig, str | None]:
    from tflq.quantize.qdq import choose_dtype

    what = f"the model quantizes only its weights ({qdq.describe()})"
    if config.mode is None:
        stored = ("storing the graph's own weight integers" if qdq.constants else
                  "storing its weights in 8 bits")
        return replace(config, mode=Mode.WEIGHTS_ONLY, dtype=choose_dtype(qdq, config.dtype),
                       only_graph_weights=True), (
            f"{what}: --mode weights-only inferred, {stored} (the constants it keeps float stay "
            f"float; --mode weights-only quantizes them too){_blocked_note(qdq)}")
    if config.mode == Mode.WEIGHTS_ONLY:
        return replace(config, dtype=choose_dtype(qdq, config.dtype)), None
    if config.mode == Mode.FULL and config.calib is None and not config.stats:
        raise InvalidConfigError(
            f"{config.model}: {what}, so no activation has a range: --mode full needs --calib DIR "
            f"(or --stats); omit --mode for a weights-only file with the graph's integers")
    if config.mode in (Mode.FLOAT, Mode.FLOAT16):
        return config, (f"{what}: --mode {config.mode.value} stores the values they stand for in float "
                        f"(what the ONNX graph computes); omit --mode for 8-bit weights")
    return config, None


def _blocked_note(qdq: QdqModel) -> str:
    """What becomes of a weights-only model's blocked weights, for the mode's note."""
    if not qdq.blocked:
        return ""
    kinds = ", ".join(sorted({b.describe() for b in qdq.blocked.values()}))
    return (f"; its {len(qdq.blocked)} blocked weights ({kinds}) have no TFLite grid: they are "
            f"requantized to per-channel int8")


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
