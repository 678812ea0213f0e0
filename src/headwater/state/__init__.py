"""Stores shared by the stages and owned by none (DESIGN.md): the configuration, the audit
trail, tokens."""
