"""The report: built from a run's cells and validated against its schema, and rebuilt
from stored predictions (``xleval report --rescore``)."""
