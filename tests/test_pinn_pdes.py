"""Reference solutions of the PINN family: exact residuals, Cole-Hopf against finite differences,
ETDRK4 convergence, and clear errors for bad problem definitions."""
import math

import numpy as np
import pytest
import torch

from surrogate.pinn.pdes import PROBLEMS, burgers_cole_hopf, burgers_finite_difference, etdrk4_periodic, make_problem
from surrogate.pinn.pig import autograd_derivatives


@pytest.mark.parametrize("name", ["helmholtz", "klein_gordon", "flow_mixing"])
def test_exact_solution_makes_the_residual_vanish(name):
    problem = make_problem(name)
    x = problem.sample_interior(500, torch.Generator().manual_seed(0))
    x[0, :2] = 0.0  # the vortex centre of flow mixing, where r = 0
    u, du, d2u = autograd_derivatives(problem.exact, x, problem.order)
    r = problem.residual(x, u, du, d2u)
    scale = max(1.0, float(d2u.detach().abs().max()) if d2u is not None else 1.0)
    assert float(r.detach().abs().max()) < 1e-10 * scale
    # and a wrong field does not: the check has teeth
    u2, du2, d2u2 = autograd_derivatives(lambda z: problem.exact(z) + 0.01 * z[:, 0] * z[:, 1], x, problem.order)
    assert float(problem.residual(x, u2, du2, d2u2).detach().abs().max()) > 1e-4


def test_exact_solutions_give_their_initial_and_boundary_values():
    gen = torch.Generator().manual_seed(1)
    kg = make_problem("klein_gordon")
    x, u = kg.sample_initial(50, gen)
    assert torch.all(x[:, -1] == 0) and torch.allclose(u, x[:, 0] + x[:, 1])
    xb, _ = kg.sample_boundary(40, gen)
    on_face = (xb[:, :2].abs() == 1).any(dim=1)
    assert bool(on_face.all())


def test_cole_hopf_agrees_with_a_fine_finite_difference_solve():
    nu = 0.01 / math.pi
    t = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    errors = []
    for nx in (601, 1201):
        x, u_fd = burgers_finite_difference(nx, nu, t)
        X, T = np.meshgrid(x, t)
        u_ch = burgers_cole_hopf(X, T, nu, 200)
        errors.append(np.linalg.norm(u_fd - u_ch) / np.linalg.norm(u_ch))
    assert errors[1] < 5e-4
    assert errors[0] / errors[1] > 3.0  # second-order convergence of the check solver towards Cole-Hopf
    # the quadrature itself is converged, and the boundary values hold
    assert np.max(np.abs(burgers_cole_hopf(X, T, nu, 100) - u_ch)) < 1e-10
    assert np.max(np.abs(u_ch[:, [0, -1]])) < 1e-10


def _allen_cahn(modes, dt, t):
    x = np.linspace(-1, 1, modes, endpoint=False)
    u = etdrk4_periodic(x**2 * np.cos(math.pi * x), 2.0, 1e-4, lambda v: 5 * v - 5 * v**3, t, dt)
    return u[:, :: modes // 64]


def test_etdrk4_converges_at_fourth_order_in_time_and_in_space():
    t = np.array([0.0, 0.1, 0.2])
    fine = _allen_cahn(256, 1e-3, t)
    e1 = np.linalg.norm(_allen_cahn(256, 2e-2, t) - fine)
    e2 = np.linalg.norm(_allen_cahn(256, 1e-2, t) - fine)
    assert 10 < e1 / e2 < 24  # 2^4 = 16
    # x^2 cos(pi x) has a kink in u_x at x = +-1 on the periodic domain, so the Fourier error falls
    # algebraically (about 4x per doubling here), not spectrally
    ref = _allen_cahn(2048, 1e-2, t)
    errs = [np.linalg.norm(_allen_cahn(m, 1e-2, t) - ref) / np.linalg.norm(ref) for m in (256, 512, 1024)]
    assert errs[0] / errs[1] > 3 and errs[1] / errs[2] > 3 and errs[2] < 1e-5
    assert np.allclose(ref[0], _allen_cahn(64, 1e-2, t[:1])[0])  # t = 0 is the initial condition


def test_allen_cahn_reference_on_the_periodic_grid():
    problem = make_problem("allen_cahn")
    grid = problem.test_grid({"x": 64, "t": 3})
    assert grid["x"][-1] < 1.0  # the right end is the left end
    u = problem.reference(grid, modes=256, dt=1e-2)
    assert u.shape == (3, 64)
    assert np.allclose(u[0], grid["x"] ** 2 * np.cos(math.pi * grid["x"]))


def test_bad_problem_definitions_say_what_is_allowed():
    with pytest.raises(KeyError, match="allowed: allen_cahn, burgers, flow_mixing, helmholtz, klein_gordon"):
        PROBLEMS["poisson"]
    with pytest.raises(ValueError, match=r"unknown parameter.*allowed: a1, a2, k"):
        make_problem("helmholtz", {"omega": 3})
    with pytest.raises(ValueError, match=r"domain.x = \[1.0, -1.0\] needs min < max"):
        make_problem("helmholtz", domain={"x": (1.0, -1.0)})
    with pytest.raises(ValueError, match="allowed: x, y, t"):
        make_problem("klein_gordon", domain={"z": (0.0, 1.0)})
