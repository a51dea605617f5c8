"""Case files: YAML in, a validated pydantic model out.

A case names its family pipeline; the pipeline owns the schema of the other sections. Profiles and
``key=value`` overrides are applied to the raw mapping first, so they are validated exactly like the
file itself. Every problem is reported with its key path, the value given and what is allowed.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from surrogate.core import registry
from surrogate.core.executor import ExecutorSetting


class CaseError(ValueError):
    """A case file, profile or override that cannot run. The message is meant for the user as is."""


class Section(BaseModel):
    """Base of every case section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataSection(Section):
    """Base of a family's `data:` section: keys every family's solver data has."""

    format: Literal["netcdf", "zarr"] = Field("netcdf", description="netcdf files, or zarr stores (chunked, "
                                                                    "for object storage and large sweeps)")


class Case(Section):
    """Keys every case has; a family schema subclasses this and adds its own sections."""

    pipeline: str
    seed: int = Field(0, ge=0, description="seed of every random number in the run")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    executor: ExecutorSetting = Field("local", description='where solver tasks run: local, {dask: local} or '
                                                           '{dask: "tcp://host:8786"}')
    workers: int = Field(1, ge=1, le=4096, description="local processes, or Dask workers of {dask: local}, for "
                                                       "solver tasks")
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("allowed: auto, cpu, cuda, cuda:N, mps")
        return value

    # set by load_case, not read from the file
    _name: str = "case"
    _profile: str | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def profile(self) -> str | None:
        return self._profile

    def resolved(self) -> dict[str, Any]:
        """What actually runs: all defaults filled in, profiles dropped (they were applied)."""
        out = self.model_dump(mode="json", exclude={"profiles"})
        return out

    def digest(self, keys: Iterable[str] | None = None) -> str:
        """A short stable hash of the resolved case (or of some of its top-level sections)."""
        data = self.resolved()
        if keys is not None:
            data = {k: data[k] for k in keys}
        return stable_hash(data)


def stable_hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_override(text: str) -> tuple[str, Any]:
    """``solver.K=16`` -> ("solver.K", 16). The value is read as YAML, so lists and numbers work."""
    if "=" not in text:
        raise CaseError(f"override {text!r}: expected key=value, e.g. train.epochs=5")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise CaseError(f"override {text!r}: {key!r} is not a dotted key path such as solver.K")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise CaseError(f"override {text!r}: the value is not valid YAML ({err.problem})") from None
    return key, value


def set_path(data: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    node = data
    parts = dotted.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise CaseError(f"{origin}: cannot set {dotted!r}, because {where!r} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CaseError(f"{path}: no such case file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise CaseError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise CaseError(f"{path}: a case file must be a mapping of keys (pipeline, solver, ...), "
                        f"got {type(data).__name__}")
    return data


def load_case(
    path: str | Path, profile: str | None = None, overrides: Iterable[str] = (), name: str | None = None
) -> Case:
    """Read, apply the profile and overrides, and validate. Raises CaseError with every problem."""
    path = Path(path)
    raw = read_yaml(path)
    return build_case(raw, name or path.stem, profile, overrides, origin=str(path))


def build_case(
    raw: dict[str, Any], name: str, profile: str | None = None, overrides: Iterable[str] = (), origin: str = "case"
) -> Case:
    raw = json.loads(json.dumps(raw))  # deep copy; YAML scalars are JSON-compatible
    schema = case_schema(raw, origin)
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise CaseError(f"{origin}: profiles must be a mapping of name -> {{key: value}}")
    if profile not in (None, "default"):
        if profile not in profiles:
            allowed = ", ".join(["default", *profiles]) or "default"
            raise CaseError(f"{origin}: no profile {profile!r}; allowed: {allowed}")
        settings = profiles[profile] or {}
        if not isinstance(settings, dict):
            raise CaseError(f"{origin}: profile {profile!r} must be a mapping of key paths to values")
        for key, value in settings.items():
            set_path(raw, key, value, f"{origin}, profile {profile!r}")
    for text in overrides:
        key, value = parse_override(text)
        if key == "pipeline":
            raise CaseError(f"override {text!r}: the pipeline of a case cannot be overridden")
        set_path(raw, key, value, f"override {text!r}")
    try:
        case = schema.model_validate(raw)
    except ValidationError as err:
        what = origin if profile in (None, "default") else f"{origin} (profile {profile!r})"
        raise CaseError(format_validation_error(err, schema, what)) from None
    case._name = name
    case._profile = profile
    return case


def case_schema(raw: dict[str, Any], origin: str) -> type[Case]:
    if "pipeline" not in raw:
        raise CaseError(f"{origin}: missing key 'pipeline'; allowed: {', '.join(registry.pipeline_names())}")
    try:
        return registry.pipeline_class(raw["pipeline"]).Case
    except KeyError as err:
        raise CaseError(f"{origin}: pipeline: {err.args[0]}") from None


def _submodel(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that sits at `loc` inside `model`, if one does (for listing allowed keys).

    Locations run through fields, list indices and, for tagged unions, the tag (e.g. the method kind).
    """
    candidates: list[Any] = [model]
    for part in loc:
        nxt: list[Any] = []
        for current in candidates:
            for option in _members(current):
                if isinstance(part, int) or not (isinstance(option, type) and issubclass(option, BaseModel)):
                    continue
                field = option.model_fields.get(part)
                if field is not None:
                    nxt.append(field.annotation)
                elif _tag_matches(option, part):
                    nxt.append(option)
        if isinstance(part, int):  # a list index: step into the item type
            nxt = [a for c in candidates for m in _members(c) for a in getattr(m, "__args__", ())]
        candidates = nxt
    models = [m for c in candidates for m in _members(c) if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 else None


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a Union / Optional / Annotated type, or the type itself."""
    origin = getattr(annotation, "__origin__", None)
    args = getattr(annotation, "__args__", ())
    if origin is Annotated or hasattr(annotation, "__metadata__"):
        return _members(args[0]) if args else [annotation]
    if origin is Union or type(annotation).__name__ == "UnionType":
        return [m for a in args for m in _members(a)]
    return [annotation]


def _tag_matches(model: type[BaseModel], tag: str) -> bool:
    kind = model.model_fields.get("kind")
    return kind is not None and tag in getattr(kind.annotation, "__args__", ())


def format_validation_error(err: ValidationError, schema: type[BaseModel], origin: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _submodel(schema, loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else "see the case schema"
            lines.append(f"  {path}: unknown key; allowed here: {allowed}")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            lines.append(f"  {path}: missing; {msg.lower()}")
        elif isinstance(e.get("input"), dict):  # a rule across keys: the whole mapping says nothing
            lines.append(f"  {path}: {msg}")
        else:
            lines.append(f"  {path} = {e.get('input')!r}: {msg}")
    n = len(lines)
    head = f"{origin}: {n} problem{'s' if n > 1 else ''} in the case"
    return "\n".join([head, *lines])
