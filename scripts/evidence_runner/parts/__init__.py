"""The parts of the evidence stages, one module per stage: each holds its parts' ``run`` (and ``progress``)
functions beside the Markdown report of its stage."""
