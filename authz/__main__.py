"""`python -m authz` is the `authz` command."""

import sys

from authz.cli import main

sys.exit(main())
