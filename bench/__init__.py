"""Benchmarks and the load generator shared with the fault tests."""
