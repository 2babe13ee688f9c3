"""On-disk constants shared by the writer and the reader: identifiers, file names, dtype codes and caps.

Everything here is part of the format contract in ``docs/format.md``; changing a value changes the format.
"""

from __future__ import annotations

import torch

#: Value of the manifest's ``format`` field.
FORMAT_ID = "fxlower"
#: (major, minor) of the format this package writes. See docs/format.md, "Versioning".
FORMAT_VERSION = (1, 3)

MANIFEST_FILE = "manifest.msgpack"
WEIGHTS_FILE = "weights.safetensors"
#: 1.3: the name of shard ``i`` (1-based) of ``n`` weights files when a writer splits the weights (n > 1).
WEIGHTS_SHARD_FILE = "weights-{i:05d}-of-{n:05d}.safetensors"
GOLDEN_FILE = "golden.safetensors"

ROLE_WEIGHTS = "weights"
ROLE_GOLDEN = "golden"
FILE_ROLES = (ROLE_WEIGHTS, ROLE_GOLDEN)
#: 1.3: the kinds of a placement's mesh dimension.
MESH_DIM_KINDS = ("shard", "replicate")

#: Node op kinds, the closed set of torch.fx.
OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")

GOLDEN_MODES = ("outputs", "nodes")

# --- caps (a reader rejects anything past them before building objects) ---
MAX_MANIFEST_BYTES = 1 << 30
#: Deepest nesting of msgpack arrays/maps accepted (msgpack-python's own stack limit).
MAX_MSGPACK_DEPTH = 1024
#: Deepest nesting of Values (and of output metadata) accepted.
MAX_VALUE_DEPTH = 64
MAX_NAME_BYTES = 1024
MAX_RANK = 64
MAX_SAFETENSORS_HEADER = 100_000_000
#: Bytes of the safetensors data section start and every tensor start are multiples of this.
SAFETENSORS_ALIGN = 8

# --- dtypes: stable codes, never Python reprs ---
#: Storage dtypes: code -> (torch dtype, item size in bytes). Tensors of these dtypes can be stored.
STORAGE_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F8_E4M3": (torch.float8_e4m3fn, 1),
    "F8_E5M2": (torch.float8_e5m2, 1),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U64": (torch.uint64, 8),
    "U32": (torch.uint32, 4),
    "U16": (torch.uint16, 2),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
#: Dtypes that may appear as argument values (e.g. ``x.to(torch.complex64)``) but are never stored.
VALUE_ONLY_DTYPES: dict[str, torch.dtype] = {
    "C64": torch.complex64,
    "C128": torch.complex128,
}
DTYPE_CODES: dict[str, torch.dtype] = {**{k: v[0] for k, v in STORAGE_DTYPES.items()}, **VALUE_ONLY_DTYPES}
CODE_OF_DTYPE: dict[torch.dtype, str] = {v: k for k, v in DTYPE_CODES.items()}

MEMORY_FORMATS: dict[str, torch.memory_format] = {
    "contiguous_format": torch.contiguous_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
    "preserve_format": torch.preserve_format,
}
LAYOUTS: dict[str, torch.layout] = {
    "strided": torch.strided,
    "sparse_coo": torch.sparse_coo,
    "sparse_csr": torch.sparse_csr,
    "sparse_csc": torch.sparse_csc,
    "sparse_bsr": torch.sparse_bsr,
    "sparse_bsc": torch.sparse_bsc,
    "jagged": torch.jagged,
}

#: Golden-check tolerances per output dtype: |actual - expected| <= atol + rtol * |expected|.
TOLERANCES: dict[str, tuple[float, float]] = {
    "F64": (1e-9, 1e-10),
    "F32": (1e-3, 1e-4),
    "F16": (1e-2, 1e-2),
    "BF16": (2e-2, 2e-2),
    "F8_E4M3": (0.125, 0.125),
    "F8_E5M2": (0.25, 0.25),
}
