"""Artifacts on disk: writing them and reading them back.

- ``tensorfile``: safetensors files: the planned (sharded) streaming, hashing writer and the strict header reader.
- ``writing``: ``fxlower.export``: phases, atomic publication, sharding and placements (format 1.3).
- ``checkpoints``: ``export(weights_from=)``: meta-device models streamed from safetensors checkpoints.
- ``collective``: export as a torch.distributed collective over DTensor shards.
- ``reading``: validation of an artifact in the order of docs/format.md section 10.
- ``declarations``: the reading side of module and function declarations.
- ``mapping``: tensor access through the validated descriptors (views, copies, per-rank slices).
- ``loading``: ``fxlower.load`` and ``Artifact``, the public reading surface.
- ``progress``: progress bars for long reads and writes.
"""
