"""The fxlower error hierarchy.

Every error fxlower raises on purpose derives from :class:`FxLowerError`, so a caller can catch one class.
Messages name the node, module type, field or tensor involved, say what was found and what was expected, and
give the fix.

    FxLowerError
    ├── UnsupportedModuleError   a leaf module has no usable lowering rule
    ├── RegistrationError        a rule or function registration is invalid (duplicate, bad attrs)
    ├── LiftError                a rule could not fetch an attribute from a module
    │   └── AttributeTypeError   a lowering attribute is not of its declared type (or not declared)
    ├── ExportError              export could not write the artifact (I/O, unsupported tensor kind, bad value,
    │   │                        an nn.Module that does not trace, example inputs the model does not run on)
    │   ├── ArtifactExistsError  (fxlower.io.writing; also a FileExistsError) the target exists and is not replaced
    │   └── CheckpointMismatchError  weights_from: the checkpoint's tensors do not match the model's meta tensors
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
    "AttributeTypeError",
    "ExportError",
    "CheckpointMismatchError",
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


class AttributeTypeError(LiftError):
    """A lowering attribute's value does not have the type its rule declares, or the name is not declared.

    Attributes:
        node: the node whose module was lifted ("" when rebuilding outside a graph).
        module_type: the type name of the module whose rule declares the attribute.
        attr: the attribute name in the record (dotted).
        expected: the declared type string ("" when the name is not declared).
        found: the value found.
    """

    def __init__(self, message: str, *, node: str, module_type: str, attr: str, expected: str, found: object):
        super().__init__(message)
        self.node = node
        self.module_type = module_type
        self.attr = attr
        self.expected = expected
        self.found = found


class ExportError(FxLowerError):
    """Export could not write the artifact.

    The message names the path, node, tensor or module type at fault and a fix that works with ``export``'s
    own arguments; the underlying error (an ``OSError``, the tracer's or the model's exception) is chained as
    ``__cause__``.
    """


class CheckpointMismatchError(ExportError):
    """``export(..., weights_from=SRC)``: the checkpoint does not match the model's meta tensors, listed all at
    once like ``load_state_dict(strict=True)``.

    Attributes:
        missing: names of meta tensors that no checkpoint file holds (sorted).
        unexpected: ``(name, file)`` of checkpoint tensors that no tensor of the model uses (sorted).
        wrong_shape: ``(name, file, expected shape, found shape)`` (sorted).
        wrong_dtype: ``(name, file, expected dtype code, found dtype code)`` (sorted).
    """

    def __init__(self, message: str, *, missing: list[str], unexpected: list[tuple[str, str]],
                 wrong_shape: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]],
                 wrong_dtype: list[tuple[str, str, str, str]]):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.wrong_shape = wrong_shape
        self.wrong_dtype = wrong_dtype


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
