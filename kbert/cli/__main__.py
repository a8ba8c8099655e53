"""`python -m kbert.cli ...`: the `kbert` command without its entry-point script."""

import sys

from kbert.cli.app import main

sys.exit(main())
