"""Snapshot POD with the L2(Omega) inner product given by the P1 mass matrix of the common mesh."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from surrogate.mmgp.morphing import signed_areas


def mass_matrix(nodes: np.ndarray, triangles: np.ndarray) -> sp.csr_matrix:
    """Consistent P1 mass matrix: M_ij = integral of phi_i phi_j (area/12 off the diagonal, area/6 on it)."""
    area = np.abs(signed_areas(nodes, triangles))
    local = (np.ones((3, 3)) + np.eye(3)) / 12.0
    rows = np.repeat(triangles, 3, axis=1).ravel()
    cols = np.tile(triangles, (1, 3)).ravel()
    vals = (area[:, None, None] * local[None]).reshape(len(triangles), 9).ravel()
    n = len(nodes)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


class POD:
    """Modes phi_k orthonormal in the M inner product (phi_k^T M phi_l = delta_kl), found by the method
    of snapshots: eigenvectors v_k of the Gram matrix C = U M U^T give phi_k = U^T v_k / sqrt(lambda_k).

    `components` > 1 stacks that many nodal components (e.g. x and y); M is applied per component.
    """

    def __init__(self, max_modes: int, energy: float | None = None, center: bool = False, components: int = 1):
        self.max_modes, self.energy, self.center, self.components = max_modes, energy, center, components

    def _apply_mass(self, U: np.ndarray) -> np.ndarray:
        n = self.mass_.shape[0]
        parts = [(self.mass_ @ U[:, c * n:(c + 1) * n].T).T for c in range(self.components)]
        return np.concatenate(parts, axis=1)

    def fit(self, snapshots: np.ndarray, mass: sp.spmatrix) -> "POD":
        self.mass_ = mass.tocsr()
        U = np.asarray(snapshots, float)
        self.mean_ = U.mean(0) if self.center else np.zeros(U.shape[1])
        U = U - self.mean_
        MU = self._apply_mass(U)
        gram = U @ MU.T
        lam, vec = np.linalg.eigh(0.5 * (gram + gram.T))
        lam, vec = lam[::-1], vec[:, ::-1]
        positive = lam > lam[0] * 1e-14
        lam, vec = lam[positive], vec[:, positive]
        n = min(self.max_modes, len(lam))
        if self.energy is not None:
            captured = np.cumsum(lam) / lam.sum()
            n = min(n, int(np.searchsorted(captured, self.energy) + 1))
        self.eigenvalues_ = lam
        self.n_modes_ = n
        self.modes_ = (vec[:, :n].T @ U) / np.sqrt(lam[:n])[:, None]  # (n, D)
        residual = U - self.transform(snapshots) @ self.modes_
        self.residual_variance_ = np.mean(residual**2, axis=0)  # per dof: what the truncation loses
        return self

    def transform(self, snapshots: np.ndarray) -> np.ndarray:
        U = np.atleast_2d(snapshots) - self.mean_
        return self._apply_mass(U) @ self.modes_.T

    def inverse_transform(self, coefficients: np.ndarray) -> np.ndarray:
        return self.mean_ + np.atleast_2d(coefficients) @ self.modes_

    def captured_energy(self) -> float:
        return float(self.eigenvalues_[: self.n_modes_].sum() / self.eigenvalues_.sum())
