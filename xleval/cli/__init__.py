"""The ``xleval`` command line."""
