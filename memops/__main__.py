"""`python -m memops COMMAND ...`: the command line of memops.app.cli."""

import sys

from .app.cli import console

if __name__ == "__main__":
    sys.exit(console())
