"""``python -m ferry`` runs the command line."""

import sys

from ferry.cli.main import main

sys.exit(main())
