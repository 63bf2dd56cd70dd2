"""Export the tiny sequence models tests/test_sequence_families.py converts (run once; the .onnx
files are committed).

Random weights from fixed seeds, tiny dimensions, built from transformers configs or torch
modules (no download), attention in its eager form:

    .venv-export/bin/python tests/sequence_models/export.py [NAME ...]

Each model is exported by the exporter named in MODELS: torch.onnx.export's default (dynamo,
opset 18) or TorchScript (dynamo=False, opset 17), both where their graphs differ in a way that
matters (masks, loops, reshapes). Text models take int64 input_ids and attention_mask [1, 8];
audio models float input_values [1, 400] (Speech2Text filterbank features [1, 32, 16] and an
attention mask); torch modules the inputs their forward names.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys

# transformers imports torchvision when it is installed, and one built for another torch fails at
# import (operator torchvision::nms does not exist); no model here needs it
sys.modules.setdefault("torchvision", None)

import torch  # noqa: E402
import transformers as tf  # noqa: E402
from torch import nn  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository root: tests._export
from tests._export import strip_metadata  # noqa: E402
SEQ, VOCAB = 8, 64
BERT = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=32)
LLM = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
SEQ2SEQ = dict(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
               decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
               pad_token_id=1, decoder_start_token_id=2)
AUDIO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
             num_conv_pos_embedding_groups=4)
CONFORMER = dict(conv_depthwise_kernel_size=7, max_source_positions=64, **AUDIO)


def _hf(config_class, model_class, kind: str, **config):
    def build():
        config.setdefault("attn_implementation", "eager")
        if kind in ("decoder", "seq2seq", "speech2text"):
            config.setdefault("use_cache", False)
        return model_class(config_class(**config)), kind
    return build


HF = {
    # shared layers, a factorized embedding
    "albert": _hf(tf.AlbertConfig, lambda c: tf.AlbertModel(c, add_pooling_layer=False), "text",
                  embedding_size=16, **BERT),
    # position ids from the padding mask (cumsum of ids != pad)
    "roberta": _hf(tf.RobertaConfig, lambda c: tf.RobertaModel(c, add_pooling_layer=False), "text",
                   pad_token_id=1, **BERT),
    "electra": _hf(tf.ElectraConfig, tf.ElectraModel, "text", embedding_size=16, **BERT),
    # bottlenecks, stacked feed-forward networks, NoNorm (an elementwise affine, no statistics)
    "mobilebert": _hf(tf.MobileBertConfig, lambda c: tf.MobileBertModel(c, add_pooling_layer=False), "text",
                      vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=32, embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16,
                      num_feedforward_networks=2, max_position_embeddings=32),
    # grouped 1-D convolutions for Q, K, V and the feed-forward layers, on [N, C, W]
    "squeezebert": _hf(tf.SqueezeBertConfig, tf.SqueezeBertModel, "text", embedding_size=32, q_groups=2,
                       k_groups=2, v_groups=2, post_attention_groups=2, intermediate_groups=4,
                       output_groups=4, **BERT),
    # span-based dynamic convolution beside the attention heads (an unfold by Pad + Gather)
    "convbert": _hf(tf.ConvBertConfig, tf.ConvBertModel, "text", embedding_size=32, head_ratio=2,
                    conv_kernel_size=3, num_groups=1, **BERT),
    # encoder + decoder: causal self-attention, cross-attention, learned positions with an offset
    "bart": _hf(tf.BartConfig, tf.BartModel, "seq2seq", **SEQ2SEQ),
    "marian": _hf(tf.MarianConfig, tf.MarianModel, "seq2seq", **SEQ2SEQ),  # sinusoidal positions
    "opt": _hf(tf.OPTConfig, tf.OPTModel, "decoder", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
               ffn_dim=64, num_attention_heads=4, max_position_embeddings=32, word_embed_proj_dim=32),
    # a global and a local (window 4) attention layer; the causal mask selected, the padding added
    "gpt_neo": _hf(tf.GPTNeoConfig, tf.GPTNeoModel, "decoder", vocab_size=VOCAB, hidden_size=32, num_layers=2,
                   num_heads=4, intermediate_size=64, max_position_embeddings=32,
                   attention_types=[[["global", "local"], 1]], window_size=4),
    "bloom": _hf(tf.BloomConfig, tf.BloomModel, "decoder", vocab_size=VOCAB, hidden_size=32, n_layer=2,
                 n_head=4),  # ALiBi: a bias from the mask's cumsum
    # multi-query attention, parallel attention and MLP, rotary positions
    "falcon": _hf(tf.FalconConfig, tf.FalconModel, "decoder", vocab_size=VOCAB, hidden_size=32,
                  num_hidden_layers=2, num_attention_heads=4, new_decoder_architecture=False,
                  multi_query=True, parallel_attn=True, alibi=False),
    "qwen2": _hf(tf.Qwen2Config, tf.Qwen2Model, "decoder", **LLM),  # biased Q/K/V, RMSNorm, GQA
    "phi": _hf(tf.PhiConfig, tf.PhiModel, "decoder", vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
               num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32,
               partial_rotary_factor=0.5),  # rotary on half of each head
    "mistral": _hf(tf.MistralConfig, tf.MistralModel, "decoder", sliding_window=4, **LLM),
    "gemma": _hf(tf.GemmaConfig, tf.GemmaModel, "decoder", head_dim=8, **LLM),  # GeGLU, RMSNorm (1 + w)
    # alternating global and sliding-window (4) attention, rotary, GeGLU, no biases
    "modernbert": _hf(tf.ModernBertConfig, tf.ModernBertModel, "text", vocab_size=VOCAB, hidden_size=32,
                      intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                      max_position_embeddings=32, global_attn_every_n_layers=2, local_attention=4,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2),
    # squeezed (strided) transformer over the conv features, upsampled back
    "sew": _hf(tf.SEWConfig, tf.SEWModel, "audio", squeeze_factor=2, **AUDIO),
    # LayerNorm feature extractor, a stack of positional convolutions
    "data2vec_audio": _hf(tf.Data2VecAudioConfig, tf.Data2VecAudioModel, "audio", hidden_size=32,
                          num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16),
                          conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=5,
                          num_conv_pos_embedding_groups=4, conv_pos_kernel_size=5,
                          num_conv_pos_embeddings_layers=2),
    "unispeech": _hf(tf.UniSpeechConfig, tf.UniSpeechModel, "audio", **AUDIO),
    # conformer blocks (depthwise conv module, two half feed-forwards) with relative or rotary positions
    "w2v2_conformer_rel": _hf(tf.Wav2Vec2ConformerConfig, tf.Wav2Vec2ConformerModel, "audio",
                              position_embeddings_type="relative", **CONFORMER),
    "w2v2_conformer_rot": _hf(tf.Wav2Vec2ConformerConfig, tf.Wav2Vec2ConformerModel, "audio",
                              position_embeddings_type="rotary", **CONFORMER),
    # alternating sliding-window (4) and global layers, tanh soft-capped attention logits
    "gemma2": _hf(tf.Gemma2Config, tf.Gemma2Model, "decoder", head_dim=8, sliding_window=4,
                  attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **LLM),
    "qwen3": _hf(tf.Qwen3Config, tf.Qwen3Model, "decoder", head_dim=8, **LLM),  # RMSNorm on Q and K
    "phi3": _hf(tf.Phi3Config, tf.Phi3Model, "decoder", pad_token_id=0, **LLM),  # fused QKV, gate-up
    "olmo": _hf(tf.OlmoConfig, tf.OlmoModel, "decoder", **LLM),  # LayerNorm without parameters
    "cohere": _hf(tf.CohereConfig, tf.CohereModel, "decoder", **LLM),  # interleaved rotary, parallel block
    "stablelm": _hf(tf.StableLmConfig, tf.StableLmModel, "decoder", **LLM),  # partial rotary, LayerNorm
    # rotary on half of each head, parallel attention and MLP
    "gpt_neox": _hf(tf.GPTNeoXConfig, tf.GPTNeoXModel, "decoder", rotary_pct=0.5, **BERT),
    # interleaved rotary on the first 4 dimensions of each head (CodeGen: its fused QKV split in 4)
    "gptj": _hf(tf.GPTJConfig, tf.GPTJModel, "decoder", vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                n_positions=32, rotary_dim=4),
    "codegen": _hf(tf.CodeGenConfig, tf.CodeGenModel, "decoder", vocab_size=VOCAB, n_embd=32, n_layer=2,
                   n_head=4, n_positions=32, n_ctx=32, rotary_dim=4),
    "gpt_bigcode": _hf(tf.GPTBigCodeConfig, tf.GPTBigCodeModel, "decoder", vocab_size=VOCAB, n_embd=32,
                       n_layer=2, n_head=4, n_positions=32, multi_query=True),  # one K/V head
    "roformer": _hf(tf.RoFormerConfig, tf.RoFormerModel, "text", embedding_size=32, **BERT),  # rotary
    "ernie": _hf(tf.ErnieConfig, lambda c: tf.ErnieModel(c, add_pooling_layer=False), "text", **BERT),
    # relative attention over pooled (strided mean) queries, a mask subtracted: scores - 1e6 (1 - mask)
    "funnel": _hf(tf.FunnelConfig, tf.FunnelModel, "text", vocab_size=VOCAB, block_sizes=[1, 1], d_model=32,
                  n_head=4, d_head=8, d_inner=64, num_decoder_layers=1),
    "mbart": _hf(tf.MBartConfig, tf.MBartModel, "seq2seq", **SEQ2SEQ),  # pre-norm BART
    "pegasus": _hf(tf.PegasusConfig, tf.PegasusModel, "seq2seq", **SEQ2SEQ),  # sinusoidal positions
    "m2m100": _hf(tf.M2M100Config, tf.M2M100Model, "seq2seq", **SEQ2SEQ),  # positions from the padding
    # T5's bucketed relative position bias, RMSNorm, gated GELU
    "mt5": _hf(tf.MT5Config, tf.MT5Model, "seq2seq", vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=1,
               num_decoder_layers=1, num_heads=4, relative_attention_num_buckets=8,
               relative_attention_max_distance=16),
    # local attention over blocks of 2 x local_radius + 1 (5-D scores); the padding mask
    # Where(mask > 0, 0, -1e10), transposed and added to the bucketed position bias, then the scores
    "long_t5": _hf(tf.LongT5Config, tf.LongT5Model, "seq2seq", vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64,
                   num_layers=1, num_decoder_layers=1, num_heads=4, relative_attention_num_buckets=8,
                   local_radius=2, global_block_size=4),
    # staggered block-local attention with global tokens; the inverted padding mask
    # (1 - mask).masked_fill((1 - mask).bool(), finfo.min), padded to whole blocks
    "pegasus_x": _hf(tf.PegasusXConfig, tf.PegasusXModel, "seq2seq", num_global_tokens=4, block_size=4,
                     stagger_local_blocks=True, **SEQ2SEQ),
    # gated relative position bias (WavLM); disentangled attention over log buckets (SEW-D)
    "wavlm": _hf(tf.WavLMConfig, tf.WavLMModel, "audio", num_buckets=16, max_bucket_distance=32, **AUDIO),
    "sew_d": _hf(tf.SEWDConfig, tf.SEWDModel, "audio", squeeze_factor=2, position_buckets=8,
                 max_relative_positions=16, **AUDIO),
    # filterbank features [1, 32, 16] through two stride-2 Conv1d + GLU; the attention mask's
    # lengths subsampled in int64 ((length - 1) // 2 + 1, twice), a new mask scattered from them
    "speech2text": _hf(tf.Speech2TextConfig, tf.Speech2TextModel, "speech2text", vocab_size=VOCAB, d_model=32,
                       encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
                       encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=64,
                       max_target_positions=32, num_conv_layers=2, conv_channels=32, input_feat_per_channel=16,
                       input_channels=1, conv_kernel_sizes=[5, 5]),
}


class Recurrent(nn.Module):
    """A recurrent layer's output sequence (and its initial states given, when `states`)."""

    def __init__(self, rnn: nn.Module, states: bool = False) -> None:
        super().__init__()
        self.rnn, self.states = rnn, states

    def forward(self, x, *states):
        if not self.states:
            return self.rnn(x)[0]
        return self.rnn(x, tuple(states) if isinstance(self.rnn, nn.LSTM) else states[0])[0]


class MaskedLSTM(nn.Module):
    """Variable lengths without packing: a 0/1 mask [N, T] zeroes the padded steps in and out,
    and the mean over the kept ones is classified."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.out = nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 4)

    def forward(self, x, mask):
        y = self.rnn(x * mask.unsqueeze(-1))[0] * mask.unsqueeze(-1)
        return self.out(y.sum(1) / mask.sum(1, keepdim=True).clamp(min=1))


class Encoder(nn.Module):
    """torch's nn.TransformerEncoder with a boolean key padding mask (True: padding), and the
    causal mask when `causal`."""

    def __init__(self, causal: bool = False, norm_first: bool = False) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.encoder, self.causal = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), causal

    def forward(self, x, padding):
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1]) if self.causal else None
        return self.encoder(x, mask=mask, src_key_padding_mask=padding, is_causal=self.causal)


class Decoder(nn.Module):
    """nn.TransformerDecoder, sequence first: causal target mask, memory key padding mask."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0), 1)

    def forward(self, tgt, memory, memory_padding):
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[0])
        return self.decoder(tgt, memory, tgt_mask=mask, memory_key_padding_mask=memory_padding,
                            tgt_is_causal=True)


class Attention(nn.Module):
    """nn.MultiheadAttention with a key padding mask, returning the head-averaged weights too
    (the math path: no fused kernel); keys and values of another width when `kdim`."""

    def __init__(self, kdim: int | None = None) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True, kdim=kdim, vdim=kdim)

    def forward(self, query, keys, padding):
        return self.attention(query, keys, keys, key_padding_mask=padding, need_weights=True)


class Conv1dStack(nn.Module):
    """Strided, dilated grouped, depthwise and pointwise Conv1d, BatchNorm1d, then ConvTranspose1d
    upsampling (stride 2, grouped, stride 3 with output_padding)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(4, 16, 5, stride=2, padding=2), nn.ReLU(),
            nn.Conv1d(16, 16, 3, padding=2, dilation=2, groups=4), nn.BatchNorm1d(16), nn.GELU(),
            nn.Conv1d(16, 16, 3, padding=1, groups=16), nn.Conv1d(16, 8, 1), nn.Tanh(),
            nn.ConvTranspose1d(8, 8, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose1d(8, 4, 3, padding=1, groups=2),
            nn.ConvTranspose1d(4, 2, 5, stride=3, padding=1, output_padding=1))

    def forward(self, x):
        return self.net(x)


class MelFrontEnd(nn.Module):
    """A log-mel front end without torch.stft: the windowed DFT as two strided Conv1d (real and
    imaginary), power, a 1x1 Conv1d filterbank, log, then a small conv classifier."""

    def __init__(self, n_fft: int = 64, hop: int = 16, mels: int = 10) -> None:
        super().__init__()
        bins = n_fft // 2 + 1
        k, n = torch.arange(bins).float()[:, None], torch.arange(n_fft).float()[None]
        window = torch.hann_window(n_fft)
        self.real = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.imag = nn.Conv1d(1, bins, n_fft, stride=hop, bias=False)
        self.mel = nn.Conv1d(bins, mels, 1, bias=False)
        with torch.no_grad():
            self.real.weight.copy_((torch.cos(2 * math.pi * k * n / n_fft) * window)[:, None])
            self.imag.weight.copy_((-torch.sin(2 * math.pi * k * n / n_fft) * window)[:, None])
            self.mel.weight.copy_(torch.rand(mels, bins, 1) / 4)
        self.head = nn.Sequential(nn.Conv1d(mels, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                                  nn.Flatten(), nn.Linear(16, 5))

    def forward(self, wav):
        x = wav.unsqueeze(1)
        return self.head(torch.log(self.mel(self.real(x) ** 2 + self.imag(x) ** 2) + 1e-6))


class Embeddings(nn.Module):
    """Token embeddings pooled: "masked", summed under the int64 attention mask and divided by
    the kept count (clamped to 1, in int64); "bag", nn.EmbeddingBag(mode="sum") plus the mean of
    nn.Embedding."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.embedding, self.bag, self.out = nn.Embedding(VOCAB, 16), nn.EmbeddingBag(VOCAB, 16, mode="sum"), \
            nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        if self.mode == "masked":
            kept = self.embedding(input_ids) * attention_mask.unsqueeze(-1).to(torch.float32)
            count = attention_mask.sum(1, keepdim=True).clamp(min=1).to(torch.float32)
            return self.out(kept.sum(1) / count)
        return self.out(self.bag(input_ids) + self.embedding(input_ids).mean(1))


def _padding(length: int, kept: int) -> torch.Tensor:
    mask = torch.zeros(1, length, dtype=torch.bool)
    mask[:, kept:] = True
    return mask


T, FEATURES, HIDDEN = 10, 8, 16
TORCH = {
    "lstm_bidirectional_states": lambda: (Recurrent(nn.LSTM(FEATURES, HIDDEN, 2, bidirectional=True), True),
                                          (torch.randn(T, 1, FEATURES), torch.randn(4, 1, HIDDEN),
                                           torch.randn(4, 1, HIDDEN)), ["x", "h0", "c0"]),
    "gru_bidirectional_states": lambda: (Recurrent(nn.GRU(FEATURES, HIDDEN, 2, bidirectional=True,
                                                          batch_first=True), True),
                                         (torch.randn(1, T, FEATURES), torch.randn(4, 1, HIDDEN)), ["x", "h0"]),
    "rnn_relu_bidirectional": lambda: (Recurrent(nn.RNN(FEATURES, HIDDEN, 2, nonlinearity="relu",
                                                        bidirectional=True, batch_first=True)),
                                       (torch.randn(1, T, FEATURES),), ["x"]),
    "rnn_tanh": lambda: (Recurrent(nn.RNN(FEATURES, HIDDEN, 2)), (torch.randn(T, 1, FEATURES),), ["x"]),
    "masked_lstm": lambda: (MaskedLSTM(), (torch.randn(1, T, FEATURES), (torch.arange(T) < 7).float()[None]),
                            ["x", "mask"]),
    "transformer_encoder": lambda: (Encoder(), (torch.randn(1, T, 32), _padding(T, 8)), ["x", "padding"]),
    "transformer_encoder_causal": lambda: (Encoder(True, True), (torch.randn(1, T, 32), _padding(T, 8)),
                                           ["x", "padding"]),
    "transformer_decoder": lambda: (Decoder(), (torch.randn(6, 1, 32), torch.randn(T, 1, 32), _padding(T, 8)),
                                    ["tgt", "memory", "memory_padding"]),
    "multihead_attention": lambda: (Attention(), (torch.randn(1, 6, 32), torch.randn(1, T, 32), _padding(T, 8)),
                                    ["query", "keys", "padding"]),
    "multihead_attention_kdim": lambda: (Attention(16), (torch.randn(1, 6, 32), torch.randn(1, T, 16),
                                                         _padding(T, 8)), ["query", "keys", "padding"]),
    "conv1d_stack": lambda: (Conv1dStack(), (torch.randn(1, 4, 40),), ["x"]),
    "mel_front_end": lambda: (MelFrontEnd(), (torch.randn(1, 400),), ["wav"]),
    "embedding_masked_mean": lambda: (Embeddings("masked"), (torch.randint(0, VOCAB, (1, T)),
                                                             (torch.arange(T) < 7).long()[None]),
                                      ["input_ids", "attention_mask"]),
    "embedding_bag": lambda: (Embeddings("bag"), (torch.randint(0, VOCAB, (1, T)),
                                                  torch.ones(1, T, dtype=torch.long)),
                              ["input_ids", "attention_mask"]),
}
# name -> (family, exporter): "dynamo" (default, opset 18) or "torchscript" (opset 17)
MODELS = {
    **{name: (name, "dynamo") for name in HF},
    "gpt_neo_ts": ("gpt_neo", "torchscript"), "modernbert_ts": ("modernbert", "torchscript"),
    "speech2text_ts": ("speech2text", "torchscript"),
    # (Cohere's TorchScript export fails in torch: "ONNX Expand input shape constraint not satisfied")
    **{f"{name}_ts": (name, "torchscript") for name in (
        "gemma2", "qwen3", "phi3", "olmo", "stablelm", "gpt_neox", "gptj", "codegen", "gpt_bigcode", "roformer",
        "ernie", "funnel", "mbart", "pegasus", "m2m100", "mt5", "wavlm", "sew_d", "long_t5")},
    **{name: (name, "torchscript") for name in TORCH},
    "gru_bidirectional_states_dynamo": ("gru_bidirectional_states", "dynamo"),
    "transformer_encoder_causal_dynamo": ("transformer_encoder_causal", "dynamo"),
    "multihead_attention_kdim_dynamo": ("multihead_attention_kdim", "dynamo"),
    "embedding_masked_mean_dynamo": ("embedding_masked_mean", "dynamo"),
}


class Wrapper(nn.Module):
    """The last hidden state only, as a tensor; the inputs by name."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        return self.model(**dict(zip(self.names, args))).last_hidden_state


def _randomize(model: nn.Module) -> None:
    """Weights of unit gain, random norm scales and biases, BatchNorm statistics not the identity
    (the mel front end keeps its DFT and filterbank)."""
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.startswith(("real.", "imag.", "mel.")):
                continue
            if p.dim() > 1:
                p.normal_(0.0, 1.0 / p[0].numel() ** 0.5)
            elif pname.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)


def _build(family: str):
    torch.manual_seed(0)
    if family in TORCH:
        model, args, names = TORCH[family]()
        _randomize(model)
        return model.eval(), args, names
    model, kind = HF[family]()
    _randomize(model)
    model.eval()
    if kind == "audio":
        names, args = ["input_values"], (torch.randn(1, 400),)
    elif kind == "speech2text":
        names = ["input_features", "attention_mask", "decoder_input_ids"]
        args = (torch.randn(1, 32, 16), torch.ones(1, 32, dtype=torch.int64), torch.randint(3, VOCAB, (1, SEQ)))
    else:
        names = ["input_ids", "attention_mask"] + (["decoder_input_ids"] if kind == "seq2seq" else [])
        args = (torch.randint(3, VOCAB, (1, SEQ)), torch.ones(1, SEQ, dtype=torch.int64))
        args += (torch.randint(3, VOCAB, (1, SEQ)),) if kind == "seq2seq" else ()
    return Wrapper(model, names).eval(), args, names


def export(name: str) -> str:
    family, exporter = MODELS[name]
    model, args, names = _build(family)
    path = os.path.join(HERE, f"{name}.onnx")
    # (torch's own layers under torch.no_grad() take a fused fast path that no ONNX exporter
    # translates, aten::_transformer_encoder_layer_fwd: they export with gradients on)
    with torch.no_grad() if family in HF else contextlib.nullcontext():
        if exporter == "torchscript":
            torch.onnx.export(model, args, path, input_names=names, opset_version=17, dynamo=False)
        else:
            torch.onnx.export(model, args, path, input_names=names, opset_version=18, external_data=False)
    strip_metadata(path)
    return path


if __name__ == "__main__":
    for model_name in sys.argv[1:] or MODELS:
        out = export(model_name)
        print(f"{out}: {os.path.getsize(out)} bytes", flush=True)
