"""Metric families as plug-ins: ``register`` one function per family; ``due`` / ``measure``
run them on schedule. Importing this package registers the built-in families, in this order:
accuracy, collapse, binarity, same_encoding, mahalanobis, perturbation, ood, nc1
(``latent``); hyperplanes, alpha (``weights``); penultimate, dib, reinit (``files``); then every
other module of this package, by name (neural_collapse, effective_rank, intrinsic_dimension:
``geometry``; cka, weight_spectra: ``similarity``): a new family is its module plus its line in
``conf/metrics/default.yaml``."""

# isort: off
from latentgeo.families import latent  # noqa: F401  (registers the built-ins, in this order)
from latentgeo.families import weights  # noqa: F401
from latentgeo.families import files  # noqa: F401
from latentgeo.families import geometry  # noqa: F401
# isort: on
from latentgeo.families.core import (
    FAMILIES,
    Family,
    Point,
    check_metrics,
    due,
    histogram_arrays,
    measure,
    options,
    register,
    schedule,
    unregister,
)
from latentgeo.plugins import import_modules

import_modules(__path__, __name__, skip=("core", "latent", "weights", "files"))

__all__ = ["FAMILIES", "Family", "Point", "check_metrics", "due", "histogram_arrays", "measure",
           "options", "register", "schedule", "unregister"]
