"""`python -m workers`: the worker process, as `mq worker` runs it."""

import sys

from workers.main import main_from_args

sys.exit(main_from_args())
