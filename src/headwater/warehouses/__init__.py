"""Warehouses: the log loaded into SQL in Segment's schema (docs/warehouses.md).

``names`` (identifiers), ``schema`` (events → rows, types), ``batch`` (a table's batch in
columns), ``base`` (what a backend does), ``duckdb`` and ``postgres`` (the backends),
``state`` (sync history), ``loader`` (the sync loop), ``view`` (what readers see).
"""
