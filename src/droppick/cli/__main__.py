"""``python -m droppick.cli ...`` (and ``torchrun ... -m droppick.cli ...``): the ``droppick`` command line."""

import sys

from .main import main

sys.exit(main())
