"""Benchmarks that write reports (machine, settings, numbers); never part of the test suite."""
