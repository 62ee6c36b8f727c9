"""Store the entropy-coder tables in the zoo entries that lack them (exported before tables
were stored): ``python scripts/store_zoo_tables.py [WEIGHTS_DIR]``.

Each entry's weights keep their bytes; the tables are computed deterministically from them
(:func:`lalic_core.coder_tables.update_coder_tables`) and the record's size and SHA-256 are
updated (validation numbers unchanged). Prints, per entry, whether the weight tensors are
byte-identical to before.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from lalic_core.training.export import CODER_TABLES, store_coder_tables
from lalic_core.zoo import packaged_dir


def main(folder: Path) -> None:
    for record_path in sorted(folder.glob("*.json")):
        weights = record_path.with_suffix(".pt")
        before = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
        store_coder_tables(record_path)
        after = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
        same = all(
            before[k].dtype == after[k].dtype and torch.equal(before[k], after[k])
            for k in before if k.rsplit(".", 1)[-1] not in CODER_TABLES
        )
        tables = sum(v.numel() for k, v in after.items() if k.rsplit(".", 1)[-1] in CODER_TABLES)
        print(f"{record_path.name}: weights identical: {same}, table values stored: {tables}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(str(packaged_dir())))
