"""The management API (``/api/v1``) and its authentication."""
