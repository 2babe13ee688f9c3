"""fxlower: export torch.fx graphs with their lowering attributes to an artifact C++ compilers read."""
from .book import register_module
from .errors import (ExportError, FormatError, FxLowerError, LiftError, RegistrationError,
                     UnsupportedModuleError, UnsupportedTargetError, VersionError)

__version__ = "0.1.0"
