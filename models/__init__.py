"""Network architectures, the frozen model table and the shipped weights."""
