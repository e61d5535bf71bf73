"""`python -m harness` runs the CLI (the local launcher starts workers this way)."""

import sys

from harness.cli import main

sys.exit(main())
