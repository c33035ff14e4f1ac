"""Run the textgen CLI from a checkout: `python cli.py train corpus.txt`."""

import sys

from textgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
