"""Benchmarks: reproducible workloads and timing helpers behind `fasterrcnn bench`."""
