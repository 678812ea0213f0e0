"""Settings of the ``function`` destination (declared for you by a destination function in
``functions:``; docs/functions.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from headwater.destinations.base import DestinationSettings
from headwater.naming import NAME_PATTERN


class FunctionSettings(DestinationSettings):
    """Deliver to a destination function."""

    function: Annotated[str, Field(pattern=NAME_PATTERN)]
    """The name of the destination function (in ``functions:``) that receives the events."""
