"""http: the mapping kit's payloads to any URL, one per request or batched (Webhooks (Actions))."""

from headwater.destinations.http.client import Http

__all__ = ["Http"]
