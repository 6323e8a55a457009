"""``python -m lightnets.train``: what ``torchrun --nproc_per_node=N -m lightnets.train`` starts."""

import sys

from .cli import main

sys.exit(main())
