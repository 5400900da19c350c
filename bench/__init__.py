"""On-demand benchmarks: ``make bench`` (all) or ``python -m bench NAME``."""
