"""``python -m lightnets``: the ``lightnets`` command (so ``torchrun -m lightnets train ...`` works)."""

import sys

from .cli import main

sys.exit(main())
