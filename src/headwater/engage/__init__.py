"""Engage: audiences of a space's profiles, kept as events arrive (docs/audiences.md).

config.py       what ``audiences:`` declare, checked when the workspace loads
audiences.py    conditions compiled to counters and tests; membership per profile
"""
