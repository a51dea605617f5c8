"""Name -> class tables. An unknown name is an error that lists the valid ones.

The pipeline table holds import paths rather than classes, so `core` imports no family and a family
with heavy dependencies is only imported when a case asks for it.
"""
from __future__ import annotations

import importlib
from typing import Generic, TypeVar

T = TypeVar("T")

_PIPELINES = {
    "lorenz96": "surrogate.lorenz96.pipeline:Lorenz96Pipeline",
    "mmgp": "surrogate.mmgp.pipeline:MMGPPipeline",
    "pinn": "surrogate.pinn.pipeline:PINNPipeline",
    "prose": "surrogate.prose.pipeline:ProsePipeline",
    "dragonfly": "surrogate.dragonfly.pipeline:DragonflyPipeline",
}


def pipeline_names() -> list[str]:
    return sorted(_PIPELINES)


def pipeline_class(name: str):
    if name not in _PIPELINES:
        raise KeyError(f"{name!r} is not a known pipeline; allowed: {', '.join(pipeline_names())}")
    module, _, attr = _PIPELINES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """A string-keyed table of classes, filled with the `register` decorator."""

    def __init__(self, what: str):
        self.what = what
        self._items: dict[str, T] = {}

    def register(self, name: str):
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.what} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def __getitem__(self, name: str) -> T:
        if name not in self._items:
            raise KeyError(f"unknown {self.what} {name!r}; allowed: {', '.join(sorted(self._items))}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)
