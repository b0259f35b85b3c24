"""`python -m netspec.cli ...`: the `netspec` command."""
import sys

from . import main

sys.exit(main())
