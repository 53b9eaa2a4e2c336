"""Helpers shared by the test suites (real files, no mocks)."""
