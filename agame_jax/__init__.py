"""agame-jax: A-GAME video object segmentation in JAX/Flax.

Public API: ``gmm`` (the mixture math), ``appearance`` (appearance models by name), ``ModelConfig``, ``init_variables``,
``Segmenter``; the modules live in ``agame_jax.model``.
"""
from agame_jax import appearance, gmm
from agame_jax.api import init_variables, merge_params, split_params, variable_shapes
from agame_jax.config import ModelConfig
from agame_jax.segmenter import Segmenter

__all__ = ["appearance", "gmm", "ModelConfig", "Segmenter", "init_variables", "variable_shapes",
           "split_params", "merge_params"]
__version__ = "0.1.0"
