"""agame-jax: A-GAME video object segmentation in JAX/Flax.

Public API: ``gmm`` (the mixture math), ``appearance`` (appearance models by name), ``ModelConfig``, ``init_variables``,
``Segmenter``; the modules live in ``agame_jax.model``.
"""
from pathlib import Path

from agame_jax import appearance, gmm
from agame_jax.api import init_variables, merge_params, split_params, variable_shapes
from agame_jax.config import ModelConfig
from agame_jax.segmenter import Segmenter

# The quickstart's small model (reduced widths, trained on the synthetic videos), shipped
# in the package for the examples, the research tools and the web app: a demonstration,
# not a segmenter for real footage.
DEMO_MODEL = Path(__file__).resolve().parent / "demo_model"

__all__ = ["DEMO_MODEL", "appearance", "gmm", "ModelConfig", "Segmenter", "init_variables", "variable_shapes",
           "split_params", "merge_params"]
__version__ = "0.1.0"
