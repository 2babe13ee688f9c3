"""The built-in example model used by ``fxlower demo`` and the README: a small residual CNN classifier."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ExampleNet", "example"]


class _Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.relu(x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class ExampleNet(nn.Module):
    """Conv stem, two residual blocks (one depthwise conv each), pooling and a linear head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.act = nn.Hardswish()
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.blocks = nn.Sequential(_Block(16), _Block(16))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(16, classes)

    def forward(self, x):
        x = self.pool(self.act(self.stem(x)))
        x = self.blocks(x)
        return torch.softmax(self.head(self.flatten(self.gap(x))), dim=-1)


def example(seed: int = 0) -> tuple[torch.fx.GraphModule, tuple[torch.Tensor]]:
    """The traced example (eval mode, non-trivial BatchNorm statistics) and one example input."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ExampleNet().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    gm = torch.fx.symbolic_trace(model)
    return gm, (torch.randn(1, 3, 32, 32, generator=g),)
