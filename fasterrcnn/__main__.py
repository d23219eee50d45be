"""`python -m fasterrcnn` is the same as the `fasterrcnn` console script."""

import sys

from fasterrcnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
