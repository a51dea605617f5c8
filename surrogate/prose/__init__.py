"""PROSE family: chaotic ODE families, prefix tokens with placeholders, safe evaluation (numpy only, here).

The network is in ``surrogate.prose.model``, the trained model's ``predict`` in ``surrogate.prose.predictor``
and the run stages in ``surrogate.prose.pipeline``; they import torch, so they are not imported here.
"""
from .odes import FAMILIES, Family, add_noise, get_family, integrate, nearest_distance, simulate, time_grid
from .symbols import VOCABULARY, InvalidExpression, corrupt, from_tokens, to_sympy, to_tokens, vector_field

__all__ = ["FAMILIES", "Family", "get_family", "time_grid", "integrate", "simulate", "add_noise",
           "nearest_distance", "VOCABULARY", "InvalidExpression", "to_tokens", "from_tokens", "corrupt",
           "vector_field", "to_sympy"]
