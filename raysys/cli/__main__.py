"""`python -m raysys.cli`: the same as the `raysys` command."""
import sys

from raysys.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
