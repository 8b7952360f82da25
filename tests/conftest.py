"""Shared test set-up: fake CPU devices, a compilation cache, the authors' fixtures and tiny models."""
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# Tests are dominated by XLA:CPU compile time (about 85% of the suite's CPU time). With
# LLVM's optimisation level at 0 a tiny training step compiles in half the time (4.2 ->
# 2.1 s) and runs 0.06 -> 0.10 s: the convolutions and products call library kernels
# either way, and the tests run small shapes. The older elementwise emitters compile a
# training step in about two thirds of the time of the fusion emitters. Four fake CPU
# devices let the sharded (data-parallel) path be tested here.
_flags = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=0"
                           " --xla_cpu_use_fusion_emitters=false"
                           # unless a process started by a test asks for another count
                           + ("" if "device_count" in _flags
                              else " --xla_force_host_platform_device_count=4")).strip()
_CACHE_VARIABLE = "AGAME_TEST_XLA_CACHE"


def pytest_configure(config):
    import jax
    # Several tests build the same program through fresh closures (each training run
    # makes its own jitted step, every file its tiny model); a persistent compilation
    # cache turns the repeats into cache hits. One cache for the session: the first
    # process makes it, and pytest-xdist's workers (started after this) inherit its path.
    if _CACHE_VARIABLE not in os.environ:
        os.environ[_CACHE_VARIABLE] = tempfile.mkdtemp(prefix="agame-jax-xla-cache-")
        config._agame_xla_cache = Path(os.environ[_CACHE_VARIABLE])   # removed at the end
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_VARIABLE])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    # Threefry's key derivation is a large share of each init's compile time on CPU;
    # the tests only need some random weights, so they use the cheaper generator.
    jax.config.update("jax_default_prng_impl", "rbg")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("AGAME_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow (a minute or more on 2 cores); run with "
                                   "AGAME_SLOW_TESTS=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_unconfigure(config):
    cache = getattr(config, "_agame_xla_cache", None)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


# ../shared beside the checkout; AGAME_SHARED points elsewhere (e.g. a copy on a GPU host).
SHARED = Path(os.environ.get("AGAME_SHARED",
                             Path(__file__).resolve().parents[1].parent / "shared"))
FIXTURES = SHARED / "fixtures" / "authors_model"


@pytest.fixture(scope="session")
def authors_state_dict():
    """The authors' state dict on the fixture's reproducible weights (seed 0)."""
    if not (FIXTURES / "weights.py").exists():
        pytest.skip(f"parity fixtures not found at {FIXTURES}")
    sys.path.insert(0, str(FIXTURES))
    try:
        from weights import make_state_dict
    finally:
        sys.path.remove(str(FIXTURES))
    return make_state_dict(0)


@pytest.fixture(scope="session")
def authors_model(authors_state_dict):
    """``(config, variables)`` converted from the authors' state dict."""
    from agame_jax import ModelConfig
    from agame_jax.convert import convert_agame
    return convert_agame(authors_state_dict, ModelConfig(dtype="float32"))


def tiny_config(**overrides):
    """A narrow, shallow A-GAME for CPU tests: same code path, reduced widths/depths."""
    from agame_jax import ModelConfig
    fields = dict(dtype="float32", backbone_blocks=(1, 1, 1, 1), backbone_width=8, appearance_dim=16,
                  mask_prop_channels=16, fusion_channels=(16, 8), upsampler_channels=8)
    fields.update(overrides)
    return ModelConfig(**fields)


def assert_same_gradients(conv, want, got, x_shape, kernel_shape, seed=0, tol=1e-4):
    """Gradients of ``sum(tanh(conv(x, kernel, method)) * probe)`` w.r.t. ``x`` and
    ``kernel`` for method ``got`` equal those for ``want`` (random float32 inputs)."""
    import jax
    import jax.numpy as jnp
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
    probe = jnp.asarray(rng.normal(size=conv(x, kernel, want).shape), jnp.float32)
    loss = lambda x, kernel, m: jnp.sum(jnp.tanh(conv(x, kernel, m)) * probe)
    expected = jax.grad(loss, argnums=(0, 1))(x, kernel, want)
    for g, w in zip(jax.grad(loss, argnums=(0, 1))(x, kernel, got), expected):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


def random_clip(rng, t=3, h=64, w=64, batch=None):
    """Random uint8 frames ``[t, h, w, 3]`` (or ``[batch, t, …]``) with a moving square."""
    shape = ((batch,) if batch else ()) + (t, h, w, 3)
    frames = rng.integers(0, 256, size=shape, dtype=np.uint8)
    masks = np.zeros(shape[:-1], np.uint8)
    for i in range(t):
        masks[..., i, 8 + 2 * i: 8 + 2 * i + h // 3, 10 + i: 10 + i + w // 3] = 1
    return frames, masks


@pytest.fixture(scope="session")
def tiny_model():
    """``(config, variables)`` of the default tiny model, shared to save compiles."""
    import jax
    from agame_jax import init_variables
    cfg = tiny_config()
    return cfg, init_variables(cfg, jax.random.key(0))
