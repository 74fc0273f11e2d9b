"""The old flat module paths (``kpid_core.macs``, ``kpid_core.data``, ...) as aliases of their homes in
:mod:`kpid_core.engine` and :mod:`kpid_core.training`.

docs/CONTRACTS.md promises that no public name is renamed without the old one working. The modules
moved into subpackages; instead of one shim file per old path, one import hook maps each old name to
the module at its new path, lazily (nothing is imported until the old name is), and to THE SAME
module object: ``import kpid_core.macs as m; m is kpid_core.engine.macs``, so a monkeypatch through
either path reaches the one module the code runs. The module keeps its own ``__name__`` and
``__spec__`` (so ``importlib.reload`` and pickling use the new path); pickles that name an old path
still load through the alias.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

__all__ = ["MOVED", "MovedModuleFinder", "install"]

_ENGINE = ("allocation", "cost", "export", "groups", "importance", "knapsack", "latency_table", "macs",
           "selection", "sensitivity", "spec", "splits", "surgery", "timing")
_TRAINING = ("data", "distill", "distributed", "idx", "tensor_images", "teacher", "train")

#: old module path -> new module path
MOVED: dict[str, str] = {
    **{f"kpid_core.{name}": f"kpid_core.engine.{name}" for name in _ENGINE},
    **{f"kpid_core.{name}": f"kpid_core.training.{name}" for name in _TRAINING},
}


class _AliasLoader(importlib.abc.Loader):
    """Loads an old path as the module already imported (or now imported) at its new path."""

    def __init__(self, new_name: str) -> None:
        self.new_name = new_name
        self._real_spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.new_name)
        self._real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # importlib's _init_module_attrs set the alias's spec on the module create_module returned;
        # give the real module its own spec back (reload, pickling and `python -m` read it).
        if self._real_spec is not None:
            module.__spec__ = self._real_spec


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that answers only for the old paths in :data:`MOVED`."""

    kpid_moved = True  # how install() recognises one, even from a reloaded copy of this module

    def find_spec(self, fullname, path=None, target=None):
        """Args:
            fullname: the module name being imported.
            path, target: unused (the standard finder arguments).

        Returns:
            A spec whose loader returns the module at the new path, or None for any other name.
        """
        new_name = MOVED.get(fullname)
        if new_name is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new_name))


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once: reloading ``kpid_core`` does not add a second)."""
    if not any(getattr(finder, "kpid_moved", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
