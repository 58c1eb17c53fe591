"""Packaging adacsc for scanner hosts (OpenRecon)."""
