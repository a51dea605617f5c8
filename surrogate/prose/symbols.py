"""Symbolic side of PROSE: expression trees, prefix tokens, skeletons, corruption, safe evaluation.

An ODE system is a tuple of expression trees, one per component. Tokens are in prefix (Polish)
notation, components separated by ``|``, every number written as three tokens (sign, three-digit
mantissa, exponent: ``2.57 -> + N257 E-2``), i.e. three significant digits as in the PROSE code.
Decoded token sequences are parsed by an own prefix parser over a fixed operator whitelist and
evaluated by a small stack machine; nothing is ever passed to ``eval``, ``exec`` or ``sympify``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

PLACEHOLDER = "<PLACEHOLDER>"
PAD, BOS, EOS = "<PAD>", "<BOS>", "<EOS>"
SEPARATOR = "|"
SPECIAL_TOKENS = (PAD, BOS, EOS, PLACEHOLDER)

UNARY = {"neg": np.negative, "inv": np.reciprocal, "sin": np.sin, "cos": np.cos, "pow2": np.square}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}

SIGNIFICANT_DIGITS = 3  # the paper's float_precision = 2 (digits after the point in %.2e)
MAX_EXPONENT = 10
MAX_DIM = 3  # variables u_0 .. u_2: the three-dimensional families
MAX_TOKENS = 512  # the paper's positional tables
MAX_DEPTH = 64  # far above any family (depth <= 8); bounds recursion on hostile input

_MANTISSA = re.compile(r"N(\d{3})")
_EXPONENT = re.compile(r"E(-?\d{1,2})")
_VARIABLE = re.compile(r"u_(\d{1,2})")


class InvalidExpression(ValueError):
    """A token sequence that is not a well-formed expression of the vocabulary."""


@dataclass(frozen=True)
class Node:
    """One node of an expression tree.

    ``op`` is an operator name (``UNARY``/``BINARY``), a variable ``u_<i>``, ``"const"`` (a number
    in ``value``), ``"param"`` (a named family parameter ``name`` times the factor ``value``) or
    ``PLACEHOLDER`` (an unknown coefficient).
    """

    op: str
    children: tuple[Node, ...] = ()
    value: float = 0.0
    name: str = ""

    def __str__(self) -> str:
        return " ".join(tree_tokens(self, allow_params=True))


System = tuple[Node, ...]  # one tree per component (du_i/dt)


def var(i: int) -> Node:
    return Node(f"u_{i}")


def const(x: float) -> Node:
    return Node("const", value=float(x))


def param(name: str, factor: float = 1.0) -> Node:
    return Node("param", value=float(factor), name=name)


def placeholder() -> Node:
    return Node(PLACEHOLDER)


def op(name: str, *children: Node) -> Node:
    arity = 1 if name in UNARY else 2 if name in BINARY else None
    if arity is None:
        raise ValueError(f"op: unknown operator {name!r}; allowed: {', '.join([*UNARY, *BINARY])}")
    if len(children) != arity:
        raise ValueError(f"op: {name!r} takes {arity} operand(s), got {len(children)}")
    return Node(name, tuple(children))


def product(*factors: Node | str | float) -> Node:
    """Right-nested product ``mul(a, mul(b, c))`` as the PROSE generator writes monomials.

    Strings name variables (``"u_0"``) or a placeholder; floats become constants.
    """
    nodes = [_as_node(f) for f in factors]
    tree = nodes[-1]
    for node in reversed(nodes[:-1]):
        tree = Node("mul", (node, tree))
    return tree


def _as_node(x: Node | str | float) -> Node:
    if isinstance(x, Node):
        return x
    if isinstance(x, str):
        return placeholder() if x == PLACEHOLDER else Node(x)
    return const(x)


# ----------------------------------------------------------------------------- floats


def round_significant(x: float | np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> float | np.ndarray:
    """Round to ``digits`` significant digits, to the double nearest the decimal (exactly encodable)."""
    if np.ndim(x) == 0:
        return float(f"{float(x):.{digits - 1}e}")
    return np.array([float(f"{v:.{digits - 1}e}") for v in np.ravel(x)]).reshape(np.shape(x))


def encode_float(x: float) -> list[str]:
    """Three tokens ``[sign, N<mantissa>, E<exponent>]`` with x ~ sign * mantissa * 10**exponent."""
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"encode_float: x must be finite, got {x}")
    sign = "+" if x >= 0 else "-"
    mantissa, exponent = f"{abs(x):.{SIGNIFICANT_DIGITS - 1}e}".split("e")
    digits = mantissa.replace(".", "")
    power = int(exponent) - (SIGNIFICANT_DIGITS - 1)
    if power < -MAX_EXPONENT:  # too small to write: zero, as in the PROSE encoder
        digits, power = "0" * SIGNIFICANT_DIGITS, 0
    if power > MAX_EXPONENT:
        raise ValueError(f"encode_float: |x| must be below 1e{MAX_EXPONENT + SIGNIFICANT_DIGITS}, got {x}")
    return [sign, f"N{digits}", f"E{power}"]


def decode_float(tokens: Sequence[str]) -> float:
    """Inverse of ``encode_float``; the result is the double nearest the written decimal."""
    if len(tokens) != 3:
        raise InvalidExpression(f"a number takes 3 tokens (sign, mantissa, exponent), got {list(tokens)}")
    sign, mantissa, exponent = tokens
    m, e = _MANTISSA.fullmatch(mantissa), _EXPONENT.fullmatch(exponent)
    if sign not in ("+", "-") or m is None or e is None or abs(int(e.group(1))) > MAX_EXPONENT:
        raise InvalidExpression(f"malformed number {list(tokens)}; expected e.g. ['+', 'N257', 'E-2']")
    return float(f"{sign}{m.group(1)}e{e.group(1)}")


# ----------------------------------------------------------------------------- vocabulary


class Vocabulary:
    """Token <-> integer id. Order: specials, separator, operators, variables, signs, mantissas, exponents."""

    def __init__(self, dim: int = MAX_DIM):
        words = [*SPECIAL_TOKENS, SEPARATOR, *UNARY, *BINARY, *(f"u_{i}" for i in range(dim)), "+", "-"]
        words += [f"N{i:03d}" for i in range(10**SIGNIFICANT_DIGITS)]
        words += [f"E{i}" for i in range(-MAX_EXPONENT, MAX_EXPONENT + 1)]
        self.words: tuple[str, ...] = tuple(words)
        self.index = {w: i for i, w in enumerate(words)}
        self.pad_id, self.bos_id, self.eos_id = self.index[PAD], self.index[BOS], self.index[EOS]

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        unknown = [t for t in tokens if t not in self.index]
        if unknown:
            raise InvalidExpression(f"tokens not in the vocabulary: {unknown[:5]}")
        return np.array([self.index[t] for t in tokens], dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """Ids to tokens; stops at ``<EOS>``, skips ``<PAD>`` and ``<BOS>``."""
        out = []
        for i in np.asarray(ids, dtype=np.int64).ravel():
            if not 0 <= i < len(self.words):
                raise InvalidExpression(f"token id {int(i)} outside the vocabulary [0, {len(self.words)})")
            word = self.words[i]
            if word == EOS:
                break
            if word not in (PAD, BOS):
                out.append(word)
        return out


VOCABULARY = Vocabulary()


# ----------------------------------------------------------------------------- trees <-> tokens


def tree_tokens(tree: Node, allow_params: bool = False) -> list[str]:
    """Prefix tokens of one tree."""
    if tree.op == "const":
        return encode_float(tree.value)
    if tree.op == "param":
        if not allow_params:
            raise ValueError(f"parameter {tree.name!r} has no value; bind the family's parameters first")
        return [f"{tree.value:g}*{tree.name}"]
    out = [tree.op]
    for child in tree.children:
        out += tree_tokens(child, allow_params)
    return out


def to_tokens(system: System) -> list[str]:
    """Prefix tokens of a system, components separated by ``|``."""
    out: list[str] = []
    for k, tree in enumerate(system):
        if k:
            out.append(SEPARATOR)
        out += tree_tokens(tree)
    return out


def from_tokens(tokens: Sequence[str], dim: int | None = MAX_DIM, allow_placeholders: bool = False) -> System:
    """Parse prefix tokens into a system; raise ``InvalidExpression`` saying what is wrong and where.

    ``dim``: the number of components (and variables) required; ``None`` accepts any count.
    Special tokens ``<BOS>``/``<EOS>``/``<PAD>`` are not part of an expression; strip them first
    (``Vocabulary.decode`` does).
    """
    tokens = list(tokens)
    if not all(isinstance(t, str) for t in tokens):
        raise InvalidExpression("tokens must be strings")
    if len(tokens) > MAX_TOKENS:
        raise InvalidExpression(f"expression has {len(tokens)} tokens; at most {MAX_TOKENS} allowed")
    components: list[list[str]] = [[]]
    for t in tokens:
        if t == SEPARATOR:
            components.append([])
        else:
            components[-1].append(t)
    if dim is not None and len(components) != dim:
        raise InvalidExpression(f"expected {dim} components separated by '|', got {len(components)}")
    offset, system = 0, []
    for k, part in enumerate(components):
        system.append(_parse_component(part, offset, k, dim, allow_placeholders))
        offset += len(part) + 1
    return tuple(system)


def _parse_component(tokens: list[str], offset: int, k: int, dim: int | None, allow_placeholders: bool) -> Node:
    if not tokens:
        raise InvalidExpression(f"component {k} is empty")
    stack: list[tuple[str, int, list[Node], int]] = []  # (operator, arity, operands so far, position)
    root: Node | None = None
    i = 0
    while i < len(tokens):
        t, where = tokens[i], offset + i
        if root is not None:
            raise InvalidExpression(f"component {k}: extra token {t!r} at position {where} after a complete expression")
        if t in UNARY or t in BINARY:
            if len(stack) >= MAX_DEPTH:
                raise InvalidExpression(f"component {k}: nesting deeper than {MAX_DEPTH} at position {where}")
            stack.append((t, 1 if t in UNARY else 2, [], where))
            i += 1
            continue
        if t in ("+", "-"):
            node, i = const(decode_float(tokens[i:i + 3])), i + 3
        elif t == PLACEHOLDER:
            if not allow_placeholders:
                raise InvalidExpression(f"component {k}: placeholder at position {where} has no value")
            node, i = placeholder(), i + 1
        elif (m := _VARIABLE.fullmatch(t)) is not None:
            if dim is not None and int(m.group(1)) >= dim:
                raise InvalidExpression(f"component {k}: variable {t!r} at position {where}; allowed u_0..u_{dim - 1}")
            node, i = Node(t), i + 1
        else:
            allowed = "operators " + " ".join([*UNARY, *BINARY]) + ", variables u_<i>, numbers (+|- N### E#)"
            raise InvalidExpression(f"component {k}: unknown token {t!r} at position {where}; allowed: {allowed}")
        while True:  # hang the finished operand on the innermost open operator, closing operators as they fill
            if not stack:
                root = node
                break
            name, arity, operands, _ = stack[-1]
            operands.append(node)
            if len(operands) < arity:
                break
            stack.pop()
            node = Node(name, tuple(operands))
    if stack:
        name, arity, operands, where = stack[-1]
        raise InvalidExpression(
            f"component {k}: operator {name!r} at position {where} has {len(operands)} of {arity} operands "
            "(sequence ends)"
        )
    assert root is not None
    return root


# ----------------------------------------------------------------------------- transforms


def _map_leaves(tree: Node, leaf: Callable[[Node], Node]) -> Node:
    if not tree.children:
        return leaf(tree)
    return Node(tree.op, tuple(_map_leaves(c, leaf) for c in tree.children))


def bind(system: System, values: Mapping[str, float]) -> System:
    """Replace every parameter leaf by its number (factor x value)."""

    def leaf(n: Node) -> Node:
        if n.op != "param":
            return n
        if n.name not in values:
            raise ValueError(f"bind: no value for parameter {n.name!r}; got {sorted(values)}")
        return const(n.value * float(values[n.name]))

    return tuple(_map_leaves(t, leaf) for t in system)


def skeleton(system: System) -> System:
    """The system with every number and parameter replaced by a placeholder (the paper's symbol input)."""
    return tuple(_map_leaves(t, lambda n: placeholder() if n.op in ("const", "param") else n) for t in system)


# ----------------------------------------------------------------------------- terms and corruption

Term = tuple[int, Node]  # (sign +1/-1, monomial or other additive term)
Terms = tuple[tuple[Term, ...], ...]  # one tuple of signed terms per component


def assemble(terms: Terms) -> System:
    """Left-associated sums as in the PROSE generator: ``sub(add(t0, t1), t2)``; a leading minus is ``neg``."""
    system = []
    for k, component in enumerate(terms):
        if not component:
            raise ValueError(f"assemble: component {k} has no terms")
        sign, tree = component[0]
        tree = Node("neg", (tree,)) if sign < 0 else tree
        for sign, term in component[1:]:
            tree = Node("add" if sign > 0 else "sub", (tree, term))
        system.append(tree)
    return tuple(system)


def addition_terms(dim: int = MAX_DIM) -> list[Node]:
    """Candidate extra terms: ``c``, ``c u_i``, ``c u_i u_j`` (i <= j) with unknown coefficient c."""
    out = [placeholder()]
    for i in range(dim):
        out.append(product(PLACEHOLDER, f"u_{i}"))
        out += [product(PLACEHOLDER, f"u_{i}", f"u_{j}") for j in range(i, dim)]
    return out


def add_term(terms: Terms, rng: np.random.Generator) -> Terms:
    """Insert one random degree <= 2 term at a uniformly drawn (component, position)."""
    candidates = addition_terms(len(terms))
    new = candidates[rng.integers(len(candidates))]
    slots = [(k, j) for k, comp in enumerate(terms) for j in range(len(comp) + 1)]
    k, j = slots[rng.integers(len(slots))]
    comp = list(terms[k])
    comp.insert(j, (1, new))
    return (*terms[:k], tuple(comp), *terms[k + 1:])


def delete_term(terms: Terms, rng: np.random.Generator) -> Terms:
    """Remove one term, uniformly over the terms of components that have at least two."""
    slots = [(k, j) for k, comp in enumerate(terms) if len(comp) >= 2 for j in range(len(comp))]
    if not slots:
        raise ValueError("delete_term: no component has two or more terms")
    k, j = slots[rng.integers(len(slots))]
    comp = terms[k][:j] + terms[k][j + 1:]
    return (*terms[:k], comp, *terms[k + 1:])


def corrupt(terms: Terms, rng: np.random.Generator, p_add: float = 0.15, p_delete: float = 0.15) -> tuple[int, Terms]:
    """Draw the paper's symbolic-input mode: +1 add a term (p_add), -1 delete one (p_delete), 0 keep.

    Returns ``(mode, terms)``; apply to skeleton terms so the added term's coefficient is a placeholder.
    """
    if not (0 <= p_add and 0 <= p_delete and p_add + p_delete <= 1):
        raise ValueError(f"corrupt: need p_add, p_delete >= 0 and p_add + p_delete <= 1, got {p_add}, {p_delete}")
    r = rng.random()
    if r < p_add:
        return 1, add_term(terms, rng)
    if r < p_add + p_delete:
        return -1, delete_term(terms, rng)
    return 0, terms


# ----------------------------------------------------------------------------- numeric evaluation


def postfix(tree: Node) -> list[tuple[str, object]]:
    """Postfix instructions of a tree for a stack machine (``_run`` here, ``surrogate.prose.compiled``)."""
    if tree.op in UNARY or tree.op in BINARY:
        code = [ins for child in tree.children for ins in postfix(child)]
        return code + [("op", tree.op)]
    if tree.op == "const":
        return [("const", tree.value)]
    if tree.op == "param":
        return [("param", (tree.name, tree.value))]
    if (m := _VARIABLE.fullmatch(tree.op)) is not None:
        return [("var", int(m.group(1)))]
    raise InvalidExpression(f"cannot evaluate node {tree.op!r}: only numbers, variables and parameters have values")


def _run(program: list[tuple[str, object]], u: np.ndarray, params: Mapping[str, np.ndarray]) -> np.ndarray:
    stack: list = []
    for kind, arg in program:
        if kind == "var":
            stack.append(u[..., arg])
        elif kind == "const":
            stack.append(arg)
        elif kind == "param":
            name, factor = arg
            stack.append(factor * params[name])
        elif arg in UNARY:
            stack.append(UNARY[arg](stack.pop()))
        else:
            b = stack.pop()
            stack.append(BINARY[arg](stack.pop(), b))
    return np.broadcast_to(stack[0], u.shape[:-1])


def compile_system(system: System) -> Callable[..., np.ndarray]:
    """Numeric vector field ``f(u, params=None)`` of a system; u has shape (..., d), result too.

    ``params`` maps parameter names to numbers or arrays broadcasting against ``u[..., 0]``.
    Division by zero and overflow give inf/nan rather than warnings; callers check finiteness.
    """
    programs = [postfix(t) for t in system]
    dim = len(system)

    def vector_field(u: np.ndarray, params: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        if u.ndim < 1 or u.shape[-1] < dim:
            raise ValueError(f"vector_field: expected u with shape (..., {dim}), got {u.shape}")
        with np.errstate(all="ignore"):
            return np.stack([_run(p, u, params or {}) for p in programs], axis=-1)

    return vector_field


def vector_field(tokens: Sequence[str], dim: int = MAX_DIM) -> Callable[[np.ndarray], np.ndarray]:
    """Safe evaluator: decoded tokens -> ``f(u)`` for u of shape (..., dim). Raises ``InvalidExpression``."""
    return compile_system(from_tokens(tokens, dim=dim))


def to_sympy(system: System):
    """The system as a list of sympy expressions in symbols u_0 .. u_{d-1} (built node by node)."""
    import sympy as sp

    unary = {"neg": lambda a: -a, "inv": lambda a: 1 / a, "sin": sp.sin, "cos": sp.cos, "pow2": lambda a: a**2}
    binary = {"add": sp.Add, "sub": lambda a, b: a - b, "mul": sp.Mul, "div": lambda a, b: a / b}

    def build(n: Node):
        if n.op in unary:
            return unary[n.op](build(n.children[0]))
        if n.op in binary:
            return binary[n.op](build(n.children[0]), build(n.children[1]))
        if n.op == "const":
            return sp.Float(repr(n.value), 15)
        if n.op == "param":
            return sp.Float(repr(n.value), 15) * sp.Symbol(n.name)
        if n.op == PLACEHOLDER:
            raise ValueError("to_sympy: the system has placeholders; bind or decode the full equation")
        return sp.Symbol(n.op)

    return [build(t) for t in system]
