"""A trained PROSE model as used from outside: checked inputs, trajectories and equations out.

    m = surrogate.load("results/prose/latest")
    u_query, equations = m.predict(t_obs, u_obs, t_query, skeleton=None)

Skeletons are given as prefix tokens (with ``|`` between components) or as one infix expression per
component (strings or sympy expressions). Infix text is read with ``ast.parse``, which only parses,
and converted node by node over a whitelist; nothing is evaluated. Numbers and names other than
the state variables become coefficient placeholders.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from surrogate.core.store import load_weights, save_weights, tensor_state, write_json
from surrogate.prose.model import ProseConfig, ProseModel
from surrogate.prose.refine import as_refinement, forecast, refine_systems
from surrogate.prose.symbols import (
    PLACEHOLDER,
    SEPARATOR,
    VOCABULARY,
    InvalidExpression,
    Node,
    System,
    from_tokens,
    placeholder,
    product,
    to_sympy,
    to_tokens,
)
from surrogate.prose.symbols import skeleton as skeleton_of

_FUNCTIONS = {"sin", "cos"}


# ----------------------------------------------------------------------------- skeleton input


def _flatten_product(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _flatten_product(node.left) + _flatten_product(node.right)
    return [node]


def _from_ast(node: ast.AST, dim: int) -> Node:
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
        # "- a*u_0" with a named coefficient: the sign belongs to the coefficient, written as an addition
        # (as the family generator writes negative parameters); literal numbers keep the subtraction
        named = any(isinstance(f, ast.Name) and not f.id.startswith("u_") for f in _flatten_product(node.right))
        op = "add" if isinstance(node.op, ast.Add) or named else "sub"
        return Node(op, (_from_ast(node.left, dim), _from_ast(node.right, dim)))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        factors: list[Node] = []
        for f in _flatten_product(node):
            n = _from_ast(f, dim)
            if n.op == "mul":  # a square written as a power: keep the monomial flat
                factors += [n.children[0], n.children[1]]
            else:
                factors.append(n)
        coefficient = [f for f in factors if f.op == PLACEHOLDER][:1]  # one placeholder for all numbers
        return product(*coefficient, *[f for f in factors if f.op != PLACEHOLDER])
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return Node("div", (_from_ast(node.left, dim), _from_ast(node.right, dim)))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        base = _from_ast(node.left, dim)
        power = node.right.value if isinstance(node.right, ast.Constant) else None
        if isinstance(node.right, ast.UnaryOp) and isinstance(node.right.op, ast.USub) \
                and isinstance(node.right.operand, ast.Constant):
            power = -node.right.operand.value
        if power == 2:
            return Node("mul", (base, base))
        if power == -1:
            return Node("inv", (base,))
        raise InvalidExpression(f"only the powers 2 and -1 are allowed, got {ast.unparse(node)!r}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _from_ast(node.operand, dim)
        if isinstance(node.op, ast.UAdd) or inner.op == PLACEHOLDER or \
                (inner.op == "mul" and inner.children[0].op == PLACEHOLDER):
            return inner  # a sign in front of an unknown coefficient belongs to the coefficient
        return Node("neg", (inner,))
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        if name not in _FUNCTIONS or len(node.args) != 1 or node.keywords:
            raise InvalidExpression(f"unknown function {name!r}; allowed: sin(x), cos(x)")
        return Node(name, (_from_ast(node.args[0], dim),))
    if isinstance(node, ast.Name):
        if node.id.startswith("u_") and node.id[2:].isdigit():
            if int(node.id[2:]) >= dim:
                raise InvalidExpression(f"variable {node.id!r}; allowed u_0..u_{dim - 1}")
            return Node(node.id)
        if node.id.startswith("_") or node.id in _FUNCTIONS:
            raise InvalidExpression(f"name {node.id!r} is not allowed")
        return placeholder()  # a named coefficient: value unknown
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return placeholder()
    raise InvalidExpression(f"not allowed in an expression: {ast.unparse(node)!r} ({type(node).__name__}); "
                            "use + - * / ** 2, sin, cos, u_0.. and numbers or coefficient names")


def parse_infix(text: str, dim: int) -> Node:
    """One component written as a Python-style infix expression, parsed without evaluating it."""
    if not isinstance(text, str):
        raise InvalidExpression(f"expected a string expression, got {type(text).__name__}")
    if len(text) > 2000:
        raise InvalidExpression("expression longer than 2000 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise InvalidExpression(f"cannot parse {text!r}: {err.msg}") from None
    return _from_ast(tree.body, dim)


def skeleton_system(skeleton: Any, dim: int) -> System:
    """A skeleton given as prefix tokens, or as ``dim`` infix strings / sympy expressions."""
    if isinstance(skeleton, str):
        skeleton = skeleton.split()
        if SEPARATOR not in skeleton:
            raise InvalidExpression("a skeleton string must be prefix tokens with '|' between components; "
                                    f"or give a list of {dim} expressions")
    items = list(skeleton)
    if items and all(isinstance(t, str) for t in items) and SEPARATOR in items:
        return skeleton_of(from_tokens(items, dim=dim, allow_placeholders=True))
    if len(items) != dim:
        raise InvalidExpression(f"skeleton: expected {dim} expressions (one per component), got {len(items)}")
    out = []
    for item in items:
        if not isinstance(item, str):
            if type(item).__module__.split(".")[0] != "sympy":
                raise InvalidExpression(f"skeleton: expected strings or sympy expressions, got {type(item).__name__}")
            item = str(item)  # sympy's printer gives Python-style infix, read below without evaluation
        out.append(parse_infix(item, dim))
    return tuple(out)


# ----------------------------------------------------------------------------- the model in use


def _as_float_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an array of numbers, got {type(value).__name__}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite numbers, found NaN or inf at {np.argwhere(~np.isfinite(arr))[0]}")
    return arr


class ProseSurrogate:
    """A trained PROSE model (fused or data-only) with its metadata; see ``predict``."""

    def __init__(self, model: ProseModel, metadata: dict[str, Any]):
        self.model_ = model.eval()
        self.metadata = metadata

    @property
    def n_input(self) -> int:
        return int(self.metadata["n_input"])

    @property
    def dim(self) -> int:
        return self.model_.cfg.dim

    def save(self, model_dir: Path, name: str) -> None:
        save_weights(model_dir / f"{name}.pt", tensor_state(self.model_))
        write_json(model_dir / f"{name}.json", {"config": self.model_.cfg.to_dict(), **self.metadata})

    @classmethod
    def load(cls, model_dir: Path, name: str, device: str = "cpu") -> ProseSurrogate:
        info = json.loads((model_dir / f"{name}.json").read_text())
        model = ProseModel(ProseConfig(**info.pop("config")))
        model.load_state_dict(load_weights(model_dir / f"{name}.pt"))
        return cls(model.to(device), info)

    def _check(self, t_obs, u_obs, t_query) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        t_obs, u_obs, t_query = (_as_float_array(n, v) for n, v in
                                 (("t_obs", t_obs), ("u_obs", u_obs), ("t_query", t_query)))
        if t_obs.ndim != 1:
            raise ValueError(f"t_obs: expected a 1-D array of observation times, got shape {t_obs.shape}")
        single = u_obs.ndim == 2
        u = u_obs[None] if single else u_obs
        if u.ndim != 3 or u.shape[-1] != self.dim or u.shape[1] != len(t_obs):
            raise ValueError(f"u_obs: expected shape (N, {self.dim}) or (B, N, {self.dim}) with N = len(t_obs) = "
                             f"{len(t_obs)}, got {u_obs.shape}")
        if len(t_obs) < self.n_input:
            raise ValueError(f"t_obs/u_obs: expected at least {self.n_input} observed points (this model reads "
                             f"{self.n_input}), got {len(t_obs)}")
        if np.any(np.diff(t_obs) <= 0):
            raise ValueError("t_obs: expected strictly increasing times; sort the observations first")
        if t_query.ndim != 1 or len(t_query) == 0:
            raise ValueError(f"t_query: expected a non-empty 1-D array of times, got shape {t_query.shape}")
        return t_obs, u, t_query, single

    def skeleton_ids(self, skeleton: Any, batch: int) -> torch.Tensor:
        if skeleton is None:
            return torch.full((batch, 1), VOCABULARY.bos_id, dtype=torch.long)
        if not self.model_.cfg.symbols:
            raise ValueError("skeleton: this is the data-only model, which reads no skeleton; pass skeleton=None")
        try:
            ids = VOCABULARY.encode(to_tokens(skeleton_system(skeleton, self.dim)))
        except InvalidExpression as err:
            raise InvalidExpression(f"skeleton: {err}") from None
        return torch.tensor(ids, dtype=torch.long)[None].expand(batch, -1)

    @torch.no_grad()
    def predict(self, t_obs, u_obs, t_query, skeleton=None, refine=False, trajectory="operator"):
        """States at ``t_query`` and the decoded equations.

        t_obs (N,) strictly increasing, u_obs (N, 3) or (B, N, 3), N >= ``n_input`` (an evenly spaced
        ``n_input`` of them are read); times are taken relative to t_obs[0], as in training. Returns
        ``(u_query, equations)``: u_query (Q, 3) or (B, Q, 3); equations a list of 3 sympy expressions
        in u_0, u_1, u_2 per trajectory (None where the decoded tokens are no valid expression; None
        altogether for the data-only model).

        ``refine=False`` gives the decoder's faithful output. ``refine=True`` (or a
        ``surrogate.prose.refine.Refinement``) keeps each decoded tree and re-fits its numbers to all
        the given observations (``surrogate.prose.refine``), evenly spaced or not.

        ``trajectory="operator"`` returns the operator decoder's states; ``"equation"`` returns each
        decoded (with ``refine``, refined) equation integrated from the start state fitted to all the
        observations (``surrogate.prose.refine.forecast``; t_query >= t_obs[0];
        NaN where the equation is invalid or diverges).
        """
        options = as_refinement(refine)
        if trajectory not in ("operator", "equation"):
            raise ValueError(f"trajectory: expected 'operator' or 'equation', got {trajectory!r}")
        if (options is not None or trajectory == "equation") and not self.model_.cfg.symbols:
            raise ValueError("refine / trajectory='equation': this is the data-only model, which decodes no "
                             "equations; pass refine=False and trajectory='operator'")
        t_obs, u, t_query, single = self._check(t_obs, u_obs, t_query)
        keep = np.round(np.linspace(0, len(t_obs) - 1, self.n_input)).astype(int)
        t0 = t_obs[0]
        device = next(self.model_.parameters()).device
        t_in = torch.tensor(t_obs[keep] - t0, dtype=torch.float32, device=device).expand(len(u), -1)
        u_in = torch.tensor(u[:, keep], dtype=torch.float32, device=device)
        t_q = torch.tensor(t_query - t0, dtype=torch.float32, device=device).expand(len(u), -1)
        ids = self.skeleton_ids(skeleton, len(u)).to(device)
        ids = ids if self.model_.cfg.symbols else None
        data, text, text_pad = self.model_.encode(t_in, u_in, ids)
        u_query = self.model_.operate(data, t_q).cpu().numpy().astype(float)
        equations = None
        if text is not None:
            tokens = self.model_.decode(text, text_pad).cpu().numpy()
            systems = decode_systems(tokens, self.dim)
            if options is not None:
                systems = refine_systems(systems, t_obs, u, options)
            if trajectory == "equation":
                u_query = forecast(systems, t_obs, u, t_query)
            equations = [None if s is None else to_sympy(s) for s in systems]
        if single:
            return u_query[0], None if equations is None else equations[0]
        return u_query, equations


def decode_systems(ids: np.ndarray, dim: int = 3) -> list[System | None]:
    """Decoded id rows -> systems (None where the tokens are not a valid expression)."""
    out: list[System | None] = []
    for row in ids:
        try:
            tokens = VOCABULARY.decode(row)
            if len(row) and VOCABULARY.eos_id not in row.tolist():
                raise InvalidExpression("decoding stopped before <EOS>")
            out.append(from_tokens(tokens, dim=dim))
        except InvalidExpression:
            out.append(None)
    return out


def skeleton_matches(systems: Sequence[System | None], truth: Sequence[System]) -> np.ndarray:
    """Exact match of the trees without their numbers."""
    return np.array([s is not None and skeleton_of(s) == skeleton_of(t) for s, t in zip(systems, truth)])
