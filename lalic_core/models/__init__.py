"""LALIC models: :class:`LALIC`, its configuration :class:`LALICConfig` and the named
:data:`PRESETS` ("paper", the ablation rows "2222-conv", "2466-conv", "2466-convplus",
"2466-rwkv", and the CPU-sized "tiny" and "small")."""
from lalic_core.models.lalic import LALIC, PRESETS, LALICConfig, infer_config

__all__ = ["LALIC", "PRESETS", "LALICConfig", "infer_config"]
