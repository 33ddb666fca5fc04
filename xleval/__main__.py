"""``python -m xleval`` runs the command line."""

from xleval.cli import main

main()
