"""``python -m iif_ray``: the CLI, for job entrypoints that run the shipped source tree."""

import sys

from iif_ray.cli import main

sys.exit(main())
