"""Frozen model configuration built from the ``model`` field of a config file.

Model code never reads a ``ConfigDict``: ``ModelConfig.from_any`` turns the dict (or
a plain mapping) into this hashable dataclass, which can be a static jit argument.
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Any, Mapping

import jax
import ml_collections

# The torchvision ResNet-101 layout: bottleneck blocks per stage.
RESNET101_BLOCKS = (3, 4, 23, 3)
# Fields that older checkpoints may hold and that no longer exist: they chose between
# formulations of the same convolutions, so they are dropped when a config is read.
RETIRED_FIELDS = ("dilated_conv", "stem_conv")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Every size, rate and switch of the A-GAME network (REFERENCE.md).

    Defaults are the authors' released configuration; the tiny test variants only
    shrink widths and depths, they run the same code.
    """

    # Backbone: ResNet v1.5, output stride 16 (dilated layer4).
    backbone_blocks: tuple[int, ...] = RESNET101_BLOCKS
    backbone_width: int = 64            # stem width; stage widths are 64·(1, 2, 4, 8)·4
    freeze_below_layer4: bool = True    # stem..layer3 frozen, BN in inference mode
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    # Appearance module: a registered model by name (``agame_jax.appearance``) and its own
    # settings (a mapping; held as sorted (key, value) pairs so the config stays hashable).
    appearance: str = "agame"
    appearance_options: Any = ()
    appearance_dim: int = 512
    var_offset_init: float = -2.0       # softplus(−2) ≈ 0.127
    prior_count: float = 1.0
    update_rate: float = 0.1            # λ of eq. (4)
    # Heads.
    mask_prop_channels: int = 512
    pyramid_dilations: tuple[int, ...] = (1, 3, 6)
    fusion_channels: tuple[int, int] = (512, 128)
    upsampler_channels: int = 128
    coarse_kernel: int = 1              # the released weights use a 1×1 coarse predictor
    # Aggregation over objects.
    prob_clamp: float = 1e-7
    # Table 1 ablations (all off reproduces the full model).
    no_appearance: bool = False
    no_mask_propagation: bool = False
    unimodal_appearance: bool = False   # no residual components: K = 2
    no_appearance_update: bool = False  # keep the first-frame mixture
    appearance_softmax: bool = False    # softmax over the component scores
    no_fit_gradient: bool = False       # stop_gradient on the fitted mixture
    # Numerics: convolutions run in `dtype` ("auto": bfloat16 on GPU/TPU, float32 on CPU,
    # see `resolved`); the mixture math and the convolutions that read its scores run in
    # float32; parameters are stored in `param_dtype`.
    dtype: str = "auto"
    param_dtype: str = "float32"

    def __post_init__(self):
        for name in ("backbone_blocks", "pyramid_dilations", "fusion_channels"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        options = self.appearance_options
        if hasattr(options, "to_dict"):
            options = options.to_dict()
        options = dict(options.items() if isinstance(options, Mapping) else options)
        object.__setattr__(self, "appearance_options", tuple(sorted(
            (str(k), tuple(v) if isinstance(v, list) else v) for k, v in options.items())))
        if len(self.backbone_blocks) != 4:
            raise ValueError(f"model.backbone_blocks needs 4 stages, got {self.backbone_blocks}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError("model.dtype must be auto, float32, bfloat16 or float16, "
                             f"got {self.dtype!r}")
        if self.no_appearance and self.no_mask_propagation:
            raise ValueError("model.no_appearance and model.no_mask_propagation leave the "
                             "fusion module with no input")

    def appearance_option(self, name: str, default: Any = None) -> Any:
        """The appearance model's setting ``name`` (``default`` when not given)."""
        return dict(self.appearance_options).get(name, default)

    @property
    def num_components(self) -> int:
        """K: background and object, plus their residual components unless unimodal."""
        return 2 if self.unimodal_appearance else 4

    @property
    def feature_channels(self) -> tuple[int, int, int]:
        """Channels of the layer1 (s4), layer2 (s8) and layer4 (s16) maps."""
        w = self.backbone_width * 4
        return (w, 2 * w, 8 * w)

    def resolved(self, platform: str | None = None) -> "ModelConfig":
        """This config with ``dtype="auto"`` made concrete for ``platform`` (a JAX
        device's ``platform``: ``"cpu"`` gives float32, anything else bfloat16; default:
        JAX's default backend). A concrete ``dtype`` is kept. The model's modules run
        with the resolved config; what is saved with a checkpoint is the config as
        given, so that a model trained on a GPU runs float32 when evaluated on a CPU."""
        if self.dtype != "auto":
            return self
        platform = platform or jax.default_backend()
        return dataclasses.replace(self, dtype="float32" if platform == "cpu" else "bfloat16")

    @classmethod
    def from_any(cls, config: Any) -> "ModelConfig":
        """A ``ModelConfig`` from itself, a ``ConfigDict`` or a mapping of its fields.

        Unknown fields raise ``ValueError`` naming them (a typo must not pass silently).
        """
        if isinstance(config, cls):
            return config
        if config is None:
            return cls()
        if hasattr(config, "to_dict"):
            config = config.to_dict()
        if not isinstance(config, Mapping):
            raise TypeError(f"expected a model config, got {type(config).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        config = {k: v for k, v in config.items() if k not in RETIRED_FIELDS}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown model config field(s): {', '.join(unknown)}")
        return cls(**dict(config))

    def to_config_dict(self):
        """The fields as an ``ml_collections.ConfigDict`` (the ``model`` field of a config).

        Sequences stay tuples: the command line can override tuples
        (``--config.model.fusion_channels='(256, 64)'``), not lists."""
        fields = dataclasses.asdict(self)
        fields["appearance_options"] = dict(self.appearance_options)
        return ml_collections.ConfigDict(fields)

    def with_overrides(self, items) -> "ModelConfig":
        """A copy with fields set from ``"key=value"`` strings (command lines): values
        are Python literals where they parse (``(1, 2)``, ``True``, ``0.5``), else
        strings. Unknown fields raise ``ValueError``."""
        fields = self.to_dict()
        for item in items:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ValueError(f"expected key=value, got {item!r}")
            try:
                fields[key.strip()] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                fields[key.strip()] = value
        return ModelConfig.from_any(fields)

    def to_dict(self) -> dict:
        fields = {k: (list(v) if isinstance(v, tuple) else v)
                  for k, v in dataclasses.asdict(self).items()}
        fields["appearance_options"] = {k: (list(v) if isinstance(v, tuple) else v)
                                        for k, v in self.appearance_options}
        return fields
