"""Built-in lowering rules for torch.nn (placeholder: being filled in)."""
import torch.nn as nn
from .book import register_module

register_module(nn.Linear, attrs=["in_features", "out_features", "weight", "bias"])
register_module(nn.ReLU, attrs=["inplace"])
