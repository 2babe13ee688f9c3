"""What users run on artifacts.

- ``cli`` / ``cli_export``: the ``fxlower`` command line (export, diff, view, inspect, validate, dump, clean, demo).
- ``diff``: structural comparison of two artifacts.
- ``dump``: the canonical one-fact-per-line dump shared with the C++ ``fxlower-dump``.
- ``viewer`` (+ ``viewer_assets/``): the self-contained HTML graph viewer.
- ``examples``: the built-in example model of ``fxlower demo``.
"""
