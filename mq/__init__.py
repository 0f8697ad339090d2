"""What every process shares: settings, errors, logging and the `mq` command line."""

__version__ = "0.1.0"
