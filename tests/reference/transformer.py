"""TransformerEncoderLayer, TransformerDecoderLayer, TransformerEncoder, TransformerDecoder, Transformer
(docs/semantics.md, Transformer modules)."""

from __future__ import annotations

from .attention import multihead_attention
from .common import apply_activation, call_child, child, f64, register


def _attn(attrs, prefix, q, kv, mask, key_padding_mask, is_causal):
    out, _ = multihead_attention(child(attrs, prefix), q, kv, kv, key_padding_mask=key_padding_mask,
                                 need_weights=False, attn_mask=mask, is_causal=is_causal)
    return out


def _ff(attrs, x):
    return call_child(attrs, "linear2", apply_activation(attrs, "activation", call_child(attrs, "linear1", x)))


@register("torch.nn.TransformerEncoderLayer")
def encoder_layer(attrs, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
    x = f64(src)
    if attrs["norm_first"]:
        x = x + _attn(attrs, "self_attn", call_child(attrs, "norm1", x), call_child(attrs, "norm1", x),
                      src_mask, src_key_padding_mask, is_causal)
        x = x + _ff(attrs, call_child(attrs, "norm2", x))
    else:
        x = call_child(attrs, "norm1", x + _attn(attrs, "self_attn", x, x, src_mask, src_key_padding_mask,
                                                 is_causal))
        x = call_child(attrs, "norm2", x + _ff(attrs, x))
    return x


@register("torch.nn.TransformerDecoderLayer")
def decoder_layer(attrs, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                  memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
    x, mem = f64(tgt), f64(memory)
    if attrs["norm_first"]:
        y = call_child(attrs, "norm1", x)
        x = x + _attn(attrs, "self_attn", y, y, tgt_mask, tgt_key_padding_mask, tgt_is_causal)
        x = x + _attn(attrs, "multihead_attn", call_child(attrs, "norm2", x), mem, memory_mask,
                      memory_key_padding_mask, memory_is_causal)
        x = x + _ff(attrs, call_child(attrs, "norm3", x))
    else:
        x = call_child(attrs, "norm1", x + _attn(attrs, "self_attn", x, x, tgt_mask, tgt_key_padding_mask,
                                                 tgt_is_causal))
        x = call_child(attrs, "norm2", x + _attn(attrs, "multihead_attn", x, mem, memory_mask,
                                                 memory_key_padding_mask, memory_is_causal))
        x = call_child(attrs, "norm3", x + _ff(attrs, x))
    return x


@register("torch.nn.TransformerEncoder")
def encoder(attrs, src, mask=None, src_key_padding_mask=None, is_causal=None):
    x = f64(src)
    for i in range(attrs["num_layers"]):
        x = call_child(attrs, f"layers.{i}", x, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                       is_causal=bool(is_causal))
    if attrs.get("norm") is not None:
        x = call_child(attrs, "norm", x)
    return x


@register("torch.nn.TransformerDecoder")
def decoder(attrs, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
            memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
    x = f64(tgt)
    for i in range(attrs["num_layers"]):
        x = call_child(attrs, f"layers.{i}", x, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                       tgt_key_padding_mask=tgt_key_padding_mask,
                       memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=bool(tgt_is_causal),
                       memory_is_causal=memory_is_causal)
    if attrs.get("norm") is not None:
        x = call_child(attrs, "norm", x)
    return x


@register("torch.nn.Transformer")
def transformer(attrs, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
    memory = call_child(attrs, "encoder", src, mask=src_mask, src_key_padding_mask=src_key_padding_mask,
                        is_causal=src_is_causal)
    return call_child(attrs, "decoder", tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                      tgt_key_padding_mask=tgt_key_padding_mask,
                      memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                      memory_is_causal=memory_is_causal)
