"""Annual map updates (``chain update``): last year's finished run as the starting point of this year's.

``options`` is the ``update:`` config section; ``previous`` opens and checks last year's work folder;
``siamese`` scores every reference polygon for "same land cover as last year" (the carryover step);
``transfer`` starts this year's networks from last year's weights, pruned on request; ``changes``
compares the two years' maps (the changes step).
"""
