"""``python -m tools``: see tools/cli.py (commands, options, exit status)."""

import sys

from tools.cli import main

sys.exit(main())
