"""Benchmarks of mura_core against PyTorch: ``python -m benchmarks.bench_step --help``."""
