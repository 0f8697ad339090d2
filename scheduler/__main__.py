"""`python -m scheduler`: the scheduler process, as `mq scheduler` runs it."""

import sys

from scheduler.main import main_from_args

sys.exit(main_from_args())
