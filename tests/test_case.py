"""Case files: validation before any work, profiles, overrides, and the CLI's handling of bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from surrogate.cli import main
from surrogate.core.case import CaseError, load_case

CASES = Path(__file__).resolve().parents[1] / "cases"


def write_case(tmp_path: Path, change) -> Path:
    data = yaml.safe_load((CASES / "lorenz96_mno.yaml").read_text())
    change(data)
    path = tmp_path / "bad_case.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", sorted(CASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_committed_case_and_profile_validates(path):
    raw = yaml.safe_load(path.read_text())
    for profile in [None, *(raw.get("profiles") or {})]:
        case = load_case(path, profile)
        assert case.name == path.stem


def test_profile_and_overrides_are_applied():
    case = load_case(CASES / "lorenz96_mno.yaml", "smoke", ["solver.K=16", "train.lr=0.01"])
    assert case.solver.K == 16 and case.train.lr == 0.01 and case.data.n_train == 4


BAD = {
    "misspelt key": (lambda d: d["solver"].update(KK=8), ["solver.KK", "unknown key", "allowed here: K, J"]),
    "K=0": (lambda d: d["solver"].update(K=0), ["solver.K = 0", "greater than or equal to 4"]),
    "negative dt": (lambda d: d["solver"].update(dt=-0.01), ["solver.dt = -0.01", "greater than 0"]),
    "unknown closure": (lambda d: d.update(surrogate={"kind": "gan"}), ["surrogate", "'gan'", "mno"]),
    "unknown baseline": (lambda d: d["evaluate"].update(baselines=["cubbic"]),
                         ["evaluate.baselines", "'cubbic'", "allowed: null"]),
    "misspelt method key": (lambda d: d["evaluate"].update(baselines=[{"kind": "polynomial", "degre": 3}]),
                            ["evaluate.baselines.0.polynomial.degre", "allowed here: name, train, kind, degree, ar1"]),
    "repeated method": (lambda d: d["evaluate"].update(baselines=["cubic", "cubic"]),
                        ["(top level): method names must be unique; repeated: cubic"]),
    "wrong type": (lambda d: d["train"].update(epochs="many"), ["train.epochs = 'many'", "integer"]),
    "residual with rk4": (lambda d: d["coarse"].update(target="residual"), ["coarse", "needs scheme 'euler'"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_case_gives_one_clear_message(tmp_path, name):
    change, expected = BAD[name]
    with pytest.raises(CaseError) as err:
        load_case(write_case(tmp_path, change))
    for text in expected:
        assert text in str(err.value), str(err.value)


@pytest.mark.parametrize("name", ["misspelt key", "K=0", "negative dt", "unknown closure"])
def test_cli_exits_2_without_traceback_and_writes_nothing(tmp_path, capsys, name):
    path = write_case(tmp_path, BAD[name][0])
    results = tmp_path / "results"
    assert main(["--results", str(results), "run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not results.exists()


def test_bad_override_and_profile_are_reported(capsys):
    case = str(CASES / "lorenz96_mno.yaml")
    assert main(["validate", case, "solver.K=-3"]) == 2
    assert "solver.K = -3" in capsys.readouterr().err
    assert main(["validate", case, "--profile", "nosuch"]) == 2
    assert "no profile 'nosuch'; allowed: default, smoke" in capsys.readouterr().err
    assert main(["validate", case, "solver"]) == 2
    assert "expected key=value" in capsys.readouterr().err


def test_validate_checks_every_profile(capsys):
    assert main(["validate", str(CASES / "lorenz96_mno.yaml")]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "smoke" in out


def test_unknown_pipeline_and_missing_file(tmp_path, capsys):
    path = tmp_path / "x.yaml"
    path.write_text("pipeline: weather\n")
    assert main(["validate", str(path)]) == 2
    assert "'weather' is not a known pipeline; allowed: " in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "none.yaml")]) == 2
    assert "no such case file" in capsys.readouterr().err
