"""``python -m looptune ...`` is the ``looptune`` command line."""

import sys

from looptune.cli import main

sys.exit(main())
