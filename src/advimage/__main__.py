"""``python -m advimage``: the command line without the installed ``advimage`` script."""

import sys

from advimage.cli import main

sys.exit(main())
