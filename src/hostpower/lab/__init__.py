"""The virtual lab: virtual BMCs and simulated hosts for the demo, the tests and the benchmarks."""
