"""The workbench's own exceptions and warnings (one place, imported by every layer)."""
from __future__ import annotations

__all__ = ["LalicFormatError", "LalicWarning", "ModelMismatchError"]


class LalicFormatError(ValueError):
    """A ``.lalic`` file (or a bitstream inside it) is malformed, damaged or unsupported."""


class ModelMismatchError(LalicFormatError):
    """A ``.lalic`` file was made by a different model than the one asked to decode it."""


class LalicWarning(UserWarning):
    """Something was changed on the user's behalf (image converted, random weights, ...)."""
