"""``python -m mitp`` (used by ``torchrun --nproc_per_node N -m mitp train ...``)."""

import sys

from .app.cli import main  # the only place the library names the application: its entry point

sys.exit(main())
