"""`python -m textgen ...` runs the CLI."""

import sys

from textgen.cli import main

sys.exit(main())
