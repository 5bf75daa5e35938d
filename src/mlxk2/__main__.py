"""Allow ``python -m mlxk2``."""

import sys

from mlxk2.cli import main

sys.exit(main())
