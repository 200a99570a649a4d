"""gflow benchmark suite: ``python -m benchmarks`` (method in benchmarks/README.md)."""
