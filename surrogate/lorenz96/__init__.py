"""Two-scale Lorenz96 with learned closures for the fast scales (Multiscale Neural Operator)."""
from surrogate.lorenz96.physics import CoarseModel, TwoScaleLorenz96, l96_tendency, rk4_step

__all__ = ["HybridModel", "CoarseModel", "TwoScaleLorenz96", "l96_tendency", "rk4_step"]


def __getattr__(name: str):
    # HybridModel needs torch; importing it on first use keeps the solver's modules light for
    # the data workers, which only integrate the equations.
    if name == "HybridModel":
        from surrogate.lorenz96.hybrid import HybridModel

        return HybridModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
