"""Settings of the ``amplitude`` destination."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator

from headwater.destinations.base import DestinationSettings
from headwater.destinations.values import base_url

REGIONS = {"north_america": "https://api2.amplitude.com", "europe": "https://api.eu.amplitude.com"}


class AmplitudeSettings(DestinationSettings):
    """An Amplitude project: its API key, and where its data is kept."""

    api_key: SecretStr
    """The project's API key (Settings → Projects → General). It travels in the request body,
    as Amplitude wants; Headwater redacts it from everything it keeps."""

    secret_key: SecretStr | None = None
    """The project's secret key. Ingestion does not need it; it is kept for the APIs that do
    (user search, deletions), so a credentials check can use it."""

    endpoint: str = REGIONS["north_america"]
    """``north_america`` (``https://api2.amplitude.com``), ``europe``
    (``https://api.eu.amplitude.com``), or any base URL (a proxy, or a fake in tests)."""

    use_batch_endpoint: bool = False
    """Send events to the Batch API (``/batch``: higher per-device limits, 20 MB requests)
    instead of the HTTP V2 API (``/2/httpapi``), as Segment's setting of the same name."""

    min_id_length: Annotated[int, Field(ge=1)] | None = None
    """The shortest ``user_id`` / ``device_id`` Amplitude accepts (its default is 5); sent
    as ``options.min_id_length`` when set."""

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        return base_url(value, REGIONS, "Amplitude")
