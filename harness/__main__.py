"""`python -m harness` runs the CLI (the local launcher starts workers this way)."""

import os
import sys

from harness.distribute.cores import pin_from_environment

pin_from_environment(os.environ)  # first, before TensorFlow starts a thread

from harness.cli import main  # noqa: E402 - after pinning: threads inherit the affinity

sys.exit(main())
