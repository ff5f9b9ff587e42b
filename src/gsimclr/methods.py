"""The pretraining methods, one :class:`Method` each in :data:`METHODS` (solo-learn's ``METHODS``
table is the model). The CLI's ``--method``/``--methods`` choices, the pipeline's stages and the
report's column titles all read this table.

Adding a method is one registration here (and a module of its own if it needs new pieces)::

    METHODS.register("mymethod", Method("mymethod", "My method", guided=True,
                                        description="G-SimCLR with ..."))

A ``guided`` method uses the run's pseudo labels: the pretraining loop builds its batches with the
configured guided sampler and passes the pseudo labels to the loss (``--guidance``); an unguided
method sees plain shuffled batches and no labels.

Example:
    >>> [(m.name, m.title, m.guided) for m in METHODS.values()]
    [('simclr', 'SimCLR', False), ('gsimclr', 'G-SimCLR', True)]
"""

from __future__ import annotations

from dataclasses import dataclass

from gsimclr.registry import Registry


@dataclass(frozen=True)
class Method:
    name: str          # the run folder's stage name and the results key
    title: str         # the column title in tables and plots
    guided: bool       # uses pseudo labels (guided batches and/or loss-side guidance)
    description: str = ""


METHODS: Registry = Registry("method")
METHODS.register("simclr", Method("simclr", "SimCLR", guided=False,
                                  description="two augmented views, NT-Xent over plain shuffled batches"))
METHODS.register("gsimclr", Method("gsimclr", "G-SimCLR", guided=True,
                                   description="SimCLR whose batches (and optionally loss) are guided by pseudo labels"))


def title(name: str) -> str:
    """A method's display title (its name when it is not registered, e.g. in an older run)."""
    return METHODS[name].title if name in METHODS else name
