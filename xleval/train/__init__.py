"""Everything that touches tensors: the trainer, its compiled row kernel, the context
in which one cell trains and scores, the artifact store of trained models, and the checks
of what components return. The only core package that imports torch."""
