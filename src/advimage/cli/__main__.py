"""``python -m advimage.cli``: the same command line as ``python -m advimage``."""

import sys

from advimage.cli import main

sys.exit(main())
