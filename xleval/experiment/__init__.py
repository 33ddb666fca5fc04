"""Experiments before anything runs: specs read and resolved, the grid of cells, shot
sampling, trainer options and the data rules. Nothing here imports torch."""
