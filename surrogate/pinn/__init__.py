"""PINN family: PDE problems with reference solutions, Physics-Informed Gaussians, a deepxde PINN baseline."""
from surrogate.pinn.field import FieldModel
from surrogate.pinn.pdes import PROBLEMS, make_problem
from surrogate.pinn.pig import PIG

__all__ = ["FieldModel", "PIG", "PROBLEMS", "make_problem"]
