"""What every process shares, at the bottom of the import graph: settings, errors, logging
and metrics helpers."""

__version__ = "0.1.0"
