"""Plug-in modules: a package whose every module registers something (the backbones in
``latentgeo.models``, the metric families in ``latentgeo.families``) imports them all here, so
that adding one is dropping its module into the package.

Foundation layer: the standard library only.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable


def import_modules(path: Iterable[str], package: str, skip: Iterable[str] = ()) -> None:
    """Import every module in ``path`` (the package ``package``'s ``__path__``) but ``skip``,
    by name."""
    skip = set(skip)
    for module in sorted(pkgutil.iter_modules(list(path)), key=lambda m: m.name):
        if module.name not in skip:
            importlib.import_module(f"{package}.{module.name}")
