"""Seams: how a new kind of camera, PLC protocol or model backend plugs in.

A kind is one module that declares
- `KEY`: the name the line's configuration picks it by;
- `Settings`: its own pydantic settings, a subclass of the seam's base class whose key field
  is `Literal[KEY]`, so `--validate-config` checks that kind's options with their field path;
- the seam's factory (`Seam.factory` names it), which imports the kind's heavy runtime itself,
  so that a box that never uses the kind never imports its runtime.

The list of kinds exists once: the package's entry points (`[project.entry-points."lineguard.<seam>"]`
in pyproject.toml), key = module. Another package adds a kind by declaring an entry point of its own;
code (a test, an integration) may also `register()` a module directly. Modules are imported when a
key is first looked up, not before."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationInfo, ValidatorFunctionWrapHandler

S = TypeVar("S", bound=BaseModel)

__all__ = ["PluginError", "Seam"]


class PluginError(ValueError):
    """A key no kind declares, or a module that does not declare what its seam needs."""


class Seam(Generic[S]):
    """One place where kinds plug in: its base settings class, its key field and its factory's name."""

    def __init__(self, name: str, *, noun: str, base: type[S], key_field: str, factory: str, group: str | None = None):
        self.name = name
        self.noun = noun  # what one kind is called in messages: "camera kind", "PLC protocol", "model backend"
        self.base = base
        self.key_field = key_field
        self.factory = factory
        self.group = group or f"lineguard.{name}"
        self._modules: dict[str, ModuleType | Any] = {}
        self._declared: dict[str, str] | None = None

    def _entry_points(self) -> dict[str, str]:
        if self._declared is None:
            self._declared = {ep.name: ep.value for ep in entry_points(group=self.group)}
        return self._declared

    def keys(self) -> tuple[str, ...]:
        """Every kind known: those the installed packages declare and those registered."""
        return tuple(sorted({*self._entry_points(), *self._modules}))

    def register(self, module: ModuleType | Any) -> None:
        """Add a kind from a module (or any object) that declares KEY, Settings and the factory."""
        key = self._check(module, getattr(module, "KEY", None))
        self._modules[key] = module

    def unregister(self, key: str) -> None:
        """Forget a kind added by `register` (a test's own kind must not outlive its tests)."""
        self._modules.pop(key, None)

    def module(self, key: str) -> ModuleType | Any:
        """The module of kind `key`, imported on first use; PluginError naming the known kinds."""
        found = self._modules.get(key)
        if found is not None:
            return found
        target = self._entry_points().get(key)
        if target is None:
            raise PluginError(f"unknown {self.noun} {key!r} (known: {', '.join(self.keys())})")
        module = importlib.import_module(target)
        self._check(module, key)
        self._modules[key] = module
        return module

    def settings_class(self, key: str) -> type[S]:
        return self.module(key).Settings

    def factory_of(self, key: str) -> Callable[..., Any]:
        return getattr(self.module(key), self.factory)

    def _check(self, module: Any, key: str | None) -> str:
        name = getattr(module, "__name__", repr(module))
        declared = getattr(module, "KEY", None)
        if not isinstance(declared, str) or (key is not None and declared != key):
            raise PluginError(f"{self.noun} module {name} declares KEY {declared!r}, registered as {key!r}")
        settings = getattr(module, "Settings", None)
        if not (isinstance(settings, type) and issubclass(settings, self.base)):
            raise PluginError(f"{self.noun} module {name}: Settings must be a subclass of {self.base.__name__}")
        if not callable(getattr(module, self.factory, None)):
            raise PluginError(f"{self.noun} module {name} has no factory {self.factory}()")
        return declared

    def validate(self, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> S:
        """Pydantic's hook: a mapping (or a bare key) becomes the Settings of the kind its key field names."""
        if isinstance(value, self.base):
            return value
        if isinstance(value, str):
            value = {self.key_field: value}
        if not isinstance(value, dict):
            return handler(value)  # pydantic's own error for the wrong type
        key = value.get(self.key_field)
        if key is None:
            raise ValueError(f"{self.key_field} is required (one of: {', '.join(self.keys())})")
        try:
            settings = self.settings_class(str(key))
        except PluginError as exc:
            raise ValueError(str(exc)) from None
        return settings.model_validate(value)
