"""Benchmark drivers (``python -m benchmarks.bench_<name>``) and their shared harness."""
