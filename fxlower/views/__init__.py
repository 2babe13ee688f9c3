"""The program's two views and the way back to PyTorch.

- ``core``: the core view: a ``torch.export`` program in Core ATen, linked node to node to the module view.
- ``derive``: a module view derived from a core view, for models ``symbolic_trace`` cannot take.
- ``rebuild``: an executable ``torch.fx.GraphModule`` from a loaded artifact, in either view.
"""
