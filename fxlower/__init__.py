"""fxlower: export torch.fx graphs, with every leaf module's lowering attributes, to an artifact that accelerator
compilers read without Python.

The verbs::

    fxlower.lift(gm)                      # lowering records on every leaf call_module node
    fxlower.export(gm, path, inputs)      # write the artifact directory (docs/format.md)
    fxlower.load(path)                    # read it back, safely; .to_graph_module() rebuilds the program
    fxlower.register_module(cls, ...)     # a lowering rule for your own leaf module
    fxlower.register_function(fn)         # allow your own call_function target on load
"""

__version__ = "0.1.0"

from .lowering.book import register_module
from .lowering import _builtin_rules  # noqa: F401,E402  (registers the torch.nn rules; imports the book)
from .format.constants import FORMAT_VERSION
from .errors import (AttributeTypeError, CheckpointMismatchError, ExportError, FormatError, FxLowerError, LiftError, RegistrationError,
                     UnsupportedModuleError, UnsupportedTargetError, VersionError)
from .lowering.lifting import LoweringRecord, lift
from .io.loading import Artifact, load
from .lowering.targets import register_function
from .io.writing import ArtifactExistsError, ExportSummary, export

__all__ = [
    "__version__",
    "FORMAT_VERSION",
    "lift",
    "export",
    "load",
    "register_module",
    "register_function",
    "Artifact",
    "ExportSummary",
    "LoweringRecord",
    "FxLowerError",
    "UnsupportedModuleError",
    "RegistrationError",
    "LiftError",
    "AttributeTypeError",
    "ExportError",
    "ArtifactExistsError",
    "CheckpointMismatchError",
    "UnsupportedTargetError",
    "FormatError",
    "VersionError",
]
