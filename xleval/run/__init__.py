"""Running an experiment: cells through an executor, each result stored as it arrives
(the cell store, the run directory and its lock), and what computed each result."""
