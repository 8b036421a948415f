"""Benchmarks of the dashboard against Flower: `python -m bench --help`, see bench/README.md."""
