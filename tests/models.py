"""A zoo of small, hand-written test models for fxlower.

Every entry of :data:`MODELS` is a zero-argument factory returning a
:class:`ModelCase`.  Factories seed ``torch.manual_seed(0)`` themselves, so
parameters and example inputs are deterministic.  Every module is in eval mode,
traces with ``torch.fx`` symbolic tracing (see :func:`trace`), and runs quickly
on CPU.

Usage::

    from models import MODELS, trace   # or: from tests.models import ...
    case = MODELS["resnet"]()
    gm = trace(case)
    out = gm(*case.inputs, **case.kwargs)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Type

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ModelCase", "MODELS", "trace", "GraphModuleLeafTracer"]


# --------------------------------------------------------------------------
# Case container and helpers
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCase:
    name: str
    module: nn.Module
    inputs: Tuple[Any, ...]
    kwargs: Dict[str, Any] = field(default_factory=dict)
    make_inputs: Optional[Callable[[int], Tuple[Any, ...]]] = None
    tracer_cls: Optional[Type[torch.fx.Tracer]] = None


def trace(case: ModelCase) -> torch.fx.GraphModule:
    """Trace ``case.module`` with the case's tracer (default: symbolic_trace)."""
    if case.tracer_cls is None:
        return torch.fx.symbolic_trace(case.module)
    tracer = case.tracer_cls()
    graph = tracer.trace(case.module)
    return torch.fx.GraphModule(case.module, graph, case.module.__class__.__name__)


class GraphModuleLeafTracer(torch.fx.Tracer):
    """Tracer that keeps ``torch.fx.GraphModule`` submodules as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, torch.fx.GraphModule):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _randn(seed: int, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed)).to(dtype)


def _randint(seed: int, high: int, *shape: int) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=_gen(seed), dtype=torch.int64)


def _case(
    name: str,
    module: nn.Module,
    make_inputs: Callable[[int], Tuple[Any, ...]],
    kwargs: Optional[Dict[str, Any]] = None,
    tracer_cls: Optional[Type[torch.fx.Tracer]] = None,
) -> ModelCase:
    module.eval()
    return ModelCase(
        name=name,
        module=module,
        inputs=make_inputs(0),
        kwargs=dict(kwargs or {}),
        make_inputs=make_inputs,
        tracer_cls=tracer_cls,
    )


# --------------------------------------------------------------------------
# resnet: ResNet-18-shaped CNN with small widths
# --------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: Optional[nn.Module] = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                nn.BatchNorm2d(cout),
            )

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return self.relu(out)


class ResNet18Small(nn.Module):
    def __init__(self, widths=(8, 16, 32, 64), num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = widths[0]
        stages = []
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        return self.fc(self.flatten(self.avgpool(x)))


def _randomize_bn(module: nn.Module) -> None:
    """Give BatchNorm layers non-trivial running stats and affine params."""
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            with torch.no_grad():
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.1, 0.1)


def make_resnet() -> ModelCase:
    torch.manual_seed(0)
    m = ResNet18Small()
    _randomize_bn(m)
    return _case("resnet", m, lambda s: (_randn(s, 1, 3, 32, 32),))


# --------------------------------------------------------------------------
# mobilenetv3
# --------------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    def __init__(self, ch: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(ch, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, ch, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return x * s


class InvertedResidual(nn.Module):
    def __init__(self, cin, expand, cout, kernel, stride, use_se, use_hs) -> None:
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        act = nn.Hardswish if use_hs else nn.ReLU
        layers = []
        if expand != cin:
            layers += [nn.Conv2d(cin, expand, 1, bias=False), nn.BatchNorm2d(expand), act()]
        layers += [
            nn.Conv2d(expand, expand, kernel, stride, kernel // 2, groups=expand, bias=False),
            nn.BatchNorm2d(expand),
            act(),
        ]
        if use_se:
            layers.append(SqueezeExcite(expand, max(8, expand // 4)))
        layers += [nn.Conv2d(expand, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        if self.use_res:
            y = y + x
        return y


class MobileNetV3Small(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
        )
        cfg = [
            # cin, exp, cout, k, s, se, hs
            (16, 16, 16, 3, 2, True, False),
            (16, 48, 24, 3, 2, False, False),
            (24, 64, 24, 3, 1, False, False),
            (24, 72, 32, 5, 2, True, True),
            (32, 96, 32, 5, 1, True, True),
        ]
        self.features = nn.Sequential(*[InvertedResidual(*c) for c in cfg])
        self.last = nn.Sequential(nn.Conv2d(32, 96, 1, bias=False), nn.BatchNorm2d(96), nn.Hardswish())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(96, 128), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(128, num_classes)
        )

    def forward(self, x):
        x = self.last(self.features(self.stem(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(x)


def make_mobilenetv3() -> ModelCase:
    torch.manual_seed(0)
    m = MobileNetV3Small()
    _randomize_bn(m)
    return _case("mobilenetv3", m, lambda s: (_randn(s, 1, 3, 32, 32),))


# --------------------------------------------------------------------------
# unet
# --------------------------------------------------------------------------


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int, reflect: bool = False, leaky: bool = False) -> None:
        super().__init__()
        pm = "reflect" if reflect else "zeros"
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, padding_mode=pm, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.LeakyReLU(0.1) if leaky else nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.LeakyReLU(0.1) if leaky else nn.ReLU()

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(x)))


class UNetSmall(nn.Module):
    def __init__(self, cin: int = 3, ncls: int = 2) -> None:
        super().__init__()
        self.enc1 = DoubleConv(cin, 8, reflect=True)
        self.pool = nn.MaxPool2d(2)
        self.enc2 = DoubleConv(8, 16)
        self.enc3 = DoubleConv(16, 32, leaky=True)
        # decoder: learnable upsampling, bilinear, nearest
        self.up3 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec3 = DoubleConv(32, 16, leaky=True)
        self.up2 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.red2 = nn.Conv2d(16, 8, 1)
        self.dec2 = DoubleConv(16, 8)
        self.up_near = nn.Upsample(scale_factor=2, mode="nearest")
        self.head_pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(8, ncls, 1)

    def forward(self, x):
        e1 = self.enc1(x)  # 8 x 32 x 32
        e2 = self.enc2(self.pool(e1))  # 16 x 16 x 16
        e3 = self.enc3(self.pool(e2))  # 32 x 8 x 8
        d3 = self.dec3(torch.cat([self.up3(e3), e2], dim=1))  # 16 x 16 x 16
        d2 = self.dec2(torch.cat([self.red2(self.up2(d3)), e1], dim=1))  # 8 x 32 x 32
        out = self.head(self.head_pool(d2))  # 2 x 16 x 16
        return self.up_near(out)  # 2 x 32 x 32


def make_unet() -> ModelCase:
    torch.manual_seed(0)
    m = UNetSmall()
    _randomize_bn(m)
    return _case("unet", m, lambda s: (_randn(s, 1, 3, 32, 32),))


# --------------------------------------------------------------------------
# vit
# --------------------------------------------------------------------------


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViTSmall(nn.Module):
    def __init__(self, img=32, patch=8, dim=32, heads=4, mlp=64, depth=2, ncls=10) -> None:
        super().__init__()
        n = (img // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, ncls)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # B, N, D
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def make_vit() -> ModelCase:
    torch.manual_seed(0)
    return _case("vit", ViTSmall(), lambda s: (_randn(s, 1, 3, 32, 32),))


# --------------------------------------------------------------------------
# gpt_masked / gpt_sdpa
# --------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, block_size: int, use_sdpa: bool) -> None:
        super().__init__()
        self.n_head = heads
        self.n_embd = dim
        self.use_sdpa = use_sdpa
        self.c_attn = nn.Linear(dim, 3 * dim)
        self.c_proj = nn.Linear(dim, dim)
        if not use_sdpa:
            self.register_buffer(
                "bias",
                torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size),
            )

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hd = C // self.n_head
        q = q.view(B, T, self.n_head, hd).transpose(1, 2)
        k = k.view(B, T, self.n_head, hd).transpose(1, 2)
        v = v.view(B, T, self.n_head, hd).transpose(1, 2)
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
            # ``self.bias`` is a plain tensor during symbolic tracing (buffers are
            # not proxied by default) and a real tensor cannot be sliced with the
            # proxy ``T``; ``type_as`` (a no-op at runtime) turns it into a proxy.
            mask = self.bias.type_as(att)[:, :, :T, :T]
            att = att.masked_fill(mask == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class GPTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, block_size: int, use_sdpa: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, block_size, use_sdpa)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim)
        )

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPTSmall(nn.Module):
    def __init__(self, vocab=64, block_size=32, dim=32, heads=4, depth=2, use_sdpa=False) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.wpe = nn.Embedding(block_size, dim)
        self.drop = nn.Dropout(0.1)
        self.h = nn.ModuleList([GPTBlock(dim, heads, block_size, use_sdpa) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def _gpt_inputs(s: int):
    return (_randint(s, 64, 1, 16),)


def make_gpt_masked() -> ModelCase:
    torch.manual_seed(0)
    return _case("gpt_masked", GPTSmall(use_sdpa=False), _gpt_inputs)


def make_gpt_sdpa() -> ModelCase:
    torch.manual_seed(0)
    return _case("gpt_sdpa", GPTSmall(use_sdpa=True), _gpt_inputs)


# --------------------------------------------------------------------------
# lstm_tagger
# --------------------------------------------------------------------------


class LSTMTagger(nn.Module):
    def __init__(self, vocab=50, emb=16, hidden=16, ntags=5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(2 * hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, ntags)

    def forward(self, tokens):
        x = self.embed(tokens)
        x = self.lstm(x)[0]
        x = self.gru(x)[0]
        return self.out(x)


def make_lstm_tagger() -> ModelCase:
    torch.manual_seed(0)
    return _case("lstm_tagger", LSTMTagger(), lambda s: (_randint(s, 50, 2, 12),))


# --------------------------------------------------------------------------
# audio1d
# --------------------------------------------------------------------------


class Audio1D(nn.Module):
    def __init__(self, ncls: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 16, 9, stride=2, padding=4)
        self.gn = nn.GroupNorm(4, 16)
        self.glu = nn.GLU(dim=1)  # 16 -> 8 channels
        self.conv2 = nn.Conv1d(8, 16, 3, padding=2, dilation=2)
        self.act = nn.ReLU()
        self.maxpool = nn.MaxPool1d(2)
        self.conv3 = nn.Conv1d(16, 16, 3, padding=1)
        self.inorm = nn.InstanceNorm1d(16, affine=True)
        self.avgpool = nn.AvgPool1d(3, stride=2, padding=1)
        self.gap = nn.AdaptiveAvgPool1d(4)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 4, ncls)

    def forward(self, x):
        x = self.glu(self.gn(self.conv1(x)))
        x = self.maxpool(self.act(self.conv2(x)))
        x = self.avgpool(self.inorm(self.conv3(x)))
        return self.fc(self.flatten(self.gap(x)))


def make_audio1d() -> ModelCase:
    torch.manual_seed(0)
    return _case("audio1d", Audio1D(), lambda s: (_randn(s, 2, 1, 256),))


# --------------------------------------------------------------------------
# cnn3d
# --------------------------------------------------------------------------


class CNN3D(nn.Module):
    def __init__(self, ncls: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(2, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm3d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool3d(2)
        self.conv2 = nn.Conv3d(8, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(16)
        self.avgpool = nn.AvgPool3d(2)
        self.gap = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(16, ncls)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.relu(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(self.gap(x), 1))


def make_cnn3d() -> ModelCase:
    torch.manual_seed(0)
    m = CNN3D()
    _randomize_bn(m)
    return _case("cnn3d", m, lambda s: (_randn(s, 1, 2, 8, 16, 16),))


# --------------------------------------------------------------------------
# transformer_encoder
# --------------------------------------------------------------------------


class TransformerEncoderModel(nn.Module):
    def __init__(self, din: int = 12, d_model: int = 32, dout: int = 5) -> None:
        super().__init__()
        self.inp = nn.Linear(din, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model=d_model, nhead=4, dim_feedforward=64, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.out = nn.Linear(d_model, dout)

    def forward(self, x):
        return self.out(self.encoder(self.inp(x)))


def make_transformer_encoder() -> ModelCase:
    torch.manual_seed(0)
    return _case("transformer_encoder", TransformerEncoderModel(), lambda s: (_randn(s, 2, 10, 12),))


# --------------------------------------------------------------------------
# nested_graphmodule
# --------------------------------------------------------------------------


class _ConvReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x)) + x


class NestedGraphModuleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.block = torch.fx.symbolic_trace(_ConvReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.block(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def make_nested_graphmodule() -> ModelCase:
    torch.manual_seed(0)
    return _case(
        "nested_graphmodule",
        NestedGraphModuleModel(),
        lambda s: (_randn(s, 1, 3, 8, 8),),
        tracer_cls=GraphModuleLeafTracer,
    )


# --------------------------------------------------------------------------
# multi_input_kwargs
# --------------------------------------------------------------------------


class MultiInputKwargs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.gate = nn.Linear(8, 8, bias=False)

    def forward(self, x, mask=None, bias=None):
        h = self.proj(x)
        if bias is not None:
            h = h + bias
        h = torch.clamp(h, min=-1.5, max=1.5)
        s = torch.sum(h, dim=1, keepdim=True)
        p = F.softmax(h, dim=-1)
        g = torch.where(h > 0, h, torch.zeros_like(h))
        if mask is not None:
            p = p.masked_fill(mask < 0.5, 0.0)
            g = torch.where(mask >= 0.5, g, h * 0.1)
        out = self.gate(g) + p * s
        out = out.clamp(min=-3.0) + (x != 0).to(x.dtype) * h.mean(dim=-1, keepdim=True)
        return torch.max(out, torch.full_like(out, -2.0))


def make_multi_input_kwargs() -> ModelCase:
    torch.manual_seed(0)

    def make(s: int):
        return (_randn(s, 3, 8), torch.rand(3, 8, generator=_gen(s + 1)), _randn(s + 2, 8))

    return _case("multi_input_kwargs", MultiInputKwargs(), make)


# --------------------------------------------------------------------------
# dict_tuple_outputs
# --------------------------------------------------------------------------


class DictTupleOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 12)
        self.act = nn.Tanh()
        self.head_a = nn.Linear(12, 4)
        self.head_b = nn.Linear(12, 2)

    def forward(self, x):
        h = self.act(self.body(x))
        a = self.head_a(h)
        b = self.head_b(h)
        c, d = torch.chunk(h, 2, dim=-1)
        return {"logits": a, "aux": (b, [c, d.sigmoid()])}


def make_dict_tuple_outputs() -> ModelCase:
    torch.manual_seed(0)
    return _case("dict_tuple_outputs", DictTupleOutputs(), lambda s: (_randn(s, 2, 6),))


# --------------------------------------------------------------------------
# bf16_mlp
# --------------------------------------------------------------------------


class BF16MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(32, 32)
        self.act2 = nn.GELU()
        self.fc3 = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act(self.fc1(x)))))


def make_bf16_mlp() -> ModelCase:
    torch.manual_seed(0)
    m = BF16MLP().to(torch.bfloat16)
    return _case("bf16_mlp", m, lambda s: (_randn(s, 4, 16, dtype=torch.bfloat16),))


# --------------------------------------------------------------------------
# getitem_shapes
# --------------------------------------------------------------------------


class GetitemShapes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, x):  # x: (B=2, C=8, L=6)
        B = x.size(0)
        L = x.shape[-1]
        x = self.lin(x)
        a = x[:, 1:5:2]  # (2, 2, 6)
        b = x[..., None]  # (2, 8, 6, 1)
        first = x[0]  # (8, 6)
        r = x.reshape(B, x.shape[1] // 2, L * 2)  # (2, 4, 12)
        c0, c1 = torch.chunk(r, 2, dim=1)  # (2, 2, 12) each
        parts = torch.split(x, [3, 5], dim=1)
        u = torch.unbind(x, dim=1)
        p = x.permute(0, 2, 1)  # (2, 6, 8)
        f = b.flatten(1)  # (2, 48)
        q = a.unsqueeze(1).squeeze(1)  # (2, 2, 6)
        e = first[None].expand(B, -1, -1)  # (2, 8, 6)
        rep = c0.repeat(1, 1, 2)  # (2, 2, 24)
        n = x.narrow(2, 1, 3)  # (2, 8, 3)
        st = torch.stack([u[0], u[-1], parts[0][:, 2]], dim=1)  # (2, 3, 6)
        ein = torch.einsum("bij,bjk->bik", st, p)  # (2, 3, 8)
        bm = torch.bmm(ein, e)  # (2, 3, 6)
        out = (
            bm.amax(dim=1, keepdim=True)
            + q.mean(dim=1, keepdim=True)
            + n.sum(dim=-1, keepdim=True).mean(dim=1, keepdim=True)
            + parts[1].sum(dim=(1,), keepdim=True)
        )  # (2, 1, 6)
        extra = torch.cat([c1, rep[..., :12]], dim=1).sum(-1)  # (2, 4)
        return out.squeeze(1), f[:, :4] + extra, b.shape[2] * a


def make_getitem_shapes() -> ModelCase:
    torch.manual_seed(0)
    return _case("getitem_shapes", GetitemShapes(), lambda s: (_randn(s, 2, 8, 6),))


# --------------------------------------------------------------------------
# misc_leaves_a: activations
# --------------------------------------------------------------------------


class MiscLeavesA(nn.Module):
    """Elementwise activations, softmax family and shrink/threshold functions."""

    def __init__(self) -> None:
        super().__init__()
        self.acts = nn.Sequential(
            nn.PReLU(4),
            nn.ELU(alpha=0.9),
            nn.SELU(),
            nn.CELU(alpha=1.1),
            nn.SiLU(),
            nn.Mish(),
            nn.Softplus(beta=2.0, threshold=10.0),
            nn.Tanh(),
            nn.Hardtanh(-0.5, 0.5),
            nn.ReLU6(),
            nn.Sigmoid(),
            nn.LogSigmoid(),
            nn.Softsign(),
            nn.Softshrink(0.1),
            nn.Hardshrink(0.05),
            nn.Tanhshrink(),
            nn.Threshold(-0.01, 0.25),
            nn.Identity(),
        )
        self.smax = nn.Softmax(dim=-1)
        self.lsmax = nn.LogSoftmax(dim=1)
        self.smin = nn.Softmin(dim=2)
        self.smax2d = nn.Softmax2d()

    def forward(self, x):  # x: (1, 4, 8, 8)
        y = self.acts(x * 3.0)
        return self.smax(y) + self.lsmax(x) + self.smin(y) + self.smax2d(x)


def make_misc_leaves_a() -> ModelCase:
    torch.manual_seed(0)
    return _case("misc_leaves_a", MiscLeavesA(), lambda s: (_randn(s, 1, 4, 8, 8),))


# --------------------------------------------------------------------------
# misc_leaves_b: padding, shuffles, pooling, normalisation, resampling
# --------------------------------------------------------------------------


class MiscLeavesB(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.zpad = nn.ZeroPad2d(1)  # 8 -> 10
        self.cpad = nn.ConstantPad2d((1, 1, 0, 0), 0.5)  # 10x10 -> 10x12
        self.rpad = nn.ReflectionPad2d((1, 0, 1, 0))  # -> 11x13
        self.reppad = nn.ReplicationPad2d((0, 1, 0, 1))  # -> 12x14
        self.circpad = nn.CircularPad2d(1)  # -> 14x16
        self.conv = nn.Conv2d(4, 8, 3)  # -> 8 x 12x14
        self.lrn = nn.LocalResponseNorm(3)
        self.shuffle = nn.ChannelShuffle(2)
        self.unshuffle = nn.PixelUnshuffle(2)  # 8x12x14 -> 32x6x7
        self.pshuffle = nn.PixelShuffle(2)  # -> 8x12x14
        self.gn = nn.GroupNorm(2, 8)
        self.drop2d = nn.Dropout2d(0.3)
        self.lppool = nn.LPPool2d(2, 2)  # -> 8x6x7
        self.avgpool = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.up_near = nn.UpsamplingNearest2d(scale_factor=2)
        self.up_bil = nn.UpsamplingBilinear2d(size=(6, 7))
        self.amax = nn.AdaptiveMaxPool2d((2, 3))
        self.ln = nn.LayerNorm([8, 2, 3])
        self.rms = nn.RMSNorm(6, eps=1e-5)
        self.flat = nn.Flatten(2)  # (1, 8, 6)
        self.unflat = nn.Unflatten(2, (2, 3))

    def forward(self, x):  # x: (1, 4, 8, 8)
        x = self.circpad(self.reppad(self.rpad(self.cpad(self.zpad(x)))))
        x = self.shuffle(self.lrn(self.conv(x)))
        x = self.drop2d(self.gn(self.pshuffle(self.unshuffle(x))))
        a = self.lppool(x.abs() + 0.1)  # 8x6x7
        b = self.avgpool(x)  # 8x6x7
        c = self.up_bil(self.up_near(b))  # 8x6x7
        y = self.amax(a + c)  # 8x2x3
        y = self.ln(y)
        y = self.rms(self.flat(y))
        return self.unflat(y)


def make_misc_leaves_b() -> ModelCase:
    torch.manual_seed(0)
    return _case("misc_leaves_b", MiscLeavesB(), lambda s: (_randn(s, 1, 4, 8, 8),))


# --------------------------------------------------------------------------
# misc_leaves_c: multi-input leaves, fold/unfold, EmbeddingBag
# --------------------------------------------------------------------------


class MiscLeavesC(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.unfold = nn.Unfold(kernel_size=2, stride=2)  # (1, 3, 8, 8) -> (1, 12, 16)
        self.fold = nn.Fold(output_size=(8, 8), kernel_size=2, stride=2)
        self.cos = nn.CosineSimilarity(dim=1, eps=1e-6)
        self.pdist = nn.PairwiseDistance(p=2.0, keepdim=True)
        self.bil = nn.Bilinear(12, 12, 5)
        self.bag = nn.EmbeddingBag(20, 5, mode="mean")
        self.norm = nn.LayerNorm(5)

    def forward(self, x, y, ids, offsets):
        # x, y: (1, 3, 8, 8); ids: (N,) int64; offsets: (B=4,) int64
        px = self.unfold(x)  # (1, 12, 16)
        py = self.unfold(y)
        rec = self.fold(px * 0.5 + py * 0.5)  # (1, 3, 8, 8)
        cs = self.cos(px, py)  # (1, 16)
        fx = px.transpose(1, 2).reshape(16, 12)
        fy = py.transpose(1, 2).reshape(16, 12)
        pdist = self.pdist(fx, fy)  # (16, 1)
        bil = self.bil(fx, fy)  # (16, 5)
        bag = self.bag(ids, offsets)  # (4, 5)
        emb = self.norm(bag).repeat(4, 1)  # (16, 5)
        return rec, cs, bil + pdist + emb


def make_misc_leaves_c() -> ModelCase:
    torch.manual_seed(0)

    def make(s: int):
        return (
            _randn(s, 1, 3, 8, 8),
            _randn(s + 1, 1, 3, 8, 8),
            _randint(s + 2, 20, 10),
            torch.tensor([0, 3, 5, 8], dtype=torch.int64),
        )

    return _case("misc_leaves_c", MiscLeavesC(), make)


# --------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------



# --------------------------------------------------------------------------
# regnet: torchvision RegNet-shaped model whose submodule names are not
# identifiers ("block1-0"), with squeeze-excitation and grouped convolutions
# --------------------------------------------------------------------------


class ConvNormAct(nn.Sequential):
    """torchvision's Conv2dNormActivation: conv (no bias), batch norm, optional ReLU, as children 0, 1, 2."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class RegNetSE(nn.Module):
    """torchvision's SqueezeExcitation: avgpool, fc1, activation, fc2, scale_activation."""

    def __init__(self, ch: int, squeeze: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(ch, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, ch, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class BottleneckTransform(nn.Sequential):
    """a (1x1), b (3x3 grouped, strided), se, c (1x1, no activation): torchvision's child names."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int, se_ratio: float) -> None:
        groups = cout // group_width
        layers = {
            "a": ConvNormAct(cin, cout, 1),
            "b": ConvNormAct(cout, cout, 3, stride, groups=groups),
            "se": RegNetSE(cout, max(1, int(round(se_ratio * cin)))),
            "c": ConvNormAct(cout, cout, 1, act=False),
        }
        super().__init__()
        for name, module in layers.items():
            self.add_module(name, module)


class ResBottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int, se_ratio: float) -> None:
        super().__init__()
        self.proj = None
        if cin != cout or stride != 1:
            self.proj = ConvNormAct(cin, cout, 1, stride, act=False)
        self.f = BottleneckTransform(cin, cout, stride, group_width, se_ratio)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        shortcut = x if self.proj is None else self.proj(x)
        return self.activation(shortcut + self.f(x))


class AnyStage(nn.Sequential):
    """Blocks named "block{stage}-{i}", as torchvision names them."""

    def __init__(self, cin: int, cout: int, stride: int, depth: int, group_width: int, stage: int) -> None:
        super().__init__()
        for i in range(depth):
            block = ResBottleneckBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, group_width, 0.25)
            self.add_module(f"block{stage}-{i}", block)


class RegNetSmall(nn.Module):
    """stem, trunk_output (block1, block2 with blocks block1-0, block1-1, block2-0), avgpool, fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, 8, 3, 2)
        stages = [(8, 16, 2, 2, 8), (16, 32, 2, 1, 8)]  # cin, cout, stride, depth, group width
        self.trunk_output = nn.Sequential()
        for i, (cin, cout, stride, depth, gw) in enumerate(stages, 1):
            self.trunk_output.add_module(f"block{i}", AnyStage(cin, cout, stride, depth, gw, i))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.trunk_output(self.stem(x))
        return self.fc(self.avgpool(x).flatten(start_dim=1))


def make_regnet() -> ModelCase:
    torch.manual_seed(0)
    m = RegNetSmall()
    _randomize_bn(m)
    return _case("regnet", m, lambda s: (_randn(s, 2, 3, 32, 32),))


# --------------------------------------------------------------------------
# odd_names: submodule, parameter and buffer names with a space and non-ASCII
# --------------------------------------------------------------------------


class _Gain(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("γ", torch.linspace(0.5, 1.5, n))
        self.register_parameter("β", nn.Parameter(torch.linspace(-0.2, 0.2, n)))

    def forward(self, x):
        return x * self.γ + self.β


class OddNamesNet(nn.Module):
    """Children "layer 1" (a Sequential with a Linear and a LayerNorm), "ü" (a module with buffer "γ" and
    parameter "β") and "2nd-head"."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module("layer 1", nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8)))
        self.add_module("ü", _Gain(8))
        self.add_module("2nd-head", nn.Linear(8, 3))

    def forward(self, x):
        h = getattr(self, "layer 1")(x)
        h = torch.relu(getattr(self, "ü")(h))
        return getattr(self, "2nd-head")(h)


def make_odd_names() -> ModelCase:
    torch.manual_seed(0)
    return _case("odd_names", OddNamesNet(), lambda s: (_randn(s, 4, 6),))


MODELS: Dict[str, Callable[[], ModelCase]] = {
    "resnet": make_resnet,
    "mobilenetv3": make_mobilenetv3,
    "unet": make_unet,
    "vit": make_vit,
    "gpt_masked": make_gpt_masked,
    "gpt_sdpa": make_gpt_sdpa,
    "lstm_tagger": make_lstm_tagger,
    "audio1d": make_audio1d,
    "cnn3d": make_cnn3d,
    "transformer_encoder": make_transformer_encoder,
    "nested_graphmodule": make_nested_graphmodule,
    "multi_input_kwargs": make_multi_input_kwargs,
    "dict_tuple_outputs": make_dict_tuple_outputs,
    "bf16_mlp": make_bf16_mlp,
    "getitem_shapes": make_getitem_shapes,
    "misc_leaves_a": make_misc_leaves_a,
    "misc_leaves_b": make_misc_leaves_b,
    "misc_leaves_c": make_misc_leaves_c,
    "regnet": make_regnet,
    "odd_names": make_odd_names,
}
