"""``python -m kyoukai``: the ``kyoukai`` command (see :mod:`kyoukai.cli`)."""

import sys

from kyoukai.cli import main

sys.exit(main())
