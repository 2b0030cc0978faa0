"""``python -m pclean_provider`` is the same as the ``pclean`` command."""

import sys

from pclean_provider.cli.main import main

sys.exit(main())
