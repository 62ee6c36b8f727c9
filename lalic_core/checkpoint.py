"""Loading LALIC checkpoints, the official pretrained ones included (kept for existing code;
the implementation lives in :mod:`lalic_core.models.state_dict` and
:func:`lalic_core.models.factory.load_checkpoint`)."""
from lalic_core.models.factory import load_checkpoint
from lalic_core.models.state_dict import (
    CheckpointMismatchError,
    load_state_dict_strict,
    normalize_state_dict,
    read_state_dict,
    unwrap_state_dict,
)

__all__ = ["CheckpointMismatchError", "load_checkpoint", "load_state_dict_strict",
           "normalize_state_dict", "read_state_dict", "unwrap_state_dict"]
