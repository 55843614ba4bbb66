"""Plug-ins: modules that register algorithms, data sets or encoders, found by entry point or by name.

A plug-in is a **module whose import registers** what it adds, through the ordinary calls
(``@register`` for an algorithm, ``register_dataset`` for a data set, ``@register_encoder`` for an
encoder). It reaches a process in one of two ways:

* an installed distribution declares an entry point in ``fedmosaic.algorithms``,
  ``fedmosaic.datasets`` or ``fedmosaic.encoders`` whose value is that module (``name = "pkg.module"``;
  the name is only a label). Each registry imports its group's modules on its first lookup, once per
  process;
* a run's config lists it under ``plugins = [...]`` (or ``--plugin MODULE`` on the command line), and
  :func:`import_plugins` imports it before the config is validated. The config travels with the run
  (run folders, the file pipeline, every Flower message), so every process of the run loads it.

:class:`Registry` is the name table each of the three registries is built on. A name registered a
second time by *another* object is an error naming both modules; the same object, or the same class
re-imported (same module and qualified name, as after ``importlib.reload``), replaces the old one.
Every error is one :class:`~fedmosaic.core.errors.PluginError` line naming the culprit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from fedmosaic.core.errors import PluginError

GROUPS: tuple[str, ...] = ("fedmosaic.algorithms", "fedmosaic.datasets", "fedmosaic.encoders")

T = TypeVar("T")

_UNLOADED, _LOADING, _LOADED = "unloaded", "loading", "loaded"


def _one_line(exc: BaseException) -> str:
    # A plug-in may raise anything, with any text: the error must still be one line.
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def import_plugins(modules: Iterable[str]) -> None:
    """Import each named module (a plug-in registers on import); one :class:`PluginError` line if one fails.

    Importing an already imported module does nothing, so a config validated many times (each
    Flower message) costs one import per process.
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except PluginError:
            raise  # it already names the culprit (a name registered twice)
        except Exception as exc:
            raise PluginError(f"plugins: cannot import {module!r}: {_one_line(exc)}") from exc


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "unknown"


def load_entry_points(group: str) -> None:
    """Import the module every installed entry point of ``group`` names."""
    for ep in entry_points(group=group):
        where = f"entry point {ep.name!r} ({group}, from distribution {_distribution(ep)!r})"
        if ep.attr:
            raise PluginError(
                f"{where}: points at an object ({ep.value!r}); point it at a module whose import registers"
            )
        try:
            importlib.import_module(ep.module)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"{where}: {_one_line(exc)}") from exc


def origin(obj: object) -> tuple[str, str]:
    """Who registered ``obj``: its module and qualified name (what makes a re-import the same object)."""
    return str(getattr(obj, "__module__", "?")), str(getattr(obj, "__qualname__", type(obj).__qualname__))


class Registry(Generic[T]):
    """Names -> registered objects, with built-ins and one entry-point group loaded on first lookup.

    ``noun`` names the kind of thing in messages ("algorithm", "data set"); ``builtins`` imports the
    modules registering fedmosaic's own; ``label`` turns a key into its name in messages.
    """

    def __init__(
        self,
        noun: str,
        group: str,
        builtins: Callable[[], None],
        label: Callable[[str], str] | None = None,
        declared: Mapping[str, str] | None = None,
    ) -> None:
        self.noun = noun
        self.group = group
        self._builtins = builtins
        self._label = label or (lambda key: f"{noun} {key!r}")
        # key -> the built-in module that registers it: listing names and checking a config's names
        # then import nothing, and a lookup imports only the module it needs (importing every
        # algorithm pulls in scikit-learn, scipy and librosa for a run that uses none of them).
        self._declared: dict[str, str] = dict(declared or {})
        self._items: dict[str, T] = {}
        self._origins: dict[str, tuple[str, str]] = {}
        self._state = _UNLOADED  # of the entry points: the built-ins are plain (cached) imports

    def add(self, key: str, item: T, by: object) -> None:
        """Register ``item`` under ``key``; ``by`` (a class or function) identifies who registers it.

        Registering never triggers loading: a built-in module imported directly (``from
        fedmosaic.algorithms.fedavg import FedAvg``) registers before the others are loaded.
        """
        who = origin(by)
        builtin = self._declared.get(key)
        if builtin is not None and who[0] != builtin:
            # a built-in's name, whether or not its module is imported yet
            raise PluginError(f"{self._label(key)} is registered twice: by {builtin} and by {who[0]}")
        old = self._origins.get(key)
        if old is not None and old != who and self._items[key] is not item:
            raise PluginError(f"{self._label(key)} is registered twice: by {old[0]} and by {who[0]}")
        self._items[key] = item
        self._origins[key] = who

    def ensure_loaded(self) -> None:
        """Import every built-in, then every entry point of the group (once per process)."""
        self._builtins()  # a module imported before costs a dictionary lookup
        self.load_plugins()

    def load_plugins(self) -> None:
        """Import the group's entry points (once per process), not the built-ins.

        What a lookup needs besides the declared built-in names: a plug-in's names are known only
        once its module is imported. A failure leaves the registry unloaded, so the next lookup
        raises the same error instead of going on with a part of the plug-ins.
        """
        if self._state != _UNLOADED:
            return  # loaded, or loading (a plug-in module looking names up while it is imported)
        self._state = _LOADING
        try:
            load_entry_points(self.group)
        except BaseException:
            self._state = _UNLOADED
            raise
        self._state = _LOADED

    def _resolve(self, key: str) -> bool:
        """Whether ``key`` is registered, importing the plug-ins and then its built-in module if needed."""
        if self._declared:
            self.load_plugins()
        else:
            self.ensure_loaded()  # nothing declared: the built-ins' names are known only by importing them
        if key not in self._items and key in self._declared:
            importlib.import_module(self._declared[key])
            if key not in self._items:
                raise PluginError(f"{self._label(key)}: {self._declared[key]} does not register it")
        return key in self._items

    def get(self, key: str) -> T:
        """The object registered under ``key``; ``KeyError`` lists the known names."""
        if not self._resolve(key):
            raise KeyError(f"unknown {self.noun} {key!r}; known: {', '.join(self.names())}")
        return self._items[key]

    def __contains__(self, key: str) -> bool:
        if self._declared:
            self.load_plugins()
            return key in self._items or key in self._declared
        self.ensure_loaded()
        return key in self._items

    def names(self) -> list[str]:
        """Every registered or declared key, sorted (importing no built-in module)."""
        if not self._declared:
            self.ensure_loaded()
        self.load_plugins()
        return sorted(set(self._items) | set(self._declared))

    def registered_by(self, key: str) -> str:
        """The module that registered ``key``."""
        self._resolve(key)
        return self._origins[key][0]
