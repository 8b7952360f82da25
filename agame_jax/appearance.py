"""Appearance models by name: the contract and the registry.

An appearance model is the part of A-GAME that turns layer4 features into per-pixel
scores for the fusion module, from a state fitted to the first frame and updated every
frame. ``ModelConfig(appearance=NAME, appearance_options={...})`` chooses one; every
entry point (``init_variables``, ``Segmenter``, the training step, ``train.py``,
``evaluate.py``) builds what the config names. The stock model is ``"agame"``
(``agame_jax.model.appearance.AppearanceModule``). A model from outside the package::

    from agame_jax.appearance import AppearanceModel, register

    @register("my-model")
    class MyModel(AppearanceModel):
        @classmethod
        def num_scores(cls, config): ...            # channels of ``score``
        def project(self, s16): ...                 # [..., h, w, C] -> [..., h, w, D] float32
        def initial(self, feats, labels): ...       # [h, w, D], [h, w, 2] -> state pytree
        def update(self, state, feats, labels): ... # -> state (same shapes)
        def score(self, state, feats): ...          # -> [h, w, num_scores(config)]

Methods see one object's maps (no batch axis; the model vmaps them over objects and
clips and scans them over frames), so a state is any pytree of fixed-shape arrays.
A config file that uses a model from elsewhere imports the module that registers it.
"""
from __future__ import annotations

import importlib

import flax.linen as nn
import jax

from agame_jax.config import ModelConfig

_REGISTRY: dict[str, type] = {}


class AppearanceModel(nn.Module):
    """Base class of appearance models (a ``flax.linen.Module``, field ``config``).

    Subclasses implement the five methods below; their parameters live under the model's
    ``appearance`` scope. ``config.appearance_options`` holds the model's own settings
    (``config.appearance_option(name, default)``).
    """

    config: ModelConfig = ModelConfig()

    @classmethod
    def num_scores(cls, config: ModelConfig) -> int:
        """Channels of ``score``'s output (the fusion module's appearance input)."""
        raise NotImplementedError

    def project(self, s16: jax.Array) -> jax.Array:
        """Layer4 features ``[..., h, w, C]`` → float32 features ``[..., h, w, D]``
        (object-independent: computed once per frame)."""
        raise NotImplementedError

    def initial(self, feats: jax.Array, labels: jax.Array):
        """State from the first frame: ``feats [h, w, D]``, soft ``labels [h, w, 2]``
        ``[background, object]`` at stride 16."""
        raise NotImplementedError

    def update(self, state, feats: jax.Array, labels: jax.Array):
        """The state after a frame, from its features and soft labels (same shapes)."""
        raise NotImplementedError

    def score(self, state, feats: jax.Array) -> jax.Array:
        """Per-pixel scores ``[h, w, num_scores(config)]`` of a frame's features."""
        raise NotImplementedError

    def inspect(self, state, feats: jax.Array, labels: jax.Array) -> dict:
        """Optional: named maps ``[h, w, ·]`` of what the model believes on a frame, for
        ``agame_jax.research.trace``: from the state before the frame's update, its
        features and the soft labels that update it. Default: none."""
        return {}


def register(name: str):
    """Class decorator: make an ``AppearanceModel`` subclass available as ``name``.

    Registering a different class under a taken name is an error (re-registering the
    same class, as a reloaded module does, is not)."""
    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, AppearanceModel)):
            raise TypeError(f"register({name!r}) needs an AppearanceModel subclass, got {cls!r}")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__,
                                                                      cls.__qualname__):
            raise ValueError(f"appearance model {name!r} is already registered "
                             f"({old.__module__}.{old.__qualname__})")
        _REGISTRY[name] = cls
        return cls
    return add


def _builtins():
    for module in ("agame_jax.model.appearance", "agame_jax.model.appearance_variants"):
        importlib.import_module(module)                     # they register the built-ins


def registered() -> tuple[str, ...]:
    """Names of the registered appearance models, sorted."""
    _builtins()
    return tuple(sorted(_REGISTRY))


def get(name: str) -> type:
    """The ``AppearanceModel`` class registered as ``name``."""
    _builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown appearance model {name!r}; registered: "
                         f"{', '.join(sorted(_REGISTRY))} (a model defined elsewhere is "
                         "registered when the module that defines it is imported)")
    return _REGISTRY[name]


def num_scores(config: ModelConfig) -> int:
    """Appearance channels the fusion module reads under ``config`` (0 without one)."""
    return 0 if config.no_appearance else get(config.appearance).num_scores(config)
