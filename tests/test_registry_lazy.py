"""Registries declare their built-ins by name: listing names and checking a config import no algorithm,
data set or encoder module that the run does not use, and the declarations match what registers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from fedmosaic.algorithms import registry as algorithms
from fedmosaic.core.errors import PluginError
from fedmosaic.core.plugins import Registry
from fedmosaic.data import registry as datasets
from fedmosaic.models import encoders


def _builtins(registry) -> dict[str, str]:
    """``{key: registering module}`` of fedmosaic's own entries (plug-ins left out)."""
    registry.ensure_loaded()
    return {k: m for k, (m, _) in registry._origins.items() if m.startswith("fedmosaic.")}


def test_declared_builtins_match_the_registering_modules() -> None:
    for registry in (algorithms.ALGORITHMS, datasets.DATASETS, encoders.ENCODERS):
        assert registry._declared == _builtins(registry), registry.noun


def test_declared_summaries_are_the_classes_own() -> None:
    for name, (_, summary) in algorithms.BUILTINS.items():
        assert algorithms.get_algorithm(name).summary == summary, name


# Entry points are hidden: an installed plug-in's module may import torch itself (the example does).
_PROBE = textwrap.dedent(
    """
    import sys
    import fedmosaic.core.plugins as plugins
    plugins.entry_points = lambda **kw: []
    from typer.testing import CliRunner
    from fedmosaic.cli import app
    listing = CliRunner().invoke(app, ["algorithms"])
    assert listing.exit_code == 0 and "gvf " in listing.output, listing.output
    assert "torch" not in sys.modules, "fedmosaic algorithms imported torch"
    """
)


def test_listing_algorithms_imports_no_torch() -> None:
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_lookup_imports_only_the_module_declaring_the_name(tmp_path, monkeypatch) -> None:
    for name in ("lazy_mod_a", "lazy_mod_b"):
        key = name[-1]
        (tmp_path / f"{name}.py").write_text(
            f"from tests_lazy_registry import REG\ndef made(): ...\nREG.add({key!r}, {key!r}, by=made)\n"
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("thing", "fedmosaic.none", lambda: None, declared={"a": "lazy_mod_a", "b": "lazy_mod_b"})
    monkeypatch.setitem(sys.modules, "tests_lazy_registry", type(sys)("tests_lazy_registry"))
    sys.modules["tests_lazy_registry"].REG = reg
    for name in ("lazy_mod_a", "lazy_mod_b"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert reg.names() == ["a", "b"] and "b" in reg
    assert "lazy_mod_a" not in sys.modules and "lazy_mod_b" not in sys.modules
    assert reg.get("a") == "a"
    assert "lazy_mod_a" in sys.modules and "lazy_mod_b" not in sys.modules
    with pytest.raises(PluginError, match="thing 'b' is registered twice: by lazy_mod_b and by"):
        reg.add("b", "other", by=test_a_lookup_imports_only_the_module_declaring_the_name)
