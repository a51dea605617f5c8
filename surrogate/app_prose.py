"""Logic of the explorer's PROSE page (no Streamlit here): one trajectory of a chosen ODE family,
the model's forecast and decoded equation beside the truth, and the decoded equation with its numbers
re-fitted to the observations (``predict(..., refine=True, trajectory="equation")``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

T_OBSERVED = 2.0  # the model reads t in [0, 2] and predicts (2, 6]


@dataclass
class Exploration:
    times: np.ndarray  # (T,) on [0, 6]
    truth: np.ndarray  # (T, 3) clean
    observed: np.ndarray  # (N, 3) noisy, t <= 2
    t_observed: np.ndarray
    t_query: np.ndarray
    predicted: np.ndarray | None  # (Q, 3)
    true_equation: list[Any]  # sympy, one per component
    decoded_equation: list[Any] | None
    errors: dict[str, float]
    message: str = ""
    refined: np.ndarray | None = None  # (Q, 3): the refined equation's own forecast (NaN where it diverged)
    refined_equation: list[Any] | None = None


def family_choices() -> dict[str, dict[str, Any]]:
    """Family name -> title, parameter names, nominal values."""
    from surrogate.prose.odes import FAMILIES

    return {name: {"title": f.title, "parameters": list(f.parameter_names), "nominal": f.nominal_values.tolist()}
            for name, f in FAMILIES.items()}


def parameter_range(nominal: float, spread: float = 0.2) -> tuple[float, float]:
    """Slider range: +-20% of nominal (twice the training spread, to try out of distribution)."""
    lo, hi = nominal - spread * abs(nominal), nominal + spread * abs(nominal)
    return (lo, hi) if lo < hi else (nominal - 1.0, nominal + 1.0)


def _relative_l2(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(pred - truth) / max(np.linalg.norm(truth), 1e-12))


def explore(model, family_name: str, params: list[float], u0: list[float], noise: float, seed: int = 0,
            with_skeleton: bool = True, refine: bool = True) -> Exploration:
    """Simulate one trajectory, observe it on [0, 2] with noise, forecast (2, 6] and decode equations;
    with ``refine`` and a valid decoded equation also the refined equation and its forecast.

    Raises ValueError with a sentence when the inputs make no valid trajectory (it blows up)."""
    import sympy

    from surrogate.prose.odes import add_noise, get_family, integrate, time_grid
    from surrogate.prose.symbols import to_sympy, to_tokens

    family = get_family(family_name)
    times = time_grid()
    truth = integrate(family, np.asarray(params, float)[None], np.asarray(u0, float)[None], times)[0]
    if not np.isfinite(truth).all():
        raise ValueError("with these parameters and this initial state the trajectory leaves |u| < 1000; "
                         "move the parameters closer to nominal")
    rng = np.random.default_rng(seed)
    noisy = add_noise(truth, noise, rng)
    obs = times <= T_OBSERVED + 1e-12
    t_query = times[~obs]
    # the family's skeleton (placeholders for every number) is the symbolic guess, as in the paper
    skeleton = to_tokens(family.skeleton()) if with_skeleton and model.model_.cfg.symbols else None
    predicted, equations = model.predict(times[obs], noisy[obs], t_query, skeleton=skeleton)
    future = truth[~obs]
    half = t_query <= 4.0 + 1e-12
    errors = {"rel_l2_(2,4]": _relative_l2(predicted[half], future[half]),
              "rel_l2_(4,6]": _relative_l2(predicted[~half], future[~half])}
    refined = refined_eq = None
    if refine and equations is not None:
        refined, refined_eq = model.predict(times[obs], noisy[obs], t_query, skeleton=skeleton, refine=True,
                                            trajectory="equation")
        errors |= {"refined_rel_l2_(2,4]": _relative_l2(refined[half], future[half]),
                   "refined_rel_l2_(4,6]": _relative_l2(refined[~half], future[~half])}
    true_eq = [sympy.simplify(e) for e in to_sympy(family.equation(params))]
    valid = equations is None or all(e is not None for e in equations)
    message = "" if valid else "The decoded tokens are not a valid expression for some components."
    if valid and refined is not None and not np.isfinite(refined).all():
        message = "The refined equation's forecast leaves |u| < 1000 (no values from there on)."
    return Exploration(times, truth, noisy[obs], times[obs], t_query, predicted, true_eq, equations, errors,
                       message, refined, refined_eq)


def latex_system(equations: list[Any] | None) -> str:
    """du_i/dt = ... lines for st.latex; '' when there is nothing to show."""
    import sympy

    if not equations:
        return ""
    lines = []
    for i, e in enumerate(equations):
        rhs = r"\text{(not a valid expression)}" if e is None else sympy.latex(e)
        lines.append(rf"\dot u_{i} &= {rhs}")
    return r"\begin{aligned}" + r" \\ ".join(lines) + r"\end{aligned}"


def trajectory_frame(ex: Exploration):
    """Long-form table for a line chart: time, component, series (truth / observed / PROSE), value."""
    import pandas as pd

    parts = []
    for series, t, u in (("truth", ex.times, ex.truth), ("observed (noisy)", ex.t_observed, ex.observed),
                         ("PROSE", ex.t_query, ex.predicted), ("refined equation", ex.t_query, ex.refined)):
        if u is None or not np.isfinite(u).any():
            continue
        for i in range(u.shape[1]):
            parts.append(pd.DataFrame({"time": t, "component": f"u_{i}", "series": series, "value": u[:, i]}))
    return pd.concat(parts, ignore_index=True)
