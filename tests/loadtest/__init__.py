"""The load test and the benchmark, run for real."""
