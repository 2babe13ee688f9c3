"""The on-disk contract of docs/format.md, shared by the writer and the readers.

- ``constants``: identifiers, file names, dtype codes and caps.
- ``schema``: the manifest's objects as frozen dataclasses, their checked decoding and the JSON Schema.
- ``values``: Python values <-> Values and output metadata (one walker, kinds carried, never guessed).
- ``names``: name, path and identifier rules.
- ``attrtypes``: the type grammar of lowering attributes.
- ``symbols`` / ``symbolic``: shape-symbol expressions of the core view: printed from torch's sympy, parsed and
  evaluated by readers.
"""
