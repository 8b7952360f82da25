"""Creating A-GAME variables: ``init_variables`` and ``variable_shapes``."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from agame_jax.config import ModelConfig
from agame_jax.model.agame import AGame

# Init runs the network once on a dummy clip: 2 frames (a first frame to initialise
# from and one to predict) of 32×32, small enough to keep init cheap.
_INIT_SHAPE = (1, 2, 32, 32, 3)


def _init(cfg: ModelConfig, rng):
    model = AGame(cfg)
    frames = jnp.zeros(_INIT_SHAPE, jnp.uint8)
    mask = jnp.zeros(_INIT_SHAPE[:1] + _INIT_SHAPE[2:4], jnp.float32)
    return model.init(rng, frames, mask)


def init_variables(model_config, rng) -> dict:
    """Fresh variables ``{"params": …, "batch_stats": …}`` for ``model_config``.

    ``model_config`` is a ``ModelConfig``, the ``model`` field of a config file
    (``ConfigDict``) or a mapping of ``ModelConfig`` fields; ``rng`` a JAX key.
    """
    cfg = ModelConfig.from_any(model_config)
    variables = jax.jit(functools.partial(_init, cfg))(rng)
    return jax.tree_util.tree_map(lambda x: x, dict(variables))


def variable_shapes(model_config) -> dict:
    """``ShapeDtypeStruct``s of every variable, without computing anything."""
    return dict(_variable_shapes(ModelConfig.from_any(model_config)))


@functools.lru_cache(maxsize=16)
def _variable_shapes(cfg: ModelConfig) -> dict:
    return jax.eval_shape(functools.partial(_init, cfg), jax.random.key(0))


def check_variables(model_config, variables) -> None:
    """Raise ``ValueError`` naming the first variable of ``variables`` (arrays, or
    anything with a ``shape``) that ``model_config``'s model does not have, lacks, or
    has with another shape: weights of one model never run silently under another's
    config (say another appearance model, or another number of components)."""
    cfg = ModelConfig.from_any(model_config)
    flat = lambda tree: {jax.tree_util.keystr(k): tuple(getattr(v, "shape", ()))
                         for k, v in jax.tree_util.tree_leaves_with_path(tree)}
    want = flat({k: v for k, v in variable_shapes(cfg).items() if k in ("params", "batch_stats")})
    got = flat({k: v for k, v in dict(variables).items() if k in ("params", "batch_stats")})
    what = (f"the configured model (appearance={cfg.appearance!r}, options "
            f"{dict(cfg.appearance_options)})")
    for key in sorted(set(want) | set(got)):
        if key not in got:
            raise ValueError(f"variables lack {key} {want[key]}, which {what} has")
        if key not in want:
            raise ValueError(f"variables hold {key} {got[key]}, which {what} does not have")
        if want[key] != got[key]:
            raise ValueError(f"variable {key} has shape {got[key]}; {what} needs {want[key]}")


def is_trainable(path: tuple[str, ...], model_config=None) -> bool:
    """Whether the parameter at ``path`` (keys under ``params``) is trained.

    layer4 and every head are; the backbone below layer4 is frozen (REFERENCE.md).
    """
    cfg = ModelConfig.from_any(model_config)
    if path[0] != "backbone" or not cfg.freeze_below_layer4:
        return True
    return path[1].startswith("layer4")


def split_params(params: dict, model_config=None) -> tuple[dict, dict]:
    """``params`` → ``(trainable, frozen)``, both nested dicts (see ``is_trainable``).

    Differentiating only ``trainable`` keeps XLA from building the frozen backward pass.
    """
    trainable = {k: v for k, v in params.items() if k != "backbone"}
    backbone = dict(params.get("backbone", {}))
    keep = {k: v for k, v in backbone.items() if is_trainable(("backbone", k), model_config)}
    rest = {k: v for k, v in backbone.items() if k not in keep}
    trainable["backbone"] = keep
    return trainable, ({"backbone": rest} if rest else {})


def merge_params(trainable: dict, frozen: dict) -> dict:
    """Inverse of ``split_params``."""
    out = dict(trainable)
    out["backbone"] = {**frozen.get("backbone", {}), **trainable.get("backbone", {})}
    return out
