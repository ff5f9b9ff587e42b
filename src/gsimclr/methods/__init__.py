"""The pretraining methods, one :class:`Method` each in :data:`METHODS` (solo-learn's ``METHODS``
table is the model). The CLI's ``--method``/``--methods`` choices, the pipeline's stages and the
report's column titles all read this table.

A method owns itself: its model (backbone, head, any extra encoder), its number of views, its
criterion, its training step, its option checks and whether it uses pseudo labels. The entry here is
light (no PyTorch import, so the CLI's checks stay fast); its ``recipe`` names the
:class:`gsimclr.methods.base.Recipe` subclass, in a module of its own, that builds those parts::

    METHODS.register("mymethod", Method("mymethod", "My method", guided=False,
                                        recipe="gsimclr.methods.mymethod:MyRecipe", description="..."),
                     declares=Declares(options=(Option("my_option", 1.0, "what it sets", gt=0),)))

A ``guided`` method uses the run's pseudo labels: the pretraining loop builds its batches with the
configured guided sampler and passes the pseudo labels to the loss (``--guidance``); an unguided
method sees plain shuffled batches and no labels. Its declared options (:class:`gsimclr.options.Declares`)
are options of ``run`` and ``pretrain`` (section ``pretrain`` unless the option names another), read as
``cfg.my_option``; given for a run of none of the methods that declare them, they are refused as
ignored. Its declared checks run on the configuration of every run that trains it.

Example:
    >>> [(m.name, m.title, m.guided) for m in METHODS.values()][:4]  # the shipped ones (plug-ins add more)
    [('simclr', 'SimCLR', False), ('gsimclr', 'G-SimCLR', True), ('moco', 'MoCo', False), ('gmoco', 'G-MoCo', True)]
    >>> default_methods()
    ['simclr', 'gsimclr']
    >>> METHODS["moco"].loss_title
    'InfoNCE loss (queue)'
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gsimclr.errors import UserError
from gsimclr.loss import loss_title as _loss_title
from gsimclr.config import comma_items
from gsimclr.options import Declares, Option, flag
from gsimclr.registry import Registry


@dataclass(frozen=True)
class Method:
    name: str          # the run folder's stage name and the results key
    title: str         # the column title in tables and plots
    guided: bool       # uses pseudo labels (guided batches and/or loss-side guidance)
    recipe: str = "gsimclr.methods.simclr:SimCLR"   # "module:Class" of its parts (a Recipe)
    description: str = ""
    loss_title: str | None = None     # the loss curves' axis label (None: the --loss entry's)
    default: bool = True              # among the methods `gsimclr run` trains without --methods
    requires: tuple[tuple[str, Any, str], ...] = ()  # (config field, the value it must have, why)
    fits: str = ""    # "module:function" (no PyTorch): fits(cfg, n_images, counted) raises when the data is too small

    def parts(self) -> Any:
        """The method's :class:`gsimclr.methods.base.Recipe` (imported on first use: it needs PyTorch)."""
        return _recipe(self)


@lru_cache(maxsize=None)
def _recipe(method: Method) -> Any:
    module, _, cls = method.recipe.partition(":")
    where = f"method {method.name}: recipe {method.recipe!r}"
    try:
        found = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise UserError(f"{where}: cannot import {module} ({type(exc).__name__}: {exc})") from None
    except AttributeError:
        raise UserError(f"{where}: module {module} has no {cls}") from None
    # Recipe is found in the class's bases, not imported: gsimclr.methods.base imports this module
    recipe = next((c for c in getattr(found, "__mro__", ()) if c.__name__ == "Recipe"
                   and c.__module__ == "gsimclr.methods.base"), None)
    if recipe is None:
        raise UserError(f"{where} is not a gsimclr.methods.base.Recipe subclass")
    missing = [hook for hook in ("build_model", "build_criterion", "make_loss_fn") if getattr(found, hook) is
               getattr(recipe, hook)]
    if missing:
        raise UserError(f"{where}: {cls} does not define {', '.join(missing)} (see docs/extending.md, A method)")
    return found(method)


_MOCO_FITS = "gsimclr.methods.moco_queue:check_queue"   # the queue against the images
_MOCO_REQUIRES = (("views", 2, "contrasts a query with one key (2 views)"),
                  ("views_forward", "joint", "always passes the query and the key through their own encoders"),
                  ("loss", "ntxent", "contrasts a query with its queue by its own InfoNCE loss (the other --loss "
                   "choices are not implemented for the queue); use --loss ntxent"))

def _check_entry(name: str, method: Any) -> str | None:
    """What is wrong with a method's registration: its record, its stage name, its recipe reference."""
    if not isinstance(method, Method):
        return f"register a gsimclr.methods.Method record, not {type(method).__name__}"
    if method.name != name:
        return f"its Method is named {method.name!r}; the name is its stage folder and results key, give the same"
    module, colon, cls = method.recipe.partition(":") if isinstance(method.recipe, str) else ("", "", "")
    if not (colon and cls.isidentifier() and all(part.isidentifier() for part in module.split("."))):
        return f"recipe must be 'module:Class' (a gsimclr.methods.base.Recipe subclass), got {method.recipe!r}"
    return None


METHODS: Registry = Registry("method", section="pretrain", commands=("run", "pretrain"),
                             reserved=("pseudo_labels",), entry_check=_check_entry)  # (the run folder's own folder)
_MOCO = Declares(options=(
    Option("queue_size", None, "MoCo: keys of earlier batches kept as negatives (default: 4096, or fewer on a small "
           "data set: whole batches up to the images minus one batch; MoCo v2: 65536 on ImageNet); with pseudo "
           "labels each keeps its image's label for --guidance", type=int, min=1, section="moco"),
    Option("moco_momentum", 0.99, "MoCo: momentum m of the key encoder, an exponential moving average of the query "
           "encoder (k <- m k + (1 - m) q; MoCo v2: 0.999)", min=0, max=1, section="moco")))
METHODS.register("simclr", Method("simclr", "SimCLR", guided=False,
                                  description="--views augmented views (2), NT-Xent over plain shuffled batches"))
METHODS.register("gsimclr", Method("gsimclr", "G-SimCLR", guided=True,
                                   description="SimCLR whose batches (and optionally loss) are guided by pseudo labels"))
METHODS.register("moco", Method("moco", "MoCo", guided=False, recipe="gsimclr.methods.moco:MoCo",
                                description="MoCo v2: a momentum key encoder and a queue of negatives",
                                loss_title="InfoNCE loss (queue)", default=False, requires=_MOCO_REQUIRES,
                                fits=_MOCO_FITS),
                 declares=_MOCO)
METHODS.register("gmoco", Method("gmoco", "G-MoCo", guided=True, recipe="gsimclr.methods.moco:MoCo",
                                 description="MoCo whose batches and queue negatives are guided by pseudo labels "
                                 "(the queue keeps each key's pseudo label)",
                                 loss_title="InfoNCE loss (queue)", default=False, requires=_MOCO_REQUIRES,
                                 fits=_MOCO_FITS),
                 declares=_MOCO)


def check_method_options(cfg: Any, name: str) -> None:
    """The options method ``name`` cannot train with (its ``requires``), as a one-line UserError; no data
    and no PyTorch needed, so the command line runs it before any work. The data-dependent checks are
    its recipe's (:meth:`gsimclr.methods.base.Recipe.check`)."""
    method = METHODS.get(name)
    for field, value, why in method.requires:
        if getattr(cfg, field) != value:
            raise UserError(f"{flag(field)} {getattr(cfg, field)}: {method.title} {why}")
    for check in METHODS.checks(name):
        problem = check(cfg)
        if problem:
            raise UserError(problem)


def check_method_images(cfg: Any, name: str, n_images: int, counted: str = "") -> None:
    """The options method ``name`` cannot train with on ``n_images`` training images (its ``fits``, e.g.
    MoCo's queue), as a one-line UserError; no PyTorch needed, so the command line runs it before any
    work when ``--train-limit`` bounds the images (``counted`` names where the number comes from)."""
    method = METHODS.get(name)
    if method.fits:
        module, _, function = method.fits.partition(":")
        getattr(importlib.import_module(module), function)(cfg, n_images, counted)


def guided_form(name: str) -> str:
    """The guided method built from the same parts as ``name`` (``simclr`` -> ``gsimclr``, ``moco`` ->
    ``gmoco``); ``name`` itself when it is guided or has none."""
    method = METHODS.get(name)
    if method.guided:
        return name
    return next((other.name for other in METHODS.values() if other.guided and other.recipe == method.recipe), name)


def parse_methods(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated registered names, each once."""
    methods = tuple(comma_items(text, "--methods"))
    if not methods or any(m not in METHODS for m in methods) or len(set(methods)) != len(methods):
        raise UserError(f"--methods must list some of {', '.join(METHODS.names())} (each once), got {text!r}")
    return methods


def default_methods() -> list[str]:
    """The methods ``gsimclr run`` trains when ``--methods`` is not given (SimCLR and G-SimCLR)."""
    return [name for name, method in METHODS.items() if method.default]


def loss_title(name: str, loss: str = "ntxent") -> str:
    """The loss curves' axis label of method ``name`` trained with ``--loss loss``: the method's own
    ``loss_title``, else the loss entry's title."""
    own = METHODS[name].loss_title if name in METHODS else None
    if own is not None:
        return own
    return _loss_title(loss)


def title(name: str) -> str:
    """A method's display title (its name when it is not registered, e.g. in an older run)."""
    return METHODS[name].title if name in METHODS else name
