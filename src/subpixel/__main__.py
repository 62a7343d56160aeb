"""``python -m subpixel``: the ``subpixel`` command."""

import sys

from subpixel.cli import main

sys.exit(main())
