"""Development only: the demo, its local stack, the fake worker, local service launchers and benchmarks."""
