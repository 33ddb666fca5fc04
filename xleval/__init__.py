"""xleval: evaluate and compare cross-lingual learning methods.

The core defines hook specifications, a plugin manager and a registry; every
model, strategy, metric, dataset, executor and reporter comes from a plugin.
"""

__version__ = "0.4.0"
