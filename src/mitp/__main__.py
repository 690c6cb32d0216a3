"""``python -m mitp`` (used by ``torchrun --nproc_per_node N -m mitp train ...``)."""

import sys

from .cli import main

sys.exit(main())
