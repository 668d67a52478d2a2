"""The package's foundation: errors, argument checks, the console's lines, paths, run records and
whole-or-nothing writing. Imports nothing else from sparsecse."""
