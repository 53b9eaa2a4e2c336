"""Fixtures for the core suites. The tiny phantom cohort (``tiny_cohort``) and the trained tiny
run (``trained_run``) live in ``Testing/conftest.py``, shared with the MRML suites."""
