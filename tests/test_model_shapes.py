"""Full-size shapes and parameter counts (REFERENCE.md), computed with jax.eval_shape."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import ModelConfig, split_params, variable_shapes
from agame_jax.model.agame import AGame


def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.fixture(scope="module")
def full_params():
    return variable_shapes(ModelConfig())["params"]


def test_parameter_counts_match_reference(full_params):
    p = full_params
    assert count(p["backbone"]) == 42_500_160          # 44,549,160 minus the unused fc
    assert count({k: v for k, v in p["backbone"].items() if k.startswith("layer4")}) == 14_964_736
    assert count(p["appearance"]) == 1_051_136
    assert count(p["appearance"]["conv_in"]) == 1_049_088
    assert p["appearance"]["cov_reg"].shape == (4, 512)
    assert count(p["mask_prop"]) == 16_257_536
    assert count(p["fusion"]) == 2_968_450
    assert count(p["upsampler"]) == 690_946
    assert count(p) == 63_468_228
    trainable, frozen = split_params(p)
    assert count(trainable) == 35_932_804
    assert count(trainable) + count(frozen) == count(p)


def test_kernel_shapes_follow_reference(full_params):
    p = full_params
    assert p["backbone"]["conv1"]["kernel"].shape == (7, 7, 3, 64)
    assert p["backbone"]["layer4_1"]["conv2"]["kernel"].shape == (3, 3, 512, 512)
    assert p["backbone"]["layer4_0"]["downsample_conv"]["kernel"].shape == (1, 1, 1024, 2048)
    assert p["mask_prop"]["layer00"]["kernel"].shape == (1, 1, 4100, 512)
    for i in range(3):
        assert p["mask_prop"][f"layer01_conv{i}"]["kernel"].shape == (3, 3, 512, 512)
    assert p["mask_prop"]["layer02"]["kernel"].shape == (3, 3, 1536, 512)
    assert p["fusion"]["layer00"]["kernel"].shape == (3, 3, 516, 512)
    assert p["fusion"]["layer01"]["kernel"].shape == (3, 3, 512, 128)
    assert p["fusion"]["predictor"]["kernel"].shape == (1, 1, 128, 2)
    assert p["upsampler"]["project_s8"]["kernel"].shape == (1, 1, 512, 128)
    assert p["upsampler"]["blend_s8"]["kernel"].shape == (3, 3, 256, 128)
    assert p["upsampler"]["project_s4"]["kernel"].shape == (1, 1, 256, 128)
    assert p["upsampler"]["blend_s4"]["kernel"].shape == (3, 3, 256, 128)
    assert p["upsampler"]["predictor"]["kernel"].shape == (3, 3, 128, 2)


def test_module_output_shapes_full_size():
    cfg = ModelConfig()
    model = AGame(cfg)
    variables = variable_shapes(cfg)
    frames = jax.ShapeDtypeStruct((2, 3, 64, 96, 3), jnp.uint8)
    feats = jax.eval_shape(lambda v, f: model.apply(v, f, method=AGame.encode), variables, frames)
    assert feats.s4.shape == (2, 3, 16, 24, 256)
    assert feats.s8.shape == (2, 3, 8, 12, 512)
    assert feats.s16.shape == (2, 3, 4, 6, 2048)
    assert feats.app.shape == (2, 3, 4, 6, 512) and feats.app.dtype == jnp.float32
    assert feats.prop.shape == (2, 3, 4, 6, 512) and feats.prop.dtype == jnp.float32
    assert feats.skip8.shape == (2, 3, 8, 12, 128) and feats.skip4.shape == (2, 3, 16, 24, 128)
    one = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape[2:], x.dtype), feats)
    seg = jax.ShapeDtypeStruct((4, 6, 2), jnp.float32)
    state = jax.eval_shape(lambda v, f, y: model.apply(v, f, y, method=AGame.init_object),
                           variables, one, seg)
    assert state.appearance.mean.shape == (4, 512) and state.appearance.var.shape == (4, 512)
    assert state.prop_ref.shape == (4, 6, 512) and state.prev_seg.shape == (4, 6, 2)
    coarse, fine, scores = jax.eval_shape(lambda v, s, f: model.apply(
        v, s, f, method=AGame.predict_object), variables, state, one)
    assert coarse.shape == (4, 6, 2) and fine.shape == (64, 96, 2) and scores.shape == (4, 6, 4)
    assert fine.dtype == jnp.float32 and scores.dtype == jnp.float32


def test_unknown_model_field_is_an_error_and_retired_ones_are_dropped():
    with pytest.raises(ValueError, match="backbone_widht"):
        ModelConfig.from_any({"backbone_widht": 3})
    # Older checkpoints name how their convolutions were computed; the model has one way.
    old = {**ModelConfig().to_dict(), "dilated_conv": "im2col", "stem_conv": "native"}
    assert ModelConfig.from_any(old) == ModelConfig()


def test_init_variables_takes_a_config_files_model_field():
    from configs.stage1 import get_config
    config = get_config()
    cfg = ModelConfig.from_any(config.model)
    assert cfg == ModelConfig() and cfg.backbone_blocks == (3, 4, 23, 3)
    with pytest.raises(AttributeError):
        config.model.backbone_widht = 3               # locked: typos fail
    shapes = variable_shapes(config.model)
    assert count(shapes["params"]) == 63_468_228
