"""``python -m lalic_core.figures``: see :mod:`lalic_core.figures`."""
from lalic_core.figures import main

raise SystemExit(main())
