"""Benchmarks that write JSON results to bench/results/."""
