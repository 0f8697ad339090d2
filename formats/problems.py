"""What every schema format reports: a definition that is no usable schema, and why a payload
does not match one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SchemaDefinitionError(ValueError):
    """A schema definition that is not usable in its format."""


@dataclass(frozen=True)
class PayloadProblem:
    """Why a payload does not match: a human message and the path of the first error."""

    message: str
    path: str


#: Why a payload does not match a schema, or None; built once per schema (see each format's
#: `payload_checker`), as it holds the compiled validator.
PayloadCheck = Callable[[Any], PayloadProblem | None]
