"""Custom operators of LALIC. ``lalic_core.ops.biwkv`` holds BiWKV (bidirectional WKV
linear attention): ``from lalic_core.ops.biwkv import biwkv``.

(The function is deliberately not re-exported here: ``lalic_core.ops.biwkv`` must stay the
subpackage, so that ``import lalic_core.ops.biwkv.naive`` keeps working.)
"""
