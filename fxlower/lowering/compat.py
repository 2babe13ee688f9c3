"""Drop-in replacement for ``torch.fx.passes.param_fetch``, backed by fxlower's book.

Code written against the seed works by changing one import::

    from fxlower.lowering.compat import lift_lowering_attrs_to_nodes   # was: from torch.fx.passes.param_fetch import ...

Behaviour kept from the seed: ``extract_attrs_for_lowering`` returns a dict whose ``"name"`` key is
``torch.typename(mod)`` followed by the raw attribute values; ``lift_lowering_attrs_to_nodes`` stores it as
``node.attrs_for_lowering`` and recurses into nested GraphModules; ``module_fetch_book`` maps a class to
``(version, [declared attribute names], matching function)``. What changes: the book covers ``torch.nn`` and user
registrations, and an unsupported module raises :class:`CompatUnsupportedModuleError`, which is both an
``fxlower.UnsupportedModuleError`` and the ``RuntimeError`` the seed raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn
from torch.fx.graph_module import GraphModule

from . import book
from .book import default_matching
from ..errors import UnsupportedModuleError

__all__ = [
    "default_matching",
    "extract_attrs_for_lowering",
    "lift_lowering_attrs_to_nodes",
    "module_fetch_book",
    "CompatUnsupportedModuleError",
]


class CompatUnsupportedModuleError(UnsupportedModuleError, RuntimeError):
    """Raised where the seed raised ``RuntimeError``."""


class _FetchBook(Mapping):
    """Live, read-only view of the registry in the seed's shape: ``cls -> (version, attrs, matching)``."""

    def __getitem__(self, cls: type) -> tuple[int, list[str], Callable[[str, int], str]]:
        rule = book.find_rule(cls)
        if rule is None:
            raise KeyError(cls)
        return rule.module_version, list(rule.names), rule.match

    def __iter__(self) -> Iterator[type]:
        return iter([r.module_type for r in book.rules()])

    def __len__(self) -> int:
        return len(book.rules())


module_fetch_book: Mapping[type, tuple[int, list[str], Callable[[str, int], str]]] = _FetchBook()


def extract_attrs_for_lowering(mod: nn.Module) -> dict[str, Any]:
    """The seed's record for one module: ``{"name": torch.typename(mod), attr: value, ...}``.

    Raises:
        CompatUnsupportedModuleError: no usable rule (an ``UnsupportedModuleError`` and a ``RuntimeError``).
    """
    try:
        rule = book.rule_for(mod)
    except UnsupportedModuleError as e:
        raise CompatUnsupportedModuleError(
            f"{e}; register one with fxlower.register_module({type(mod).__qualname__}, "
            f"attrs={{'weight': 'tensor', ...}})") from e
    attrs: dict[str, Any] = {"name": torch.typename(mod)}
    attrs.update(rule.fetch(mod))
    return attrs


def lift_lowering_attrs_to_nodes(fx_module: GraphModule) -> None:
    """Set ``node.attrs_for_lowering`` on every leaf ``call_module`` node, recursing into GraphModules."""
    submodules = dict(fx_module.named_modules())
    for node in fx_module.graph.nodes:
        if node.op == "call_module":
            if isinstance(submodules[node.target], GraphModule):
                lift_lowering_attrs_to_nodes(submodules[node.target])
            else:
                node.attrs_for_lowering = extract_attrs_for_lowering(submodules[node.target])
