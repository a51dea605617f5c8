"""PROSE family, data side: chaotic ODE families, prefix tokens with placeholders, safe evaluation."""
from .odes import FAMILIES, Family, add_noise, get_family, integrate, nearest_distance, simulate, time_grid
from .symbols import VOCABULARY, InvalidExpression, corrupt, from_tokens, to_sympy, to_tokens, vector_field

__all__ = ["FAMILIES", "Family", "get_family", "time_grid", "integrate", "simulate", "add_noise",
           "nearest_distance", "VOCABULARY", "InvalidExpression", "to_tokens", "from_tokens", "corrupt",
           "vector_field", "to_sympy"]
