"""The shared core: case files, registry, runner, run folder, training pieces, metrics."""
