"""Mesh-morphing Gaussian processes (MMGP) on specimens whose shapes have no parameters."""
