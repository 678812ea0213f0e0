"""Is it down? Component health, incidents, the Statuspage-compatible API, canary, alerts,
metrics."""
