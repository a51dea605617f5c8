"""Two-scale Lorenz96 with learned closures for the fast scales (Multiscale Neural Operator)."""
from surrogate.lorenz96.hybrid import HybridModel
from surrogate.lorenz96.physics import CoarseModel, TwoScaleLorenz96, l96_tendency, rk4_step

__all__ = ["HybridModel", "CoarseModel", "TwoScaleLorenz96", "l96_tendency", "rk4_step"]
