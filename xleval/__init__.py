"""xleval: evaluate and compare cross-lingual learning methods.

The core defines hook specifications, a plugin manager and a registry; every method
(protocol), model, strategy, metric, dataset, executor and reporter comes from a plugin.
Plugins use the public API, :mod:`xleval.api`; docs/architecture.md maps the rest.
"""

__version__ = "0.11.1"
