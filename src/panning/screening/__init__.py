"""Screening: everything that turns an untrained network into masks.

- :mod:`panning.screening.scores`: the indices (SNIP, GraSP, SynFlow, magnitude, random), which only score;
- :mod:`panning.screening.pruning`: the one screening loop (``prune``), the method registry and
  the single-index methods;
- :mod:`panning.screening.multi_index`: Panning, several indices weighted along the screening;
- :mod:`panning.screening.prospr`: ProsPr's meta-gradient scores;
- :mod:`panning.screening.layerwise`: random masks with uniform or ERK layer densities.

The package imports none of them itself (``panning`` does, which registers the methods), so that
``panning.connectivity`` can use the indices' helpers without an import cycle.

Examples:
    >>> from panning.screening import pruning
    >>> "panning" in pruning.method_names()
    True
"""
