"""Import torchvision ResNet-101 and the authors' A-GAME weights.

Usage::

    python -m agame_jax.convert resnet101 resnet101-63fe2227.pth out/resnet101
    python -m agame_jax.convert agame agame_released.pth out/agame

Inputs may be a torch state dict (``.pth``/``.pt``, needs the ``convert`` extra), a
``.safetensors`` file or an ``.npz`` with the same tensor names. The output is an orbax
checkpoint (``agame_jax.checkpoint``) that ``Segmenter``, ``evaluate.py`` and
``train.py`` load. Missing, unexpected or mis-shaped tensors stop the conversion with an
error that names every one of them.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Mapping

import jax
import numpy as np
from safetensors.numpy import load_file

from agame_jax import checkpoint
from agame_jax.api import init_variables, variable_shapes
from agame_jax.config import ModelConfig

AGAME_PREFIX = "trackseg."
# Flax module path → torch module path, for the heads (the backbone is rule-based).
_HEAD_MODULES = {
    "appearance/conv_in": "appmod.conv_in",
    "mask_prop/layer00": "dynmod.layers.layer00.conv",
    "mask_prop/layer01_conv0": "dynmod.layers.layer01.conv0",
    "mask_prop/layer01_conv1": "dynmod.layers.layer01.conv1",
    "mask_prop/layer01_conv2": "dynmod.layers.layer01.conv2",
    "mask_prop/layer02": "dynmod.layers.layer02.conv",
    "fusion/layer00": "fusmod.layers.layer00.conv",
    "fusion/layer01": "fusmod.layers.layer01.conv",
    "fusion/predictor": "fusmod.predictor.layer00.conv",
    "upsampler/project_s8": "segmod.project_s8.conv",
    "upsampler/blend_s8": "segmod.blend_s8.conv",
    "upsampler/project_s4": "segmod.project_s4.conv",
    "upsampler/blend_s4": "segmod.blend_s4.conv",
    "upsampler/predictor": "segmod.predictor.conv",
}
_LEAF = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean",
         "var": "running_var"}
# torch entries that have no counterpart and are dropped on purpose.
_IGNORED = re.compile(r"(^|\.)num_batches_tracked$|(^|\.)fc\.(weight|bias)$")


class ConversionError(ValueError):
    """The state dict does not match the model; the message lists every problem."""


def _backbone_module(path: str) -> str:
    """``conv1`` / ``layer3_5/downsample_bn`` → torchvision module names."""
    m = re.fullmatch(r"layer(\d)_(\d+)/(\w+)", path)
    if not m:
        return path
    stage, block, sub = m.groups()
    sub = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(sub, sub)
    return f"layer{stage}.{block}.{sub}"


def torch_name(collection: str, path: tuple[str, ...]) -> str:
    """The torch state-dict name (without ``trackseg.``) of one flax variable."""
    *module, leaf = path
    module_path = "/".join(module)
    if module_path == "appearance" and leaf == "cov_reg":
        return "appmod.cov_reg"
    if module and module[0] == "backbone":
        return f"backbone.{_backbone_module('/'.join(module[1:]))}.{_LEAF[leaf]}"
    if module_path in _HEAD_MODULES:
        return f"{_HEAD_MODULES[module_path]}.{_LEAF[leaf]}"
    raise KeyError(f"no torch name for {collection}/{'/'.join(path)}")


def _to_flax(array: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and array.ndim == 4:
        array = array.transpose(2, 3, 1, 0)             # OIHW → HWIO
    elif leaf == "cov_reg":
        array = array.reshape(array.shape[0], -1)       # [K, 1, D, 1, 1] → [K, D]
    return array


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _set(tree: dict, path, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], template, *,
                            prefix: str = "", strip: str = "", only: str | None = None,
                            allow_extra: bool = False) -> dict:
    """Copy torch tensors into a flax variables tree shaped like ``template``.

    Args:
      state_dict: torch name → array (numpy, or anything ``np.asarray`` takes).
      template: variables (arrays or ``ShapeDtypeStruct``s) giving names and shapes.
      prefix: prepended to every torch name (``"trackseg."`` for the authors' file).
      strip: removed from the front of every torch name first (``"backbone."`` for a
        torchvision file, whose names start at ``conv1``).
      only: convert only variables under this top-level module (e.g. ``"backbone"``);
        the others are copied from ``template`` unchanged.
      allow_extra: tolerate state-dict entries that nothing maps to.

    Raises:
      ConversionError: listing missing, mis-shaped and (unless allowed) unexpected names.
    """
    out, used, missing, bad_shape = {}, set(), [], []
    for collection, tree in template.items():
        for path, target in _flatten(tree):
            if only is not None and path[0] != only:
                _set(out, (collection,) + path, target)
                continue
            name = torch_name(collection, path)
            name = prefix + (name[len(strip):] if strip and name.startswith(strip) else name)
            if name not in state_dict:
                missing.append(name)
                continue
            used.add(name)
            value = _to_flax(np.asarray(state_dict[name]), path[-1])
            if tuple(value.shape) != tuple(target.shape):
                bad_shape.append(f"{name}: got {tuple(np.shape(state_dict[name]))}, "
                                 f"model needs {tuple(target.shape)} (flax layout)")
                continue
            _set(out, (collection,) + path, value.astype(target.dtype))
    extra = [] if allow_extra else sorted(
        k for k in state_dict if k not in used and not _IGNORED.search(k)
        and (only is None or k.startswith(prefix)))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: " + ", ".join(missing))
    if bad_shape:
        problems.append(f"{len(bad_shape)} with the wrong shape: " + "; ".join(bad_shape))
    if extra:
        problems.append(f"{len(extra)} unexpected: " + ", ".join(extra))
    if problems:
        raise ConversionError("state dict does not match the model: " + " | ".join(problems))
    return out


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a state dict from ``.pth``/``.pt`` (torch), ``.safetensors`` or ``.npz``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    if suffix == ".safetensors":
        return dict(load_file(str(path)))
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(f"{path}: reading torch files needs the 'convert' extra "
                              "(pip install 'agame-jax[convert]')") from e
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(obj, Mapping) and "state_dict" in obj and not any(
                hasattr(v, "shape") for v in obj.values()):
            obj = obj["state_dict"]
        if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
            obj = obj["model"]
        return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}
    raise ValueError(f"{path}: unknown weight format {suffix!r} "
                     "(expected .pth, .pt, .safetensors or .npz)")


def convert_agame(state_dict: Mapping[str, np.ndarray], model_config: ModelConfig | None = None):
    """The authors' A-GAME state dict (``trackseg.*`` names) → ``(config, variables)``."""
    cfg = ModelConfig.from_any(model_config)
    prefix = AGAME_PREFIX if any(k.startswith(AGAME_PREFIX) for k in state_dict) else ""
    return cfg, state_dict_to_variables(state_dict, variable_shapes(cfg), prefix=prefix)


def convert_resnet101(state_dict: Mapping[str, np.ndarray], variables):
    """torchvision ResNet state dict → ``variables`` with the backbone replaced.

    ``variables`` supplies every non-backbone variable (e.g. a fresh ``init_variables``).
    """
    prefix = next((p for p in ("trackseg.backbone.", "backbone.", "module.")
                   if all(k.startswith(p) for k in state_dict)), "")
    return state_dict_to_variables(state_dict, variables, prefix=prefix, strip="backbone.",
                                   only="backbone")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agame_jax.convert",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["resnet101", "agame"])
    parser.add_argument("input", help=".pth, .safetensors or .npz state dict")
    parser.add_argument("output", help="directory for the orbax checkpoint")
    parser.add_argument("--seed", type=int, default=0,
                        help="init seed for the heads when converting resnet101")
    args = parser.parse_args(argv)
    try:
        state_dict = load_state_dict(args.input)
        cfg = ModelConfig()
        if args.kind == "agame":
            cfg, variables = convert_agame(state_dict, cfg)
        else:
            variables = convert_resnet101(
                state_dict, init_variables(cfg, jax.random.key(args.seed)))
    except (ConversionError, FileNotFoundError, ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    path = checkpoint.save_variables(args.output, variables, cfg)
    n = sum(int(np.prod(v.shape)) for _, v in _flatten(variables.get("params", {})))
    print(f"wrote {args.kind} weights ({n:,} parameters) to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
