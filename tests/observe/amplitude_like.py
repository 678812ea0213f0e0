"""An Amplitude-like destination for tests: the http destination with a vendor name, the
settings a rejected key points at, and Amplitude's error answers read into reasons in the
vendors' convention (``Amplitude 400 invalid_api_key: Invalid API Key``)."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from headwater.delivery.http import HttpFailure, HttpResponse, classify, retry_after_secs
from headwater.delivery.outcomes import Discard, Outcome, Retry
from headwater.destinations.http import Http


class AmplitudeLike(Http):
    type = "amplitude_like_test"
    vendor = "Amplitude"
    key_settings: ClassVar[tuple[str, ...]] = ("api_key", "secret_key")

    def classify(self, result: HttpResponse | HttpFailure) -> Outcome:
        if isinstance(result, HttpFailure) or 200 <= result.status < 300:
            return classify(result)
        try:
            body: Any = orjson.loads(result.body)
        except orjson.JSONDecodeError:
            return classify(result)
        error = str(body.get("error", "")) if isinstance(body, dict) else ""
        if result.status == 400 and error == "Invalid API Key":
            return Discard(f"Amplitude 400 invalid_api_key: {error}", 400)
        if result.status == 429:
            headers = {k.lower(): v for k, v in result.headers.items()}
            after = retry_after_secs(headers.get("retry-after"))
            return Retry(f"Amplitude 429 throttled_events: {error}", 429, after)
        return classify(result)
