"""Slow, obvious reimplementations used as references by the tests."""
import numpy as np


def aggregate_reference(p, active, clamp=1e-7):
    """The authors' softmax aggregation, one pixel at a time, in float64.

    ``p [O, H, W]`` per-object foreground probabilities, ``active [O]`` bools.
    """
    o, h, w = p.shape
    out = np.zeros((o + 1, h, w))
    for i in range(h):
        for j in range(w):
            act = [k for k in range(o) if active[k]]
            bg = min([1 - p[k, i, j] for k in act], default=1.0)
            pairs = [bg] + [p[k, i, j] for k in range(o)]
            odds = [min(max(v, clamp), 1 - clamp) / min(max(1 - v, clamp), 1 - clamp)
                    for v in pairs]
            odds = [odds[0]] + [odds[k + 1] if active[k] else 0.0 for k in range(o)]
            out[:, i, j] = np.array(odds) / sum(odds)
    return out


def pool16(x):
    """16×16 block means of ``[H, W]``."""
    h, w = x.shape
    return x.reshape(h // 16, 16, w // 16, 16).mean(axis=(1, 3))
