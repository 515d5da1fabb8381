"""``python -m loom_core._cli``: the ``loom`` command."""

import sys

from .main import main

sys.exit(main())
