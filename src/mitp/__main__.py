"""``python -m mitp`` (used by ``torchrun --nproc_per_node N -m mitp train ...``)."""

import sys

from .app.cli import main  # the only place the library names the application: its entry point

if __name__ == "__main__":  # not when a worker process imports it as its parent's main module
    sys.exit(main())
