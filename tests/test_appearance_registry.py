"""Appearance models by name: the registry, the config, the conformance of every
registered model, a model from outside the package through train.py, clear errors."""
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plugin_appearance  # noqa: F401  (registers "test-prototypes")
from agame_jax import ModelConfig, Segmenter, appearance, init_variables
from conftest import random_clip, tiny_config

ROOT = Path(__file__).resolve().parents[1]
# Every registered model, with options that make it small.
MODELS = {"agame": {}, "test-prototypes": {"dim": 6}, "agame-isotropic": {}, "agame-tied": {},
          "agame-learned-rate": {}, "agame-em": {"k": 2, "em_steps": 1}, "prototype": {},
          "ridge": {"dim": 6}}


def test_registry_lists_finds_and_refuses():
    assert {"agame", "test-prototypes"} <= set(appearance.registered())
    assert set(appearance.registered()) == set(MODELS), "add new models to MODELS"
    assert appearance.get("test-prototypes") is plugin_appearance.Prototypes
    with pytest.raises(ValueError, match="unknown appearance model 'nope'; registered: agame"):
        appearance.get("nope")
    with pytest.raises(TypeError, match="AppearanceModel subclass"):
        appearance.register("bad")(nn.Dense)

    class Other(appearance.AppearanceModel):
        pass
    with pytest.raises(ValueError, match="'agame' is already registered"):
        appearance.register("agame")(Other)


def test_config_holds_name_and_options_and_round_trips():
    cfg = ModelConfig(appearance="test-prototypes", appearance_options={"dim": 6, "rate": 0.2})
    assert cfg.appearance_option("dim") == 6 and cfg.appearance_option("missing", 3) == 3
    hash(cfg)                                            # a static jit argument
    assert ModelConfig.from_any(cfg.to_dict()) == cfg
    assert ModelConfig.from_any(cfg.to_config_dict()) == cfg
    assert cfg.to_dict()["appearance_options"] == {"dim": 6, "rate": 0.2}
    assert cfg.with_overrides(["appearance_options={'dim': 4}"]).appearance_option("dim") == 4
    assert appearance.num_scores(cfg) == 2 and appearance.num_scores(ModelConfig()) == 4
    assert appearance.num_scores(ModelConfig(no_appearance=True)) == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_conforms(name, tmp_path):
    """The contract as the network uses it: jit, vmap over objects, a scan over frames
    (fit on frame 0, then score and update), finite gradients and a non-zero gradient
    reaching the parameters through the fitted state alone; then a checkpoint round trip
    of the whole network built around it."""
    cfg = tiny_config(appearance=name, appearance_options=MODELS[name])
    model = appearance.get(name)(cfg)
    rng = np.random.default_rng(0)
    s16 = jnp.asarray(rng.standard_normal((3, 2, 4, 5, cfg.feature_channels[2])), jnp.float32)
    fg = rng.uniform(size=(3, 2, 4, 5)).astype(np.float32)            # [T, O, h, w] soft labels
    # Object 1 is absent from its first frame (a padding slot in training): its state and
    # gradients must stay finite (a prototype's a / |a| has a 0/0 gradient there).
    fg[0, 1] = 0.0
    fg = jnp.asarray(fg)
    labels = jnp.stack([1 - fg, fg], -1)

    def init(m):
        feats = m.project(s16[0, 0])
        return m.score(m.update(m.initial(feats, labels[0, 0]), feats, labels[0, 0]), feats)
    params = nn.init(init, model)(jax.random.key(0))["params"]

    def loss(params, fit_only=False):
        apply = lambda method, *a: model.apply({"params": params}, *a, method=method)
        feats = apply("project", s16)                                   # [T, O, h, w, D]
        read = jax.lax.stop_gradient(feats) if fit_only else feats
        state = jax.vmap(lambda f, y: apply("initial", f, y))(feats[0], labels[0])

        def frame(state, inputs):
            f, r, y = inputs
            scores = jax.vmap(lambda s, r: apply("score", s, r))(state, r)
            return jax.vmap(lambda s, f, y: apply("update", s, f, y))(state, f, y), scores
        _, scores = jax.lax.scan(frame, state, (feats[1:], read[1:], labels[1:]))
        assert scores.shape == (2, 2, 4, 5, appearance.num_scores(cfg))
        return jnp.sum(jnp.tanh(scores) * fg[1:, ..., None])
    grads, fit_grads = jax.jit(lambda p: (jax.grad(loss)(p),
                                          jax.grad(lambda q: loss(q, fit_only=True))(p)))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree_util.tree_leaves(fit_grads))
    _assert_checkpoint_round_trip(cfg, tmp_path / "ckpt")


def _assert_checkpoint_round_trip(cfg, path):
    """The full tiny model with this appearance model: a checkpoint records the model's
    name and options and gives back every variable. (Random values of the variables'
    shapes: ``init_variables`` would compile the whole network for nothing.)"""
    from agame_jax import checkpoint
    from agame_jax.api import variable_shapes
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_map(
        lambda s: rng.standard_normal(s.shape).astype(s.dtype),
        {k: v for k, v in variable_shapes(cfg).items() if k in ("params", "batch_stats")})
    checkpoint.save_variables(path, variables, cfg)
    loaded_cfg, loaded = checkpoint.load_variables(path)
    assert loaded_cfg == cfg and loaded_cfg.appearance == cfg.appearance
    assert loaded_cfg.appearance_options == cfg.appearance_options
    want = dict(jax.tree_util.tree_leaves_with_path(variables))
    got = dict(jax.tree_util.tree_leaves_with_path(loaded))
    assert got.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_array_equal(np.asarray(got[key]), value, err_msg=str(key))


def test_weights_of_another_model_are_refused_by_name(tiny_model, tmp_path):
    from agame_jax import checkpoint
    cfg, variables = tiny_model
    other = tiny_config(appearance="test-prototypes", appearance_options={"dim": 6})
    with pytest.raises(ValueError, match=r"variables hold \['params'\]\['appearance'\]"
                                         r"\['conv_in'\]\['bias'\] \(16,\), which the "
                                         r"configured model \(appearance='test-prototypes'"):
        Segmenter(other, variables)
    unimodal = tiny_config(unimodal_appearance=True)
    with pytest.raises(ValueError, match=r"variable \['params'\]\['appearance'\]\['cov_reg'\] "
                                         r"has shape \(4, 16\); .* needs \(2, 16\)"):
        Segmenter(unimodal, variables)
    checkpoint.save_variables(tmp_path / "ckpt", variables, cfg)
    config_file = tmp_path / "ckpt" / checkpoint.CONFIG_FILE
    config_file.write_text(config_file.read_text().replace('"unimodal_appearance": false',
                                                           '"unimodal_appearance": true'))
    with pytest.raises(ValueError, match="cov_reg"):
        checkpoint.load_variables(tmp_path / "ckpt")


def test_a_model_from_outside_the_package_trains_through_train_py(tmp_path):
    """A config file imports the module that registers the model; train.py builds it,
    trains, checkpoints (recording the name), and evaluate.py segments a video with it."""
    config_file = tmp_path / "plugin_config.py"
    config_file.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from plugin_appearance import plugin_train_config\n\n\n"
        "def get_config():\n"
        "    return plugin_train_config(num_steps=2)\n")
    # train.py's command line, in this process (a subprocess would spend most of its time
    # starting up; tests/test_train_loop.py runs the script itself).
    from absl import flags
    from agame_jax.train import cli
    flags.FLAGS(["train.py", "--config", str(config_file), "--workdir", str(tmp_path / "run")])
    try:
        assert cli._main(["train.py"]) == 0
    finally:
        flags.FLAGS.unparse_flags()
    from agame_jax import checkpoint
    step = checkpoint.resolve(tmp_path / "run", prefer="latest")
    assert checkpoint.load_model_config(step).appearance == "test-prototypes"
    frames, masks = random_clip(np.random.default_rng(2), t=3, h=32, w=32)
    # evaluate.py on a folder, importing the module first (here it is already imported;
    # without it the config's name is unknown: test_registry_lists_finds_and_refuses).
    from PIL import Image
    from agame_jax.data import davis
    video = tmp_path / "video"
    (video / "masks").mkdir(parents=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(video / f"{t:03d}.jpg")
    davis.write_label_png(video / "masks" / "000.png", masks[0])
    from agame_jax.evaluation.cli import main as evaluate
    assert evaluate(["--checkpoint", str(step), "--dataset", "folder", "--data-root", str(video),
                     "--output", str(tmp_path / "out"), "--import", "plugin_appearance"]) == 0
    assert len(list((tmp_path / "out" / "video").glob("*.png"))) == 3


def test_scores_of_another_width_than_declared_are_an_error(monkeypatch):
    """A model whose scores do not have ``num_scores`` channels fails at trace time
    instead of feeding the fusion module misaligned channels."""
    class Liar(plugin_appearance.Prototypes):
        @classmethod
        def num_scores(cls, config):
            return 3
    monkeypatch.setitem(appearance._REGISTRY, "test-liar", Liar)
    cfg = tiny_config(appearance="test-liar")
    with pytest.raises(ValueError, match="scored 2 channels; its num_scores says 3"):
        init_variables(cfg, jax.random.key(0))
