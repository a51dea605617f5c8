"""What every family's case says about its methods: the surrogate and the baselines beside it.

A method is a mapping with a `kind` (the family's registry key), an optional `name` (so two variants
of one kind can run side by side) and its own settings; a bare string is a shorthand for a mapping.
A run's `model/index.json` names the surrogate and every method it trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BeforeValidator, Field, field_validator, model_validator

from surrogate.core.case import Case, Section
from surrogate.core.store import read_json, write_json


class MethodSpec(Section):
    """Base of a family's method specs; subclasses add `kind: Literal[...]` and their settings."""

    name: str | None = Field(None, pattern=r"^[A-Za-z][\w\-]*$", description="defaults to the kind")

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined]


def expand_shorthand(value: Any, shorthands: dict[str, dict[str, Any]], kinds: str) -> Any:
    """A method given as a string (or YAML null, meaning "null") becomes its mapping."""
    if value is None and "null" in shorthands:
        return dict(shorthands["null"])
    if isinstance(value, str):
        if value not in shorthands:
            raise ValueError(f"unknown method {value!r}; allowed: {', '.join(shorthands)} "
                             f"or a mapping with kind: {kinds}")
        return dict(shorthands[value])
    return value


def expand_list(value: Any, shorthands: dict[str, dict[str, Any]], kinds: str) -> list:
    if not isinstance(value, list):
        raise ValueError("baselines must be a list of method names or mappings")
    return [expand_shorthand(v, shorthands, kinds) for v in value]


def check_unique(labels: list[str]) -> None:
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ValueError(f"method names must be unique; repeated: {', '.join(dup)} (give each a name:)")


def write_index(model_dir: Path, surrogate: str, methods: list[str]) -> None:
    write_json(model_dir / "index.json", {"surrogate": surrogate, "methods": methods})


def method_name(model_dir: Path, method: str | None) -> str:
    """The saved method to load: the run's surrogate by default; an unknown name lists the known ones."""
    index = read_json(model_dir / "index.json")
    name = method or index["surrogate"]
    if not (model_dir / f"{name}.json").exists():
        have = sorted(p.stem for p in model_dir.glob("*.json") if p.stem not in ("index", "training"))
        raise KeyError(f"run {model_dir.parent} has no method {name!r}; it has: {', '.join(have)}")
    return name


def baselines_from(shorthands: dict[str, dict[str, Any]], kinds: str) -> BeforeValidator:
    """Annotate a `baselines` list so that shorthand names expand before validation."""
    return BeforeValidator(lambda value: expand_list(value, shorthands, kinds))


class MethodsCase(Case):
    """A case whose methods are `surrogate` plus `evaluate.baselines`, given by mapping or shorthand.

    Subclasses set `method_shorthands` and `method_kinds` and define the two fields.
    """

    method_shorthands: ClassVar[dict[str, dict[str, Any]]] = {}
    method_kinds: ClassVar[str] = ""

    @field_validator("surrogate", mode="before", check_fields=False)
    @classmethod
    def _surrogate_shorthand(cls, value):
        return expand_shorthand(value, cls.method_shorthands, cls.method_kinds)

    @model_validator(mode="after")
    def _unique_methods(self):
        check_unique([m.label for m in self.methods])
        return self

    @property
    def methods(self) -> list:
        return [self.surrogate, *self.evaluate.baselines]  # type: ignore[attr-defined]
