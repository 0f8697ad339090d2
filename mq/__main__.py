"""`python -m mq`: the `mq` command line."""

import sys

from mq.cli import main

sys.exit(main())
