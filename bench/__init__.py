"""The benchmark: the real bot against the fakes, with many members at once (`python -m bench`)."""
