"""Stores shared by the stages and owned by none (DESIGN.md): the audit trail, tokens."""
