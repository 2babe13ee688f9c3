"""What a leaf module means to a compiler: the book of lowering rules and the pass that lifts them onto nodes.

- ``book``: typed lowering rules, one place per module type for fetch (declaration) and rebuild.
- ``_builtin_rules``: the rules for ``torch.nn``.
- ``lifting``: the pass that puts each leaf module's lowering attributes on its ``call_module`` node.
- ``compat``: the drop-in replacement for ``torch.fx.passes.param_fetch``.
- ``targets``: canonical names of call targets, the load-time allow-list, Core ATen operators.
- ``signatures``: the overloads of called functions and methods, so a consumer binds arguments without PyTorch.
"""
