"""The built-in appearance models beside "agame", each against a plain numpy form."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agame_jax import appearance, gmm
from agame_jax.model.appearance import AppearanceModule
from conftest import tiny_config


def build(name, **options):
    cfg = tiny_config(appearance=name, appearance_options=options)
    model = appearance.get(name)(cfg)
    rng = np.random.default_rng(0)
    s16 = jnp.asarray(rng.standard_normal((2, 4, 5, cfg.feature_channels[2])), jnp.float32)
    fg = rng.uniform(size=(2, 4, 5)).astype(np.float32)
    labels = jnp.asarray(np.stack([1 - fg, fg], -1))

    def run(m):
        feats = m.project(s16)
        state = m.update(m.initial(feats[0], labels[0]), feats[1], labels[1])
        return feats, state, m.score(state, feats[1])
    variables = model.init(jax.random.key(0), method=run)
    feats, state, scores = model.apply(variables, method=run)
    return (cfg, model, variables, np.asarray(feats, np.float64),
            np.asarray(labels, np.float64), state, scores)


def test_prototype_scores_are_scaled_cosines_of_blended_prototypes():
    cfg, _, variables, feats, labels, state, scores = build("prototype")
    unit = lambda a: a / np.sqrt(np.sum(a * a, axis=-1, keepdims=True) + 1e-12)
    protos = []
    for t in range(2):
        x, y = unit(feats[t]).reshape(-1, feats.shape[-1]), labels[t].reshape(-1, 2)
        protos.append(np.stack([(y[:, c:c + 1] * x).sum(0) / (y[:, c].sum() + 1e-6)
                                for c in range(2)]))
    rate = cfg.update_rate
    want = (1 - rate) * protos[0] + rate * protos[1]
    np.testing.assert_allclose(state, want, rtol=1e-5, atol=1e-6)
    scale = float(variables["params"]["scale"])
    np.testing.assert_allclose(scores, scale * unit(feats[1]) @ unit(want).T, rtol=1e-4,
                               atol=1e-5)


def test_ridge_solves_the_regularised_least_squares_of_its_statistics():
    cfg, model, variables, feats, labels, state, scores = build("ridge", dim=6)
    design = lambda t: np.concatenate([feats[t].reshape(-1, 6), np.ones((20, 1))], 1)
    rate = cfg.update_rate
    gram = sum(w * design(t).T @ design(t) / 20 for t, w in ((0, 1 - rate), (1, rate)))
    cross = sum(w * design(t).T @ labels[t].reshape(-1, 2) / 20
                for t, w in ((0, 1 - rate), (1, rate)))
    lam = np.log1p(np.exp(float(variables["params"]["reg"])))
    weights = np.linalg.solve(gram + lam * np.eye(7), cross)
    np.testing.assert_allclose(state.gram, gram, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores, (design(1) @ weights).reshape(4, 5, 2), rtol=1e-3,
                               atol=1e-5)


def test_learned_rate_starts_as_agame_and_learns_its_rate():
    cfg, model, variables, feats, labels, state, scores = build("agame-learned-rate")
    stock = AppearanceModule(cfg)
    params = {k: v for k, v in variables["params"].items() if k != "rate_logit"}
    np.testing.assert_allclose(jax.nn.sigmoid(variables["params"]["rate_logit"]),
                               cfg.update_rate, rtol=1e-6)
    feats32, labels32 = jnp.asarray(feats, jnp.float32), jnp.asarray(labels, jnp.float32)

    def stock_run(m):
        return m.update(m.initial(feats32[0], labels32[0]), feats32[1], labels32[1])
    want = stock.apply({"params": params}, method=stock_run)
    np.testing.assert_allclose(state.mean, want.mean, rtol=1e-5, atol=1e-6)

    def loss(p):
        def run(m):
            g = m.update(m.initial(feats32[0], labels32[0]), feats32[1], labels32[1])
            return jnp.sum(m.score(g, feats32[1])[..., 1])
        return model.apply({"params": p}, method=run)
    grad = jax.grad(loss)(variables["params"])["rate_logit"]
    assert grad.shape == (4,) and float(jnp.abs(grad).max()) > 0


@pytest.mark.parametrize("name, covariance", [("agame-isotropic", "isotropic"),
                                              ("agame-tied", "tied")])
def test_covariance_variants_fit_their_family(name, covariance):
    cfg, _, variables, feats, labels, state, _ = build(name)
    offset = np.log1p(np.exp(np.asarray(variables["params"]["cov_reg"])))
    fitted = np.asarray(state.var) - offset                             # [K, D]
    if covariance == "isotropic":       # one variance per component, not per channel
        np.testing.assert_allclose(fitted - fitted[:, :1], 0.0, atol=1e-5)
        assert np.ptp(fitted[:, 0]) > 1e-3
    else:                               # base pair and residual pair each share one
        np.testing.assert_allclose(fitted[0], fitted[1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fitted[2], fitted[3], rtol=1e-4, atol=1e-5)
        assert np.ptp(fitted[0]) > 1e-3


def test_em_model_scores_log_mixing_plus_log_likelihood():
    cfg, _, _, feats, labels, state, scores = build("agame-em", k=3, em_steps=2)
    assert appearance.num_scores(cfg) == 6 and scores.shape == (4, 5, 6)
    ll = gmm.log_likelihood(state.mixture, jnp.asarray(feats[1].reshape(-1, feats.shape[-1])))
    np.testing.assert_allclose(scores.reshape(-1, 6), ll + state.log_mixing, rtol=1e-5)
    pi = np.exp(np.asarray(state.log_mixing))
    np.testing.assert_allclose([pi[:3].sum(), pi[3:].sum()], [1.0, 1.0], rtol=1e-5)
