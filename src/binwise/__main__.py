"""``python -m binwise``, e.g. under torchrun: ``torchrun --nproc-per-node 4 -m binwise train ...``."""

import sys

from .cli import main

sys.exit(main())
