"""LALIC models (Feng et al., CVPR 2025): :class:`LALIC`, its configuration
:class:`LALICConfig` with the named :data:`PRESETS` (:mod:`.config`), state-dict loading
(:mod:`.state_dict`) and models by name or checkpoint file (:mod:`.factory`)."""
from lalic_core.models.config import PRESETS, TRANSFORM_BLOCKS, LALICConfig
from lalic_core.models.factory import build_model, load_checkpoint, preset_names
from lalic_core.models.lalic import LALIC
from lalic_core.models.state_dict import CheckpointMismatchError, infer_config

__all__ = ["LALIC", "PRESETS", "TRANSFORM_BLOCKS", "CheckpointMismatchError", "LALICConfig",
           "build_model", "infer_config", "load_checkpoint", "preset_names"]
