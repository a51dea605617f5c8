"""PROSE symbols: float tokens, prefix round trips, vocabulary, corruption rates, safe evaluator."""
import numpy as np
import pytest

from surrogate.prose.odes import FAMILIES
from surrogate.prose.symbols import (
    BINARY,
    PLACEHOLDER,
    UNARY,
    VOCABULARY,
    InvalidExpression,
    assemble,
    corrupt,
    decode_float,
    encode_float,
    from_tokens,
    round_significant,
    skeleton,
    to_sympy,
    to_tokens,
    vector_field,
)

FAMILY_NAMES = list(FAMILIES)


def test_float_tokens_follow_the_paper_example():
    assert encode_float(2.57) == ["+", "N257", "E-2"]
    assert encode_float(-0.0123) == ["-", "N123", "E-4"]
    assert encode_float(28.0) == ["+", "N280", "E-1"]
    assert encode_float(1e-14) == ["+", "N000", "E0"]  # below the exponent range: zero, as in the paper
    with pytest.raises(ValueError, match="finite"):
        encode_float(np.inf)


def test_float_round_trip_is_exact_at_three_significant_digits():
    rng = np.random.default_rng(0)
    # magnitudes 1e-7 .. 1e8: inside the exponent range E-10 .. E10 of the 3-digit mantissa
    x = rng.choice([-1, 1], 2000) * rng.uniform(0.1, 1, 2000) * 10.0 ** rng.integers(-6, 9, 2000)
    rounded = round_significant(x)
    assert np.all(np.abs(rounded - x) <= 0.005 * np.abs(x) + 1e-300)
    assert all(decode_float(encode_float(v)) == v for v in rounded)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_expression_tokens_expression_round_trip(name):
    family = FAMILIES[name]
    params = family.draw_parameters(5, np.random.default_rng(1))
    for p in params:
        equation = family.equation(p)
        tokens = to_tokens(equation)
        assert from_tokens(tokens) == equation
        assert to_tokens(from_tokens(tokens)) == tokens
        assert list(VOCABULARY.decode(VOCABULARY.encode([*tokens, "<EOS>", "<PAD>"]))) == tokens
    sk = to_tokens(family.skeleton())
    assert from_tokens(sk, allow_placeholders=True) == skeleton(family.equation())
    assert not any(t in ("+", "-") or t.startswith(("N", "E")) for t in sk)


def test_vocabulary_size_and_specials():
    # 4 specials, separator, 9 operators, 3 variables, 2 signs, 1000 mantissas, 21 exponents
    assert len(VOCABULARY) == 4 + 1 + len(UNARY) + len(BINARY) + 3 + 2 + 1000 + 21
    assert VOCABULARY.decode([VOCABULARY.bos_id, VOCABULARY.index["u_0"], VOCABULARY.eos_id, 5]) == ["u_0"]
    with pytest.raises(InvalidExpression, match="not in the vocabulary"):
        VOCABULARY.encode(["u_0", "__import__"])
    with pytest.raises(InvalidExpression, match="outside the vocabulary"):
        VOCABULARY.decode([len(VOCABULARY)])


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_evaluator_matches_the_family_vector_field(name):
    family = FAMILIES[name]
    rng = np.random.default_rng(2)
    p = family.draw_parameters(1, rng)[0]
    u = rng.uniform(-5, 5, (50, 3))
    f = vector_field(to_tokens(family.equation(p)))
    np.testing.assert_allclose(f(u), family.vector_field(u, p), rtol=1e-12, atol=1e-12)


def test_evaluator_matches_hand_written_lorenz():
    f = vector_field(to_tokens(FAMILIES["lorenz"].equation([10.0, 28.0, 2.67])))
    u = np.array([[1.0, -2.0, 3.0]])
    x, y, z = u[0]
    np.testing.assert_allclose(f(u)[0], [10 * (y - x), x * (28 - z) - y, x * y - 2.67 * z])


@pytest.mark.parametrize("tokens, message", [
    (["add", "u_0", "|", "u_1", "|", "u_2"], "1 of 2 operands"),
    (["u_0", "u_1", "|", "u_1", "|", "u_2"], "extra token"),
    (["exp", "u_0", "|", "u_1", "|", "u_2"], "unknown token 'exp'"),
    (["__import__('os')", "|", "u_1", "|", "u_2"], "unknown token"),
    (["u_3", "|", "u_1", "|", "u_2"], "allowed u_0..u_2"),
    (["u_0", "|", "u_1"], "expected 3 components"),
    (["u_0", "|", "|", "u_2"], "component 1 is empty"),
    (["+", "N12", "E0", "|", "u_1", "|", "u_2"], "malformed number"),
    (["+", "N120", "E11", "|", "u_1", "|", "u_2"], "malformed number"),
    (["mul", "+", "N120", "|", "u_1", "|", "u_2"], "3 tokens"),
    ([PLACEHOLDER, "|", "u_1", "|", "u_2"], "placeholder"),
    (["neg"] * 100 + ["u_0", "|", "u_1", "|", "u_2"], "nesting deeper"),
    (["u_0"] * 600, "at most 512"),
])
def test_malformed_sequences_raise_clear_errors(tokens, message):
    with pytest.raises(InvalidExpression, match=message):
        vector_field(tokens)


def test_non_finite_values_are_returned_not_raised():
    f = vector_field(["div", "u_0", "u_1", "|", "inv", "u_1", "|", "u_2"])
    out = f(np.array([[1.0, 0.0, 2.0]]))
    assert np.isinf(out[0, 0]) and np.isinf(out[0, 1]) and out[0, 2] == 2.0


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_corruption_rates_and_effect(name):
    family = FAMILIES[name]
    terms = family.skeleton_terms
    n_terms = sum(len(c) for c in terms)
    rng = np.random.default_rng(3)
    modes = []
    for _ in range(4000):
        mode, corrupted = corrupt(terms, rng)
        modes.append(mode)
        assert sum(len(c) for c in corrupted) == n_terms + mode
        if mode:
            tokens = to_tokens(assemble(corrupted))  # still a parseable skeleton
            assert from_tokens(tokens, allow_placeholders=True) == assemble(corrupted)
        else:
            assert assemble(corrupted) == family.skeleton()
    modes = np.array(modes)
    # binomial standard error sqrt(.15 * .85 / 4000) ~ 0.0056; 0.025 is about 4.4 sigma
    assert abs(np.mean(modes == 1) - 0.15) < 0.025
    assert abs(np.mean(modes == -1) - 0.15) < 0.025


def test_deletion_of_a_leading_term_keeps_the_sign_of_the_next():
    rossler = FAMILIES["rossler"]  # du0/dt = -u1 - u2
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        _, corrupted = corrupt(rossler.skeleton_terms, rng, p_add=0.0, p_delete=1.0)
        seen.add(" ".join(to_tokens(assemble(corrupted))).split(" | ")[0])
    assert {"neg u_1", "neg u_2", "sub neg u_1 u_2"} <= seen


def test_corruption_arguments_are_checked():
    with pytest.raises(ValueError, match="p_add"):
        corrupt(FAMILIES["lorenz"].skeleton_terms, np.random.default_rng(0), p_add=0.8, p_delete=0.5)


def test_sympy_export_matches_numbers():
    import sympy as sp

    equation = FAMILIES["sprott_b"].equation([0.4, 1.2, 1.0])
    exprs = to_sympy(equation)
    u = sp.symbols("u_0 u_1 u_2")
    values = dict(zip(u, (0.5, -1.5, 2.0)))
    got = [float(e.subs(values)) for e in exprs]
    np.testing.assert_allclose(got, FAMILIES["sprott_b"].vector_field(np.array([0.5, -1.5, 2.0])), rtol=1e-12)
