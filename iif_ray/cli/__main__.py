"""``python -m iif_ray.cli``: the same as ``iif-ray``."""

import sys

from iif_ray.cli import main

sys.exit(main())
