"""The report's statistics: per-cell values, intervals and paired tests over seeds and
test examples."""
