"""Sequence models as torch.onnx.export writes them, end to end: tiny transformers encoders and
decoders (ALBERT, RoBERTa, ELECTRA, ERNIE, RoFormer, Funnel, MobileBERT, SqueezeBERT, ConvBERT,
BART, mBART, Pegasus, Pegasus-X (block-local attention), M2M100, Marian, mT5, LongT5 (local attention), OPT, GPT-Neo, GPT-NeoX, GPT-J,
CodeGen, GPTBigCode, BLOOM, Falcon, Qwen2, Qwen3, Phi, Phi-3, Mistral, Gemma, Gemma 2, OLMo,
Cohere, StableLM, ModernBERT), speech models (SEW, SEW-D, WavLM, Data2Vec-audio, UniSpeech,
Wav2Vec2-Conformer with relative and rotary positions, Speech2Text with its int64 length
arithmetic), and torch's own layers (bidirectional stacked LSTM/GRU with initial states, nn.RNN
relu/tanh, a masked LSTM, nn.TransformerEncoder/Decoder and nn.MultiheadAttention with key padding
masks, Conv1d / ConvTranspose1d stacks, an STFT-free log-mel front end, masked embedding means and
EmbeddingBag), exported once by tests/sequence_models/export.py: transformers' models by the dynamo
exporter ("_ts": also TorchScript, where its graph differs in a way that matters), torch's layers
by TorchScript ("_dynamo": also dynamo). The runner is tests/_families.py's.

Inputs are what the models take: int64 token ids and attention masks (each sample keeps its first
2..8 positions), boolean key padding masks, float features. Per model, against onnxruntime on
the worst of SAMPLES inputs: float within FLOAT_SQNR; weights-only int8, full uint8 and full
int8 files run in LiteRT above a floor a few dB under what they gave (the measured values are
recorded as properties); in full int8 only the ops FLOAT_IN_INT8 names stay float (the
attention masks, their sums and the softmax never). int16x8 for the few where it is cheap.
A CLI conversion reads calibration samples as per-input folders of int64 and bool .npy files.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from tests._families import feeds as _feeds
from tests._families import worst_db as _worst
from tests.conftest import run_onnxruntime
from tflq.config import ConvertConfig
from tflq.ir.dtypes import DType
from tflq.pipeline import convert

HERE = os.path.join(os.path.dirname(__file__), "sequence_models")
SAMPLES = 4
CALIB = 16
FLOAT_SQNR = 80.0
WEIGHTS_FLOOR = 22.0
FULL_FLOOR = 14.0
MODELS = sorted(f[:-5] for f in os.listdir(HERE) if f.endswith(".onnx"))
# full int8: the ops kept float, each for its reason (every other op runs integer)
FLOAT_IN_INT8 = {
    # the int64 attention mask to float (1 - mask, times the fill)
    "funnel": frozenset({"CAST"}), "funnel_ts": frozenset({"CAST"}),
    # the inverted padding mask's 1 - mask, read as a bool (float on integers, plan._integer_arithmetic)
    "pegasus_x": frozenset({"CAST", "SUB"}),
    "bloom": frozenset({"CAST"}),  # ALiBi's int64 positions (the mask's cumsum) to float
    "masked_lstm": frozenset({"DIV"}),  # by the kept count
    # the subsampled lengths' int64 division: float32 estimates between int64 tensors, exact
    "speech2text": frozenset({"CAST", "DIV", "ROUND"}), "speech2text_ts": frozenset({"CAST", "DIV", "ROUND"}),
    "embedding_masked_mean": frozenset({"CAST", "DIV"}), "embedding_masked_mean_dynamo": frozenset({"CAST", "DIV"}),
}
FLOORS = {}  # model -> full-mode floor below FULL_FLOOR (measured lower for the model's own reasons)
INT16X8 = ("lstm_bidirectional_states", "conv1d_stack", "mel_front_end", "albert")
INT16X8_FLOOR = 35.0


@pytest.mark.parametrize("name", MODELS)
def test_model(name, record_property):
    path = os.path.join(HERE, f"{name}.onnx")
    model = onnx.load(path)
    samples = [_feeds(model, seed) for seed in range(SAMPLES)]
    expected = [run_onnxruntime(path, feeds) for feeds in samples]
    calib = [_feeds(model, 100 + seed) for seed in range(CALIB)]
    worst = _worst(path, convert(ConvertConfig(model=path)), samples, expected)
    record_property("float_worst_db", round(worst, 1))
    assert worst >= FLOAT_SQNR, f"float: worst sample {worst:.1f} dB"
    floor = FLOORS.get(name, FULL_FLOOR)
    modes = [("weights_int8", dict(mode="weights-only", dtype=DType.INT8, min_weight_elements=256), WEIGHTS_FLOOR),
             ("full_uint8", dict(mode="full", dtype=DType.UINT8, calib=calib), floor),
             ("full_int8", dict(mode="full", dtype=DType.INT8, calib=calib), floor)]
    if name in INT16X8:
        modes.append(("full_int16x8", dict(mode="full", dtype=DType.INT16, calib=calib), INT16X8_FLOOR))
    for label, config, least in modes:
        report = convert(ConvertConfig(model=path, **config))
        if label == "full_int8":
            kept = {op.kind for op in report.float_ops}
            assert kept <= FLOAT_IN_INT8.get(name, frozenset()), report.float_ops
        worst = _worst(path, report, samples, expected)
        record_property(f"{label}_worst_db", round(worst, 1))
        assert worst >= least, f"{label}: worst sample {worst:.1f} dB"


def test_cli_reads_integer_and_boolean_samples(tmp_path):
    """tflq convert --calib DIR with a folder per input: int64 token ids and attention mask, and
    a boolean key padding mask, as .npy files of the input's own type."""
    from click.testing import CliRunner

    from tflq.cli import main

    for name in ("embedding_masked_mean", "multihead_attention"):
        path = os.path.join(HERE, f"{name}.onnx")
        model = onnx.load(path)
        for seed in range(8):
            for key, value in _feeds(model, 100 + seed).items():
                os.makedirs(tmp_path / name / key, exist_ok=True)
                np.save(tmp_path / name / key / f"{seed}.npy", value)
        out = tmp_path / f"{name}.tflite"
        result = CliRunner().invoke(main, ["convert", path, "-o", str(out), "--mode", "full", "--dtype", "int8",
                                           "--calib", str(tmp_path / name), "-q"])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0
