"""``python -m taskscope``: the same as the ``taskscope`` command."""

import sys

from ._cli import main

sys.exit(main())
