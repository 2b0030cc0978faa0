"""Benchmark harness (`make bench`): side-by-side speed, memory and fidelity measurements."""
