"""``python -m xleval`` runs the command line."""

from xleval.cli.main import main

main()
