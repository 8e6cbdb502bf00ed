"""``python -m ferry`` runs the command line."""

import sys

from ferry.cli import main

sys.exit(main())
