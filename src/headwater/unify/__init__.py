"""Unify: identity resolution, profiles, computed traits and Segment's Profile API.

    identifiers.py  an event's identifiers, normalised and checked against blocked values
    graph.py        the merge rules: join, create or merge, and refusals
    store.py        the profile store (SQLite; the interface a PostgreSQL backend implements)
    traits.py       computed traits, incremental, with windows and change notifications
    consumer.py     the log consumer: per space, in order, with a durable position
    api.py          the Profile API (``/v1/spaces/<space>/collections/users/profiles/...``)

See docs/unify.md.
"""
