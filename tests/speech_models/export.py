"""Export the speech/audio and CNN models tests/test_speech_models.py converts (run once; the .onnx
files are committed).

Random weights from fixed seeds, BatchNorm statistics that are not the identity, tiny dimensions:
transformers' speech models from configs (no download), torchvision's CNNs rebuilt at a few
channels from torchvision's own blocks (the full models are megabytes), and audio front ends and
keyword models written here in torch. Each is exported as users export it, by torch.onnx.export:
the default (torch.export-based, opset 18) exporter, or the TorchScript one (opset 17) where
`EXPORTER` says so, for the graphs only it writes (LRN's folded If, a channel shuffle's Shape
arithmetic):

    python3 -m venv .venv-export
    .venv-export/bin/pip install torch==2.13.0 torchvision transformers onnx onnxscript
    .venv-export/bin/python tests/speech_models/export.py [NAME ...]
"""
from __future__ import annotations

import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository root: tests._export
from tests._export import strip_metadata  # noqa: E402


def _torchvision():
    """torchvision, also when its C extension does not load (a wheel built for another torch):
    its models are plain Python, only the registration of its detection ops' fake kernels fails."""
    try:
        import torchvision
    except RuntimeError:
        import torch.library
        register = torch.library.register_fake
        torch.library.register_fake = lambda *args, **kwargs: (lambda f: f)
        try:
            for name in [m for m in sys.modules if m.startswith("torchvision")]:
                del sys.modules[name]
            import torchvision
        finally:
            torch.library.register_fake = register
    return torchvision


tv = _torchvision()
import transformers  # noqa: E402  (after torchvision: transformers imports it)
from torchvision.models import convnext, efficientnet, mobilenetv3, regnet, shufflenetv2  # noqa: E402
from torchvision.models import densenet, squeezenet  # noqa: E402
from torchvision.models.segmentation import deeplabv3, fcn, lraspp  # noqa: E402

googlenet = sys.modules["torchvision.models.googlenet"]
mnasnet = sys.modules["torchvision.models.mnasnet"]


# ---- speech: transformers ------------------------------------------------------------------------
class LastHidden(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args):
        return self.model(*args).last_hidden_state


def _whisper_config():
    return transformers.WhisperConfig(
        vocab_size=64, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=16, max_target_positions=16, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=1, attn_implementation="eager")


def whisper_encoder():
    """Conv1d stem (GELU, stride 2), sinusoidal positions, pre-LN attention blocks."""
    model = transformers.WhisperModel(_whisper_config())
    return LastHidden(model.encoder), {"input_features": (1, 16, 32)}


class WhisperDecoder(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, input_ids, encoder_hidden_states):
        return self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states,
                            use_cache=False).last_hidden_state


def whisper_decoder():
    """Token embeddings, the causal mask, self- and cross-attention."""
    model = transformers.WhisperModel(_whisper_config())
    return WhisperDecoder(model), {"input_ids": (1, 8), "encoder_hidden_states": (1, 16, 32)}


def _wav2vec2_kwargs(**kwargs):
    return dict(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 2, 2),
                conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=4, attn_implementation="eager", **kwargs)


def wav2vec2():
    """Conv feature extractor with GroupNorm (one group per channel), the positional conv with
    weight norm and groups, post-LN blocks."""
    config = transformers.Wav2Vec2Config(**_wav2vec2_kwargs(feat_extract_norm="group",
                                                            do_stable_layer_norm=False))
    return LastHidden(transformers.Wav2Vec2Model(config)), {"input_values": (1, 800)}


def hubert():
    """HuBERT's stable-layer-norm variant: LayerNorm in every feature-extractor conv, pre-LN blocks."""
    config = transformers.HubertConfig(**_wav2vec2_kwargs(feat_extract_norm="layer",
                                                          do_stable_layer_norm=True))
    return LastHidden(transformers.HubertModel(config)), {"input_values": (1, 800)}


def ast():
    """Audio spectrogram transformer: overlapping-stride patch conv, CLS + distillation tokens."""
    config = transformers.ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, patch_size=8, frequency_stride=8,
                                    time_stride=8, max_length=32, num_mel_bins=16,
                                    attn_implementation="eager")
    return LastHidden(transformers.ASTModel(config)), {"input_values": (1, 32, 16)}


# ---- speech: front ends and keyword models written in torch ----------------------------------------
class ConvMel(nn.Module):
    """An STFT-free log-mel front end: a strided Conv1d of windowed cos/-sin filters, the power,
    a mel MatMul, log; then a small conv classifier."""

    def __init__(self, n_fft: int = 64, hop: int = 16, mels: int = 16) -> None:
        super().__init__()
        n, k = torch.arange(n_fft).float(), torch.arange(n_fft // 2 + 1).float()
        angle = 2 * math.pi * k[:, None] * n[None, :] / n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * torch.hann_window(n_fft)
        self.register_buffer("basis", basis[:, None, :])
        self.register_buffer("mel", torch.rand(n_fft // 2 + 1, mels) / (n_fft // 2 + 1))
        self.hop, self.bins = hop, n_fft // 2 + 1
        self.head = nn.Sequential(nn.Conv1d(mels, 24, 3, padding=1), nn.BatchNorm1d(24), nn.ReLU(),
                                  nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(24, 6))

    def forward(self, wav):
        spec = F.conv1d(wav.unsqueeze(1), self.basis, stride=self.hop)
        re, im = spec[:, :self.bins], spec[:, self.bins:]
        mel = torch.matmul((re * re + im * im).transpose(1, 2), self.mel)
        return self.head(torch.log(mel + 1e-6).transpose(1, 2))


class ConformerConv(nn.Module):
    """Conformer's convolution module (LayerNorm, pointwise conv + GLU, depthwise conv, BatchNorm,
    SiLU, pointwise conv, residual) and a half-step feed-forward."""

    def __init__(self, d: int = 32, k: int = 15) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pw1, self.pw2 = nn.Conv1d(d, 2 * d, 1), nn.Conv1d(d, d, 1)
        self.dw, self.bn = nn.Conv1d(d, d, k, padding=k // 2, groups=d), nn.BatchNorm1d(d)
        self.ff = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))

    def forward(self, x):
        y = F.glu(self.pw1(self.norm(x).transpose(1, 2)), dim=1)
        x = x + self.pw2(F.silu(self.bn(self.dw(y)))).transpose(1, 2)
        return x + 0.5 * self.ff(x)


class Conformer(nn.Module):
    """A 2-D conv subsampler (4x in time) into two conformer conv modules."""

    def __init__(self) -> None:
        super().__init__()
        self.sub = nn.Sequential(nn.Conv2d(1, 8, 3, 2), nn.ReLU(), nn.Conv2d(8, 8, 3, 2), nn.ReLU())
        self.proj = nn.Linear(8 * 3, 32)
        self.blocks = nn.Sequential(ConformerConv(), ConformerConv())

    def forward(self, feats):
        y = self.sub(feats.unsqueeze(1))
        n, c, t, f = y.shape
        return self.blocks(self.proj(y.permute(0, 2, 1, 3).reshape(n, t, c * f)))


class DSCNN(nn.Module):
    """The keyword-spotting DS-CNN of 'Hello Edge' on a 49x10 MFCC map: a strided conv, 4 x
    (depthwise 3x3 + BN + ReLU, pointwise + BN + ReLU), global average pool, FC."""

    def __init__(self, c: int = 24, classes: int = 12) -> None:
        super().__init__()
        layers = [nn.Conv2d(1, c, (10, 4), stride=(2, 2), padding=(5, 1)), nn.BatchNorm2d(c), nn.ReLU()]
        for _ in range(4):
            layers += [nn.Conv2d(c, c, 3, padding=1, groups=c), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU()]
        self.body, self.fc = nn.Sequential(*layers), nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.body(x), 1), 1))


class TCN(nn.Module):
    """A causal TCN: dilations 1, 2, 4, 8, weight-normed convs after a left pad, 1x1 residual
    projection, the last step into a classifier."""

    def __init__(self, cin: int = 16, c: int = 24, classes: int = 8) -> None:
        super().__init__()
        norm = nn.utils.parametrizations.weight_norm
        self.blocks, self.dilations, ch = nn.ModuleList(), (1, 2, 4, 8), cin
        for d in self.dilations:
            self.blocks.append(nn.ModuleDict(dict(
                c1=norm(nn.Conv1d(ch, c, 3, dilation=d)), c2=norm(nn.Conv1d(c, c, 3, dilation=d)),
                down=nn.Conv1d(ch, c, 1) if ch != c else nn.Identity())))
            ch = c
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        for block, d in zip(self.blocks, self.dilations):
            y = F.relu(block["c1"](F.pad(x, (2 * d, 0))))
            y = F.relu(block["c2"](F.pad(y, (2 * d, 0))))
            x = F.relu(y + block["down"](x))
        return self.fc(x[:, :, -1])


class RecurrentKWS(nn.Module):
    """A 2-layer torch.nn.LSTM (or GRU), batch_first, its last step into a classifier."""

    def __init__(self, gru: bool = False) -> None:
        super().__init__()
        self.rnn = (nn.GRU if gru else nn.LSTM)(16, 24, num_layers=2, batch_first=True)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


# ---- torch's LocalResponseNorm ------------------------------------------------------------------
class LRNNet(nn.Module):
    def __init__(self, size: int, one_d: bool = False) -> None:
        super().__init__()
        conv = nn.Conv1d if one_d else nn.Conv2d
        self.conv1, self.conv2 = conv(3, 16, 3, padding=1), conv(16, 8, 3)
        self.lrn = nn.LocalResponseNorm(size, alpha=1e-2, beta=0.75, k=2.0)

    def forward(self, x):
        return self.conv2(torch.relu(self.lrn(torch.relu(self.conv1(x)))))


# ---- torchvision CNNs, rebuilt small from their own blocks ---------------------------------------
class Head(nn.Module):
    """Global average pool + Linear after a feature stack of `channels` outputs."""

    def __init__(self, features: nn.Module, channels: int, classes: int = 10) -> None:
        super().__init__()
        self.features, self.fc = features, nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def squeezenet_small():
    """SqueezeNet 1.1's Fire modules and ceil_mode max pools, its conv + ReLU + average pool head."""
    Fire = squeezenet.Fire
    features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True),
                             nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 8, 16, 16), Fire(32, 8, 16, 16),
                             nn.MaxPool2d(3, 2, ceil_mode=True), Fire(32, 16, 24, 24))
    model = nn.Sequential(features, nn.Dropout(0.5), nn.Conv2d(48, 10, 1), nn.ReLU(inplace=True),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return model, {"x": (1, 3, 64, 64)}


def shufflenet_small():
    """ShuffleNet V2: channel split (chunk), branches, concat and channel shuffle per block."""
    return shufflenetv2.ShuffleNetV2([2, 2, 1], [8, 16, 32, 48, 64], num_classes=10), {"x": (1, 3, 64, 64)}


def mnasnet_small():
    """MNASNet's stacks of inverted residuals (3x3 and 5x5 depthwise, expansion 3 and 6)."""
    stack = mnasnet._stack
    features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
                             stack(8, 12, 3, 2, 3, 2, 0.0003), stack(12, 16, 5, 2, 3, 2, 0.0003),
                             stack(16, 24, 5, 2, 6, 1, 0.0003))
    return Head(features, 24), {"x": (1, 3, 64, 64)}


def mobilenet_v3_small():
    """MobileNetV3's blocks: squeeze-excitation with hardsigmoid, hardswish, 5x5 depthwise."""
    C = mobilenetv3.InvertedResidualConfig
    setting = [C(8, 3, 8, 8, True, "RE", 2, 1, 1.0), C(8, 3, 24, 12, False, "RE", 2, 1, 1.0),
               C(12, 5, 32, 16, True, "HS", 2, 1, 1.0), C(16, 5, 48, 16, True, "HS", 1, 1, 1.0)]
    return mobilenetv3.MobileNetV3(setting, last_channel=32, num_classes=10), {"x": (1, 3, 64, 64)}


def efficientnet_small():
    """EfficientNet's MBConv with SiLU squeeze-excitation and stochastic depth (identity in eval)."""
    C = efficientnet.MBConvConfig
    setting = [C(1, 3, 1, 8, 8, 1, 1.0, 1.0), C(6, 3, 2, 8, 12, 2, 1.0, 1.0), C(6, 5, 2, 12, 16, 1, 1.0, 1.0)]
    return efficientnet.EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=48), {"x": (1, 3, 64, 64)}


def regnet_small():
    """RegNetX's grouped bottleneck blocks (group width 8), strided projection shortcuts."""
    params = regnet.BlockParams.from_init_params(depth=4, w_0=16, w_a=8.0, w_m=2.0, group_width=8)
    return regnet.RegNet(params, num_classes=10, stem_width=16), {"x": (1, 3, 64, 64)}


def convnext_small():
    """ConvNeXt's blocks: 7x7 depthwise, channels-last LayerNorm via permutes, layer scale;
    LayerNorm2d downsampling."""
    C = convnext.CNBlockConfig
    return convnext.ConvNeXt([C(16, 32, 1), C(32, None, 1)], num_classes=10), {"x": (1, 3, 64, 64)}


def densenet_small():
    """DenseNet's dense blocks (BN-ReLU-Conv on a growing concat, BN not after a conv) and transitions."""
    return densenet.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2,
                             num_classes=10), {"x": (1, 3, 64, 64)}


def googlenet_small():
    """GoogLeNet's Inception blocks (1x1, 3x3, a second 3x3, pool projection) and ceil_mode pools."""
    Conv, Inception = googlenet.BasicConv2d, googlenet.Inception
    features = nn.Sequential(Conv(3, 16, kernel_size=7, stride=2, padding=3),
                             nn.MaxPool2d(3, 2, ceil_mode=True), Inception(16, 8, 8, 16, 4, 8, 8),
                             nn.MaxPool2d(3, 2, ceil_mode=True), Inception(40, 16, 8, 16, 4, 8, 8))
    return Head(features, 48), {"x": (1, 3, 64, 64)}


class Backbone(nn.Module):
    """A tiny MobileNetV3-style backbone returning the 'low' (stride 4) and 'high' (stride 8)
    features segmentation heads read, also as 'out'."""

    def __init__(self) -> None:
        super().__init__()
        C = mobilenetv3.InvertedResidualConfig
        block = mobilenetv3.InvertedResidual
        norm = nn.BatchNorm2d
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), norm(8), nn.Hardswish())
        self.low = block(C(8, 3, 16, 8, True, "RE", 2, 1, 1.0), norm)
        self.high = nn.Sequential(block(C(8, 5, 24, 16, True, "HS", 2, 1, 1.0), norm),
                                  block(C(16, 3, 32, 16, False, "HS", 1, 2, 1.0), norm))

    def forward(self, x):
        low = self.low(self.stem(x))
        high = self.high(low)
        return {"low": low, "high": high, "out": high}


class SegOut(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def lraspp_small():
    """LRASPP's head: a 1x1 branch gated by a pooled sigmoid branch, bilinear upsampling, the
    low-level classifier added."""
    return SegOut(lraspp.LRASPP(Backbone(), 8, 16, num_classes=3, inter_channels=16)), {"x": (1, 3, 64, 64)}


def deeplabv3_small():
    """DeepLabV3's ASPP (atrous 3x3 at rates 2, 4, 6, a global pooling branch upsampled) and the
    bilinear upsampling to the input size."""
    head = nn.Sequential(deeplabv3.ASPP(16, (2, 4, 6), out_channels=16),  # DeepLabHead, 16 wide
                         nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 3, 1))
    return SegOut(deeplabv3.DeepLabV3(Backbone(), head)), {"x": (1, 3, 64, 64)}


def fcn_small():
    return SegOut(fcn.FCN(Backbone(), fcn.FCNHead(16, 3))), {"x": (1, 3, 64, 64)}


MODELS = {
    "whisper_encoder": whisper_encoder, "whisper_decoder": whisper_decoder, "wav2vec2": wav2vec2,
    "hubert": hubert, "ast": ast,
    "conv_mel": lambda: (ConvMel(), {"x": (1, 400)}),
    "conformer": lambda: (Conformer(), {"x": (1, 32, 16)}),
    "ds_cnn": lambda: (DSCNN(), {"x": (1, 1, 49, 10)}),
    "tcn": lambda: (TCN(), {"x": (1, 16, 40)}),
    "lstm_kws": lambda: (RecurrentKWS(), {"x": (1, 20, 16)}),
    "gru_kws": lambda: (RecurrentKWS(gru=True), {"x": (1, 20, 16)}),
    "lrn_size5": lambda: (LRNNet(5), {"x": (1, 3, 16, 16)}),
    "lrn_size4": lambda: (LRNNet(4), {"x": (1, 3, 16, 16)}),
    "lrn_size5_dynamo": lambda: (LRNNet(5), {"x": (1, 3, 16, 16)}),
    "lrn_1d": lambda: (LRNNet(3, one_d=True), {"x": (1, 3, 20)}),
    "squeezenet": squeezenet_small, "shufflenet_v2": shufflenet_small,
    "shufflenet_v2_ts": shufflenet_small, "mnasnet": mnasnet_small,
    "mobilenet_v3": mobilenet_v3_small, "efficientnet": efficientnet_small, "regnet": regnet_small,
    "convnext": convnext_small, "densenet": densenet_small, "googlenet": googlenet_small,
    "lraspp": lraspp_small, "deeplabv3": deeplabv3_small,
    "fcn": fcn_small,
}
# The TorchScript exporter (dynamo=False, opset 17); the rest use the default exporter (opset 18).
EXPORTER_TS = {"hubert", "ds_cnn", "gru_kws", "lrn_size5", "lrn_1d", "shufflenet_v2_ts",
               "squeezenet", "regnet", "densenet", "fcn"}


def randomize(model: nn.Module) -> None:
    """Weights of unit gain, random norm scales and biases, BatchNorm statistics that are not the
    identity (so that folding them is tested)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.normal_(0.0, 1.0 / p[0].numel() ** 0.5)
            elif name.endswith("weight") or name.endswith("original0"):  # (weight norm's g)
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)


def export(name: str) -> str:
    torch.manual_seed(0)
    model, inputs = MODELS[name]()
    randomize(model)
    model.eval()
    args = tuple(torch.randint(0, 64, shape) if key == "input_ids" else torch.randn(*shape)
                 for key, shape in inputs.items())
    path = os.path.join(HERE, f"{name}.onnx")
    with torch.no_grad():
        if name in EXPORTER_TS:
            torch.onnx.export(model, args, path, input_names=list(inputs), output_names=["y"],
                              opset_version=17, dynamo=False)
        else:
            torch.onnx.export(model, args, path, input_names=list(inputs), output_names=["y"],
                              opset_version=18, external_data=False)
    strip_metadata(path)
    return path


if __name__ == "__main__":
    for model_name in sys.argv[1:] or MODELS:
        out = export(model_name)
        print(f"{out}: {os.path.getsize(out)} bytes")
