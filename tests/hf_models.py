"""Small test models written the way Hugging Face transformers 5 writes them, without importing transformers.

They use what makes ``torch.fx.symbolic_trace`` fail on real checkpoints -- shape unpacking
(``batch, seq = input_ids.shape``), ``torch.finfo(x.dtype).min`` on a traced dtype, item assignment into tensors
(``mask[..., :n] = ...``), keyword inputs, output dataclasses registered as pytree nodes -- and the layer zoo of
GPT-2, BERT and Llama (tied embeddings, GELU/SiLU MLPs, hand-written and ``nn.RMSNorm``, rotary embeddings with
non-persistent buffers, grouped-query attention through SDPA).

Every factory seeds ``torch.manual_seed(0)`` and returns an :class:`HFCase` in eval mode. ``leaf_calls`` is the
hand-written list of ``call_module`` targets a module view of the model must have (in call order); ``kept`` the
rule-bearing modules expected to stay as core ops.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils._pytree as pytree

__all__ = ["HFCase", "HF_MODELS", "BaseModelOutput", "BaseModelOutputWithPooling", "CausalLMOutput"]


# --------------------------------------------------------------------------------------------------------------
# Output classes: a dataclass registered with register_dataclass (GPT-2), and ModelOutput-style ordered dicts
# flattened to their non-None fields with the field names as context (BERT, Llama), as transformers does.

@dataclasses.dataclass
class BaseModelOutput:
    last_hidden_state: torch.Tensor
    hidden_states: tuple | None = None
    attentions: tuple | None = None


pytree.register_dataclass(BaseModelOutput, serialized_type_name="hf_models.BaseModelOutput")


class _ModelOutput(OrderedDict):
    """The shape of transformers' ModelOutput: a dataclass that is also an ordered dict of its non-None fields."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None:
                self[f.name] = v

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)

        def flatten(out):
            return list(out.values()), list(out.keys())

        def unflatten(values, keys, _cls=cls):
            return _cls(**dict(zip(keys, values)))

        pytree.register_pytree_node(cls, flatten, unflatten, serialized_type_name=f"hf_models.{cls.__name__}")


@dataclasses.dataclass
class BaseModelOutputWithPooling(_ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple | None = None


@dataclasses.dataclass
class CausalLMOutput(_ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------------------------
# GPT-2

class GPT2Attention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim, self.split_size = heads, hidden // heads, hidden
        self.c_attn = nn.Linear(hidden, 3 * hidden)  # transformers' Conv1D, written as a Linear
        self.c_proj = nn.Linear(hidden, hidden)
        self.attn_dropout = nn.Dropout(0.1)
        self.resid_dropout = nn.Dropout(0.1)

    def forward(self, hidden_states, attention_mask):
        batch, seq, _ = hidden_states.shape
        q, k, v = self.c_attn(hidden_states).split(self.split_size, dim=2)
        shape = (batch, seq, self.heads, self.head_dim)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores + attention_mask
        probs = self.attn_dropout(F.softmax(scores, dim=-1))
        out = torch.matmul(probs, v).transpose(1, 2).reshape(batch, seq, self.split_size)
        return self.resid_dropout(self.c_proj(out))


class GPT2MLP(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.c_fc = nn.Linear(hidden, 4 * hidden)
        self.c_proj = nn.Linear(4 * hidden, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class GPT2Block(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=1e-5)
        self.attn = GPT2Attention(hidden, heads)
        self.ln_2 = nn.LayerNorm(hidden, eps=1e-5)
        self.mlp = GPT2MLP(hidden)

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class GPT2Model(nn.Module):
    def __init__(self, vocab: int = 50, hidden: int = 32, heads: int = 4, layers: int = 2, positions: int = 16):
        super().__init__()
        self.wte = nn.Embedding(vocab, hidden)
        self.wpe = nn.Embedding(positions, hidden)
        self.drop = nn.Dropout(0.1)
        self.h = nn.ModuleList(GPT2Block(hidden, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden, eps=1e-5)

    def forward(self, input_ids, attention_mask=None):
        batch, seq = input_ids.shape                       # symbolic_trace: a Proxy cannot be unpacked
        position_ids = torch.arange(seq, device=input_ids.device).unsqueeze(0)
        x = self.drop(self.wte(input_ids) + self.wpe(position_ids))
        dtype = x.dtype
        min_value = torch.finfo(dtype).min                 # symbolic_trace: finfo of a Proxy dtype
        causal = torch.full((seq, seq), min_value, dtype=dtype, device=x.device).triu(1)
        mask = causal[None, None, :, :].expand(batch, 1, seq, seq).clone()
        if attention_mask is not None:
            padding = attention_mask[:, None, None, :] == 0
            mask[:, :, :, :seq] = mask[:, :, :, :seq].masked_fill(padding, min_value)  # item assignment
        for block in self.h:
            x = block(x, mask)
        return BaseModelOutput(last_hidden_state=self.ln_f(x))


# --------------------------------------------------------------------------------------------------------------
# BERT

class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int, types: int):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(0.1)
        self.register_buffer("position_ids", torch.arange(positions).expand((1, -1)), persistent=False)
        self.register_buffer("token_type_ids", torch.zeros(1, positions, dtype=torch.long), persistent=False)

    def forward(self, input_ids, token_type_ids=None):
        input_shape = input_ids.size()
        seq_length = input_shape[1]
        position_ids = self.position_ids[:, :seq_length]
        if token_type_ids is None:
            token_type_ids = self.token_type_ids[:, :seq_length].expand(input_shape[0], seq_length)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfOutput(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(0.1)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x, mask):
        batch, seq, hidden = x.size()                      # symbolic_trace: a Proxy cannot be unpacked
        q, k, v = (p(x).view(batch, seq, self.heads, self.head_dim).transpose(1, 2)
                   for p in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(batch, seq, hidden)


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int):
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads)
        self.attention_output = BertSelfOutput(hidden, hidden)
        self.intermediate = nn.Linear(hidden, inner)
        self.intermediate_act_fn = nn.GELU()
        self.output = BertSelfOutput(hidden, inner)

    def forward(self, x, mask):
        x = self.attention_output(self.attention(x, mask), x)
        return self.output(self.intermediate_act_fn(self.intermediate(x)), x)


class BertPooler(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


class BertModel(nn.Module):
    def __init__(self, vocab: int = 60, hidden: int = 32, heads: int = 4, inner: int = 64, layers: int = 2,
                 positions: int = 16, types: int = 2):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab, hidden, positions, types)
        self.layer = nn.ModuleList(BertLayer(hidden, heads, inner) for _ in range(layers))
        self.pooler = BertPooler(hidden)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        x = self.embeddings(input_ids, token_type_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        dtype = x.dtype
        extended = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        for layer in self.layer:
            x = layer(x, extended)
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=self.pooler(x))


# --------------------------------------------------------------------------------------------------------------
# Llama

class LlamaRMSNorm(nn.Module):
    """Hand-written RMSNorm (no lowering rule: its ops stay core ops in the module view)."""

    def __init__(self, hidden: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden) + 0.1 * torch.randn(hidden))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        t = torch.arange(max_positions, dtype=torch.float32)
        emb = torch.cat((torch.outer(t, inv_freq),) * 2, dim=-1)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def forward(self, x, position_ids):
        cos = self.cos_cached[position_ids].to(x.dtype)
        sin = self.sin_cached[position_ids].to(x.dtype)
        return cos, sin


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _repeat_kv(x, n_rep: int):
    batch, kv_heads, seq, head_dim = x.shape
    if n_rep == 1:
        return x
    x = x[:, :, None, :, :].expand(batch, kv_heads, n_rep, seq, head_dim)
    return x.reshape(batch, kv_heads * n_rep, seq, head_dim)


class LlamaAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, cache: int = 0):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)
        if cache:  # a static KV cache, updated in place in forward (refused by the module-view derivation)
            self.register_buffer("k_cache", torch.zeros(2, kv_heads, cache, self.head_dim), persistent=False)
        self.cache = cache

    def forward(self, x, cos, sin, mask):
        bsz, q_len, _ = x.size()                           # symbolic_trace: a Proxy cannot be unpacked
        q = self.q_proj(x).view(bsz, q_len, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(bsz, q_len, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(bsz, q_len, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if self.cache:
            self.k_cache[:, :, :q_len] = k                 # in-place update of a buffer
        n_rep = self.heads // self.kv_heads
        out = F.scaled_dot_product_attention(q, _repeat_kv(k, n_rep), _repeat_kv(v, n_rep), attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(bsz, q_len, -1))


class LlamaMLP(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, inner: int, cache: int):
        super().__init__()
        self.self_attn = LlamaAttention(hidden, heads, kv_heads, cache)
        self.mlp = LlamaMLP(hidden, inner)
        self.input_layernorm = LlamaRMSNorm(hidden)
        self.post_attention_layernorm = nn.RMSNorm(hidden, eps=1e-6)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaForCausalLM(nn.Module):
    def __init__(self, vocab: int = 64, hidden: int = 32, heads: int = 4, kv_heads: int = 2, inner: int = 64,
                 layers: int = 2, positions: int = 16, cache: int = 0):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(LlamaDecoderLayer(hidden, heads, kv_heads, inner, cache) for _ in range(layers))
        self.norm = LlamaRMSNorm(hidden)
        self.rotary_emb = LlamaRotaryEmbedding(hidden // heads, positions)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        self.lm_head.weight = self.embed_tokens.weight     # tie_word_embeddings

    def forward(self, input_ids, attention_mask=None):
        batch, seq = input_ids.shape
        x = self.embed_tokens(input_ids)
        position_ids = torch.arange(seq, device=x.device).unsqueeze(0).expand(batch, seq)
        cos, sin = self.rotary_emb(x, position_ids)
        min_value = torch.finfo(x.dtype).min
        mask = torch.full((batch, 1, seq, seq), min_value, dtype=x.dtype).triu(1)
        if attention_mask is not None:
            mask[..., :seq] = mask[..., :seq].masked_fill(attention_mask[:, None, None, :] == 0, min_value)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        x = self.norm(x)
        return CausalLMOutput(logits=self.lm_head(x), last_hidden_state=x)


# --------------------------------------------------------------------------------------------------------------
# Cases

@dataclasses.dataclass(frozen=True)
class HFCase:
    name: str
    module: nn.Module
    kwargs: dict[str, Any]
    leaf_calls: tuple[str, ...]   # call_module targets of the module view, in call order (written by hand)
    output_class: str             # the qualified name of the output class
    kept: tuple[str, ...] = ()    # rule-bearing modules whose calls stay core ops (their kernel's bits differ)


def _ids(vocab: int, batch: int = 2, seq: int = 8) -> torch.Tensor:
    return torch.randint(1, vocab, (batch, seq))


def _mask(batch: int = 2, seq: int = 8) -> torch.Tensor:
    m = torch.ones(batch, seq, dtype=torch.long)
    m[1, 6:] = 0  # the second sequence is padded
    return m


def gpt2() -> HFCase:
    torch.manual_seed(0)
    model = GPT2Model().eval()
    calls = ["wte", "wpe", "drop"]
    for i in range(2):
        p = f"h.{i}"
        calls += [f"{p}.ln_1", f"{p}.attn.c_attn", f"{p}.attn.attn_dropout", f"{p}.attn.c_proj",
                  f"{p}.attn.resid_dropout", f"{p}.ln_2", f"{p}.mlp.c_fc", f"{p}.mlp.act", f"{p}.mlp.c_proj",
                  f"{p}.mlp.dropout"]
    calls.append("ln_f")
    return HFCase("gpt2", model, {"input_ids": _ids(50), "attention_mask": _mask()}, tuple(calls),
                  f"{__name__}.BaseModelOutput")


def bert() -> HFCase:
    torch.manual_seed(0)
    model = BertModel().eval()
    calls = ["embeddings.word_embeddings", "embeddings.token_type_embeddings", "embeddings.position_embeddings",
             "embeddings.LayerNorm", "embeddings.dropout"]
    for i in range(2):
        p = f"layer.{i}"
        calls += [f"{p}.attention.query", f"{p}.attention.key", f"{p}.attention.value",
                  f"{p}.attention_output.dense", f"{p}.attention_output.dropout", f"{p}.attention_output.LayerNorm",
                  f"{p}.intermediate", f"{p}.intermediate_act_fn",
                  f"{p}.output.dense", f"{p}.output.dropout", f"{p}.output.LayerNorm"]
    calls += ["pooler.dense", "pooler.activation"]
    kwargs = {"input_ids": _ids(60), "attention_mask": _mask(),
              "token_type_ids": torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1]])}
    return HFCase("bert", model, kwargs, tuple(calls), f"{__name__}.BaseModelOutputWithPooling")


def llama(cache: int = 0) -> HFCase:
    torch.manual_seed(0)
    model = LlamaForCausalLM(cache=cache).eval()
    calls = ["embed_tokens"]
    for i in range(2):
        p = f"layers.{i}"
        calls += [f"{p}.self_attn.q_proj", f"{p}.self_attn.k_proj", f"{p}.self_attn.v_proj",
                  f"{p}.self_attn.o_proj", f"{p}.post_attention_layernorm",
                  f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj", f"{p}.mlp.down_proj"]
    calls.append("lm_head")
    # nn.SiLU runs torch's fused silu kernel, whose bits differ from its Core ATen decomposition
    # x * sigmoid(x): its calls stay sigmoid + mul so that the module view equals ep.module() bit for bit
    kept = ("layers.0.mlp.act_fn", "layers.1.mlp.act_fn")
    return HFCase("llama", model, {"input_ids": _ids(64), "attention_mask": _mask()}, tuple(calls),
                  f"{__name__}.CausalLMOutput", kept)


HF_MODELS: dict[str, Callable[[], HFCase]] = {"gpt2": gpt2, "bert": bert, "llama": llama}
