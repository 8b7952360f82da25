"""An appearance model defined outside the package (as a researcher would write one):
class prototypes from the soft labels, cosine similarities as scores. Importing this
module registers it as ``"test-prototypes"``; ``plugin_train_config`` is a tiny training
config that uses it (a config file imports this module, then returns it)."""
import flax.linen as nn
import jax
import jax.numpy as jnp

from agame_jax.appearance import AppearanceModel, register


@register("test-prototypes")
class Prototypes(AppearanceModel):
    """Mean feature of background and object, blended with rate ``rate``; scores are
    cosine similarities times a learned temperature. Option ``dim``: feature width."""

    @classmethod
    def num_scores(cls, config) -> int:
        return 2

    def setup(self):
        self.proj = nn.Dense(self.config.appearance_option("dim", 8))
        self.temperature = self.param("temperature", nn.initializers.constant(5.0), ())

    def project(self, s16):
        return self.proj(s16.astype(jnp.float32))

    def initial(self, feats, labels):
        w, f = labels.reshape(-1, 2), feats.reshape(-1, feats.shape[-1])
        return (w.T @ f) / (w.sum(0)[:, None] + 1e-3)                    # [2, D]

    def update(self, state, feats, labels):
        rate = self.config.appearance_option("rate", 0.1)
        return (1 - rate) * state + rate * self.initial(feats, labels)

    def score(self, state, feats):
        # rsqrt(|a|² + ε): finite gradient at a zero prototype (an absent object)
        unit = lambda a: a * jax.lax.rsqrt(jnp.sum(a * a, axis=-1, keepdims=True) + 1e-12)
        return self.temperature * jnp.einsum("hwd,kd->hwk", unit(feats), unit(state))


def plugin_train_config(num_steps: int = 2):
    """The quickstart pipeline shrunk to a tiny model with ``"test-prototypes"``."""
    from agame_jax.train.defaults import base_config
    from conftest import tiny_config
    config = base_config()
    config.model = tiny_config(appearance="test-prototypes",
                               appearance_options={"dim": 6}).to_config_dict()
    d = config.data
    d.sources, d.clip_length, d.height, d.width = "synthetic", 3, 32, 32
    d.min_start_pixels, d.synthetic_objects, d.synthetic_distractors = 20, 1, 1
    d.num_threads, d.prefetch = 1, 2
    t = config.train
    t.batch_size = 4
    t.learning_rate, t.clips_per_epoch, t.num_steps = 1e-3, 8, num_steps
    t.log_every, t.checkpoint_every, t.keep_checkpoints = 1, 2, 2
    config.validation.source = ""
    return config

