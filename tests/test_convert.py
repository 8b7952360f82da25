"""Weight import: torchvision ResNet names, the authors' checkpoint, errors, the CLI."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import init_variables
from agame_jax.convert import ConversionError, convert_agame, convert_resnet101
from agame_jax.model.agame import AGame

from conftest import tiny_config

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def resnet_state_dict(rng, width, blocks):
    """Random weights under torchvision's names and shapes (fc and counters included)."""
    sd = {"conv1.weight": rng.normal(0, 0.3, (width, 3, 7, 7))}

    def bn(name, c):
        sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c)
        sd[f"{name}.bias"] = rng.uniform(-0.2, 0.2, c)
        sd[f"{name}.running_mean"] = rng.uniform(-0.3, 0.3, c)
        sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c)
        sd[f"{name}.num_batches_tracked"] = np.array(0)
    bn("bn1", width)
    c_in = width
    for stage, n in enumerate(blocks, start=1):
        c = width * 2 ** (stage - 1)
        for j in range(n):
            p = f"layer{stage}.{j}"
            fan = lambda i, k: np.sqrt(1.0 / (i * k * k))
            sd[f"{p}.conv1.weight"] = rng.normal(0, fan(c_in, 1), (c, c_in, 1, 1))
            sd[f"{p}.conv2.weight"] = rng.normal(0, fan(c, 3), (c, c, 3, 3))
            sd[f"{p}.conv3.weight"] = rng.normal(0, fan(c, 1), (4 * c, c, 1, 1))
            for k, ch in ((1, c), (2, c), (3, 4 * c)):
                bn(f"{p}.bn{k}", ch)
            if j == 0:
                sd[f"{p}.downsample.0.weight"] = rng.normal(0, fan(c_in, 1), (4 * c, c_in, 1, 1))
                bn(f"{p}.downsample.1", 4 * c)
            c_in = 4 * c
    sd["fc.weight"] = rng.normal(size=(10, c_in))
    sd["fc.bias"] = rng.normal(size=10)
    return {k: np.asarray(v, np.float32) if v.ndim else v for k, v in sd.items()}


def conv_ref(x, w, stride=1, pad=0, dil=1):
    """NCHW-free: x [C, H, W], w [O, I, kh, kw]; torch's conv2d by shifted matmuls."""
    x = np.pad(x, [(0, 0), (pad, pad), (pad, pad)])
    o, _, kh, kw = w.shape
    h_out = (x.shape[1] - dil * (kh - 1) - 1) // stride + 1
    w_out = (x.shape[2] - dil * (kw - 1) - 1) // stride + 1
    out = np.zeros((o, h_out, w_out))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i * dil: i * dil + stride * h_out: stride,
                      j * dil: j * dil + stride * w_out: stride]
            out += np.einsum("oc,chw->ohw", w[:, :, i, j], patch)
    return out


def resnet_ref(sd, image, blocks):
    """torchvision ResNet (eval mode) with output stride 16, on one HWC float image."""
    def bn(x, name):
        g, b, m, v = (sd[f"{name}.{k}"][:, None, None] for k in
                      ("weight", "bias", "running_mean", "running_var"))
        return (x - m) / np.sqrt(v + 1e-5) * g + b
    relu = lambda x: np.maximum(x, 0)
    x = ((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    x = relu(bn(conv_ref(x, sd["conv1.weight"], 2, 3), "bn1"))
    x = np.pad(x, [(0, 0), (1, 1), (1, 1)], constant_values=-np.inf)
    x = np.max([x[:, i: i + 2 * ((x.shape[1] - 3) // 2 + 1): 2, j: j + 2 * ((x.shape[2] - 3) // 2 + 1): 2]
                for i in range(3) for j in range(3)], axis=0)
    outs = {}
    for stage, n in enumerate(blocks, start=1):
        for j in range(n):
            p = f"layer{stage}.{j}"
            stride = 2 if stage in (2, 3) and j == 0 else 1
            dil = 2 if stage == 4 and j > 0 else 1
            y = relu(bn(conv_ref(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            y = relu(bn(conv_ref(y, sd[f"{p}.conv2.weight"], stride, dil, dil), f"{p}.bn2"))
            y = bn(conv_ref(y, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            if j == 0:
                x = bn(conv_ref(x, sd[f"{p}.downsample.0.weight"], stride), f"{p}.downsample.1")
            x = relu(x + y)
        outs[stage] = x.transpose(1, 2, 0)
    return {"s4": outs[1], "s8": outs[2], "s16": outs[4]}


def test_resnet_conversion_matches_reference_computation():
    cfg = tiny_config(backbone_blocks=(1, 2, 1, 3))      # layer4 with dilated blocks
    sd = resnet_state_dict(np.random.default_rng(0), cfg.backbone_width, cfg.backbone_blocks)
    variables = convert_resnet101(sd, init_variables(cfg, jax.random.key(0)))
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3)).astype(np.uint8)
    feats = AGame(cfg).apply(variables, jnp.asarray(image)[None, None], method=AGame.encode)
    ref = resnet_ref({k: np.asarray(v, np.float64) for k, v in sd.items()}, image.astype(np.float64),
                     cfg.backbone_blocks)
    for name in ("s4", "s8", "s16"):
        np.testing.assert_allclose(getattr(feats, name)[0, 0], ref[name], rtol=1e-4, atol=1e-4,
                                   err_msg=name)


def test_conversion_errors_name_the_tensors():
    cfg = tiny_config()
    variables = init_variables(cfg, jax.random.key(0))
    sd = resnet_state_dict(np.random.default_rng(0), cfg.backbone_width, cfg.backbone_blocks)
    broken = dict(sd)
    del broken["layer2.0.conv2.weight"]
    broken["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
    broken["layer1.0.bn3.running_var"] = np.zeros((7,), np.float32)
    with pytest.raises(ConversionError) as err:
        convert_resnet101(broken, variables)
    msg = str(err.value)
    assert "1 missing: layer2.0.conv2.weight" in msg
    assert "layer1.0.bn3.running_var: got (7,)" in msg
    assert "1 unexpected: layer9.0.conv1.weight" in msg


def test_authors_checkpoint_through_cli_and_orbax(authors_state_dict, tmp_path, capsys):
    """npz of the authors' state dict → CLI → orbax gives exactly the in-process conversion
    (whose outputs match the authors', tests/test_parity_authors.py)."""
    np.savez(tmp_path / "agame.npz", **authors_state_dict)
    out = tmp_path / "ckpt"
    run = subprocess.run([sys.executable, "-m", "agame_jax.convert", "agame",
                          str(tmp_path / "agame.npz"), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "63,468,228 parameters" in run.stdout
    from agame_jax import ModelConfig, checkpoint
    cfg, loaded = checkpoint.load_variables(out)
    assert cfg == ModelConfig()
    _, expected = convert_agame(authors_state_dict, ModelConfig())
    flat = lambda tree: {jax.tree_util.keystr(k): np.asarray(v)
                         for k, v in jax.tree_util.tree_leaves_with_path(tree)}
    got, want = flat(loaded), flat(expected)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    # A truncated file names what is missing and exits non-zero (the CLI's main, in
    # this process: the subprocess above showed the entry point).
    from agame_jax.convert import main
    partial = {k: v for k, v in authors_state_dict.items() if "segmod" not in k}
    np.savez(tmp_path / "partial.npz", **partial)
    assert main(["agame", str(tmp_path / "partial.npz"), str(tmp_path / "bad")]) == 1
    assert "trackseg.segmod.predictor.conv.weight" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # A tensor of the wrong shape, converted onto an existing checkpoint: the error names
    # it with both shapes and the checkpoint is left as it was.
    wrong = dict(authors_state_dict)
    wrong["trackseg.segmod.predictor.conv.weight"] = np.zeros((3, 128, 3, 3), np.float32)
    np.savez(tmp_path / "wrong.npz", **wrong)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["agame", str(tmp_path / "wrong.npz"), str(out)]) == 1
    assert ("trackseg.segmod.predictor.conv.weight: got (3, 128, 3, 3)"
            in capsys.readouterr().err)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.torch
def test_backbone_matches_torchvision():
    torch = pytest.importorskip("torch", reason="torch not installed (pip install '.[convert]')")
    torchvision = pytest.importorskip("torchvision", reason="torchvision not installed")
    from agame_jax import ModelConfig
    torch.manual_seed(0)
    net = torchvision.models.resnet101(weights=None,
                                       replace_stride_with_dilation=[False, False, True]).eval()
    for m in net.modules():                       # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.2, 0.6)
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    cfg = ModelConfig()
    variables = convert_resnet101(sd, init_variables(cfg, jax.random.key(0)))
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3)).astype(np.uint8)
    x = torch.from_numpy(((image / 255.0 - MEAN) / STD).astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        s4 = net.layer1(y)
        s8 = net.layer2(s4)
        s16 = net.layer4(net.layer3(s8))
    feats = AGame(cfg).apply(variables, jnp.asarray(image)[None, None], method=AGame.encode)
    for name, ref in (("s4", s4), ("s8", s8), ("s16", s16)):
        ref = ref[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(getattr(feats, name)[0, 0], ref,
                                   atol=1e-4 * max(1.0, np.abs(ref).max()), err_msg=name)
