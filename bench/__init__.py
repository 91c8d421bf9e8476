"""Benchmarks: Tollgate against a direct connection, in the same run."""
