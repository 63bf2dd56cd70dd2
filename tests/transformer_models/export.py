"""Export the tiny transformer models the family tests convert (run once; the .onnx files are committed).

Random weights from fixed seeds, tiny dimensions, built from transformers configs (no download):

    python3 -m venv .venv-export
    .venv-export/bin/pip install torch==2.13.0 transformers onnx onnxscript
    .venv-export/bin/python tests/transformer_models/export.py

Attention is exported in its eager form (MatMul, Softmax, the mask through Where/Expand), as users get
it with attn_implementation="eager"; torch.onnx.export's default (dynamo) exporter, opset 18.
"""
from __future__ import annotations

import contextlib
import os
import sys

# transformers imports torchvision when it is installed, and one built for another torch fails at
# import (operator torchvision::nms does not exist); no model here needs it
sys.modules.setdefault("torchvision", None)

import torch  # noqa: E402
import transformers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEQ = 8


class Wrapper(torch.nn.Module):
    """Return the last hidden state only, as a tensor (not a ModelOutput); the inputs by name
    (GPT-2's second positional argument is its cache)."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...] = ("input_ids", "attention_mask")) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *args):
        return self.model(**dict(zip(self.names, args))).last_hidden_state


class CausalDecoder(torch.nn.Module):
    """torch's own nn.TransformerDecoder with the causal mask nn.Transformer makes (-inf above the
    diagonal, a constant in the exported graph), as a tutorial's model calls it."""

    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.TransformerDecoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.decoder = torch.nn.TransformerDecoder(layer, 2)

    def forward(self, tgt, memory):
        mask = torch.nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        return self.decoder(tgt, memory, tgt_mask=mask, tgt_is_causal=True)


def _bert():
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=32, attn_implementation="eager")
    return transformers.BertModel(config, add_pooling_layer=False), "text"


def _distilbert():
    config = transformers.DistilBertConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4,
                                           hidden_dim=64, max_position_embeddings=32,
                                           attn_implementation="eager")
    return transformers.DistilBertModel(config), "text"


def _vit():
    config = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                                    num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                    attn_implementation="eager")
    return transformers.ViTModel(config, add_pooling_layer=False), "image"


def _swin():
    config = transformers.SwinConfig(image_size=16, patch_size=2, num_channels=3, embed_dim=16,
                                     depths=[2, 2], num_heads=[2, 4], window_size=4,
                                     attn_implementation="eager")
    return transformers.SwinModel(config, add_pooling_layer=False), "image"


def _mobilevit():
    config = transformers.MobileViTConfig(image_size=64, num_channels=3, hidden_sizes=[16, 16, 16],
                                          neck_hidden_sizes=[8, 8, 8, 16, 16, 16, 32],
                                          num_attention_heads=2, patch_size=2, expand_ratio=2.0,
                                          attn_implementation="eager")
    return transformers.MobileViTModel(config, expand_output=False), "image"


def _gpt2():  # causal: the mask is Where(causal and padding, 0, finfo.min); GELU with Pow(x, 3)
    config = transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                     attn_implementation="eager")
    return transformers.GPT2Model(config), "text"


def _llama():  # RMSNorm, rotary embeddings, SiLU-gated MLP, grouped-query attention (4 heads, 2 KV)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=32, attn_implementation="eager")
    return transformers.LlamaModel(config), "text"


def _t5():  # encoder-decoder: relative position bias buckets, RMSNorm as Mul by Reciprocal, no 1/sqrt(d)
    config = transformers.T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                   num_decoder_layers=1, num_heads=4, relative_attention_num_buckets=8,
                                   relative_attention_max_distance=16, attn_implementation="eager")
    return transformers.T5Model(config), "seq2seq"


def _clip_text():  # causal and padding masks together, quick_gelu, the end-of-text token's state aside
    config = transformers.CLIPTextConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         max_position_embeddings=32, attn_implementation="eager")
    return transformers.CLIPTextModel(config), "text"


def _deberta_v2():  # disentangled relative attention (GATHER_ND of position buckets), masked_fill(finfo.min)
    config = transformers.DebertaV2Config(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, intermediate_size=64,
                                          max_position_embeddings=32, relative_attention=True,
                                          position_buckets=8, pos_att_type=["p2c", "c2p"],
                                          attn_implementation="eager")
    return transformers.DebertaV2Model(config), "text"


def _torch_decoder():
    return CausalDecoder(), "sequence"


FAMILIES = {"bert": _bert, "distilbert": _distilbert, "vit": _vit, "swin": _swin,
            "mobilevit": _mobilevit, "gpt2": _gpt2, "llama": _llama, "t5": _t5,
            "clip_text": _clip_text, "deberta_v2": _deberta_v2, "torch_decoder": _torch_decoder}
IMAGE = {"vit": 32, "swin": 16, "mobilevit": 64}
# Exported by the TorchScript exporter (opset 17), which keeps the causal mask's -inf; the dynamo
# exporter writes it as finfo.min.
TORCHSCRIPT = ("torch_decoder",)
# Also exported by the TorchScript exporter with dynamic batch and sequence: its graphs keep the
# Shape -> Gather -> Concat -> Reshape arithmetic that a static --input-shape must fold away.
DYNAMIC = ("bert", "swin")


def _randomize(model: torch.nn.Module) -> None:
    """Weights of unit gain (transformers' initialisation shrinks deep activations to ~0), random
    norm scales and biases, and BatchNorm statistics that are not the identity."""
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.normal_(0.0, 1.0 / fan_in ** 0.5)
            elif pname.endswith("weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)


def export(name: str, dynamic: bool = False) -> str:
    torch.manual_seed(0)
    model, kind = FAMILIES[name]()
    _randomize(model)
    model.eval()
    wrapper = Wrapper(model).eval()
    if kind == "text":
        args = (torch.randint(0, 64, (1, SEQ)), torch.ones(1, SEQ, dtype=torch.int64))
        names = ["input_ids", "attention_mask"]
        axes = {n: {0: "batch", 1: "sequence"} for n in names}
    elif kind == "seq2seq":
        args = (torch.randint(0, 64, (1, SEQ)), torch.ones(1, SEQ, dtype=torch.int64),
                torch.randint(0, 64, (1, SEQ)))
        names = ["input_ids", "attention_mask", "decoder_input_ids"]
        wrapper = Wrapper(model, tuple(names)).eval()
    elif kind == "sequence":  # float [batch, sequence, features] inputs, not transformers'
        args = (torch.randn(1, SEQ, 32), torch.randn(1, SEQ, 32))
        names = ["tgt", "memory"]
        wrapper = model
    else:
        args = (torch.randn(1, 3, IMAGE[name], IMAGE[name]),)
        names = ["pixel_values"]
        axes = {"pixel_values": {0: "batch"}}
    path = os.path.join(HERE, f"{name}{'_dynamic' if dynamic else ''}.onnx")
    # (no torch.no_grad() for torch's own layers: in inference mode they take a fused fast path
    # that no ONNX exporter translates, aten::_transformer_encoder_layer_fwd)
    with torch.no_grad() if kind != "sequence" else contextlib.nullcontext():
        if name in TORCHSCRIPT:
            torch.onnx.export(wrapper, args, path, input_names=names, output_names=["hidden"],
                              opset_version=17, dynamo=False)
        elif dynamic:
            torch.onnx.export(wrapper, args, path, input_names=names, output_names=["hidden"],
                              opset_version=17, dynamo=False, dynamic_axes=axes)
        else:
            torch.onnx.export(wrapper, args, path, input_names=names, output_names=["hidden"],
                              opset_version=18, external_data=False)
    _strip(path)
    return path


def _strip(path: str) -> None:
    """Drop the exporter's per-node metadata (stack traces, module paths): most of the file's bytes."""
    import onnx

    model = onnx.load(path)
    for graph in [model.graph]:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
        for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
            del vi.metadata_props[:]
        for init in graph.initializer:
            del init.metadata_props[:]
    del model.metadata_props[:]
    onnx.save(model, path)


if __name__ == "__main__":
    for family in sys.argv[1:] or FAMILIES:
        for dynamic in (False, True) if family in DYNAMIC else (False,):
            out = export(family, dynamic)
            print(f"{out}: {os.path.getsize(out)} bytes")
