"""Each client module declares its public surface, and `__all__` matches it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import shelfsync.client

MODULES = sorted(
    m.name for m in pkgutil.iter_modules(shelfsync.client.__path__, "shelfsync.client.")
)


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist_and_cover_the_public_definitions(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert all(hasattr(module, n) for n in exported)
    defined_here = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == name
    }
    assert defined_here <= exported, f"{name}: not in __all__: {defined_here - exported}"
