"""``python -m job_manager``: see :mod:`job_manager.cli`."""

import sys

from job_manager.cli import main

sys.exit(main())
