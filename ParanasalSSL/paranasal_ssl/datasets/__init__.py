"""Loaders for real scans that ship offline (no downloads)."""
