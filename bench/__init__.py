"""Benchmarks: each bench_*.py has ``main() -> dict`` that prints a table and one JSON line."""
