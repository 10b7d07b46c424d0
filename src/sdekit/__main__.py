"""``python -m sdekit``: the command-line interface (sdekit.apps.cli), the same as the ``sdekit`` command."""
import sys

from sdekit.apps.cli import main

sys.exit(main())
