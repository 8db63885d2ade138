"""Plug-ins: the steps, sources and model types, found through entry points and loaded on demand.

Each plug-in is one module registered in ``pyproject.toml`` under an entry-point group
(``chain.steps``, ``chain.sources``, ``chain.models``); a third-party package registers its own the
same way. Names are known without importing anything; a plug-in's module is imported the first
time it is asked for, so a run that uses Sentinel-2 and a Random Forest never imports torch or the
SPOT reader. Unknown names raise a ``ConfigError`` that lists the valid ones.
"""

from __future__ import annotations

import difflib
from importlib import metadata
from typing import Any, Generic, TypeVar

from chain.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """One entry-point group: ``name -> object`` (a class), in the order the group declares them."""

    def __init__(self, group: str, what: str):
        self.group, self.what = group, what
        self._loaded: dict[str, T] = {}
        self._extra: dict[str, T] = {}

    def _entry_points(self) -> dict[str, metadata.EntryPoint]:
        found: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=self.group):
            found.setdefault(ep.name, ep)  # several installs of one distribution: the first on the path wins
        return found

    def names(self) -> list[str]:
        """Every registered name, without importing any plug-in."""
        names = list(self._entry_points()) + [n for n in self._extra if n not in self._entry_points()]
        if not names:
            raise ConfigError(f"no {self.what} is registered (entry-point group {self.group!r}): is chain installed? "
                              "Run `pip install -e .` in the repository")
        return names

    def get(self, name: str, where: str = "") -> T:
        """The plug-in called ``name``; ``where`` names the config key in the error message."""
        if name in self._extra:
            return self._extra[name]
        if name not in self._loaded:
            eps = self._entry_points()
            if name not in eps:
                close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{where or self.what}: {name!r} is not a known {self.what}{hint} "
                                  f"(known: {', '.join(self.names())})")
            obj = eps[name].load()
            if getattr(obj, "name", name) != name:
                raise ConfigError(f"plug-in {eps[name].value!r} is registered as {name!r} but calls itself {obj.name!r}")
            self._loaded[name] = obj
        return self._loaded[name]

    def all(self) -> dict[str, T]:
        """Every plug-in, loaded (imports their modules)."""
        return {n: self.get(n) for n in self.names()}

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` at run time (tests, notebooks); entry points are the way for packages."""
        self._extra[name] = obj

    def remove(self, name: str) -> None:
        self._extra.pop(name, None)


STEPS: Registry[Any] = Registry("chain.steps", "step")
SOURCES: Registry[Any] = Registry("chain.sources", "input source")
MODELS: Registry[Any] = Registry("chain.models", "model type")
