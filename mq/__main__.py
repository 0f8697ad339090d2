"""`python -m mq`: the `mq` command line."""

import sys

from cli.main import main

sys.exit(main())
