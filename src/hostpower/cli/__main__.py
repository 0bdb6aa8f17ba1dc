"""`python -m hostpower`."""

import sys

from hostpower.cli import main

sys.exit(main())
