"""The Tracking API: write-key auth, limits, normalisation, back-pressure."""
