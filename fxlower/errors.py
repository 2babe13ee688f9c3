"""The fxlower error hierarchy.

Every error fxlower raises on purpose derives from :class:`FxLowerError`, so a caller can catch one class.
Messages name the node, module type, field or tensor involved, say what was found and what was expected, and
give the fix.

    FxLowerError
    ├── UnsupportedModuleError   a leaf module has no usable lowering rule
    ├── RegistrationError        a rule or function registration is invalid (duplicate, bad attrs)
    ├── LiftError                a rule could not fetch an attribute from a module
    ├── ExportError              export could not write the artifact (I/O, unsupported tensor kind, bad value,
    │   │                        an nn.Module that does not trace, example inputs the model does not run on)
    │   └── ArtifactExistsError  (fxlower.writing; also a FileExistsError) the target exists and is not replaced
    ├── UnsupportedTargetError   a call_function target is neither allow-listed nor registered
    └── FormatError              an artifact is malformed; ``code`` is the stable id shared with the C++ reader
        └── VersionError         wrong format identifier or an unsupported format version
"""

from __future__ import annotations

__all__ = [
    "FxLowerError",
    "UnsupportedModuleError",
    "RegistrationError",
    "LiftError",
    "ExportError",
    "UnsupportedTargetError",
    "FormatError",
    "VersionError",
]


class FxLowerError(Exception):
    """Base class of every error fxlower raises on purpose."""


class UnsupportedModuleError(FxLowerError):
    """A leaf module has no usable lowering rule.

    ``unsupported`` maps each qualified module type name to the list of ``(node name, reason)`` that use it.
    """

    def __init__(self, message: str, unsupported: dict[str, list[tuple[str, str]]] | None = None):
        super().__init__(message)
        self.unsupported = unsupported or {}


class RegistrationError(FxLowerError):
    """A lowering rule or function registration is invalid."""


class LiftError(FxLowerError):
    """A lowering rule could not fetch or encode an attribute of a module."""


class ExportError(FxLowerError):
    """Export could not write the artifact.

    The message names the path, node, tensor or module type at fault and a fix that works with ``export``'s
    own arguments; the underlying error (an ``OSError``, the tracer's or the model's exception) is chained as
    ``__cause__``.
    """


class UnsupportedTargetError(FxLowerError):
    """A ``call_function`` target is not on the allow-list and was not registered."""


class FormatError(FxLowerError):
    """An artifact is malformed.

    ``code`` is a stable identifier (e.g. ``"manifest.duplicate_key"``) that the C++ reader reports too;
    ``where`` names the file and field or tensor at fault.
    """

    def __init__(self, code: str, message: str, where: str = ""):
        self.code = code
        self.where = where
        text = f"[{code}] {where}: {message}" if where else f"[{code}] {message}"
        super().__init__(text)


class VersionError(FormatError):
    """The artifact's format identifier or version is not one this reader supports."""
