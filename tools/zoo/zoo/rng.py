"""The seeded initializer streams of docs/model-format.md (SplitMix64), vectorised with numpy.

Written from the format document alone, so that kiln's Rust streams are checked against an
independent implementation whenever a model with `init` weights is compared with its golden.
"""

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def splitmix_draws(seed: int, count: int) -> np.ndarray:
    """The first `count` outputs of SplitMix64 seeded with `seed`, as uint64."""
    with np.errstate(over="ignore"):
        k = np.arange(1, count + 1, dtype=np.uint64)
        z = np.uint64(seed) + k * _GOLDEN  # state after k increments (wrapping)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def uniform(seed: int, n: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    u = (splitmix_draws(seed, n) >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (low + (high - low) * u).astype(np.float32)


def normal(seed: int, n: int, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    d = splitmix_draws(seed, 2 * n) >> np.uint64(11)
    u1 = (d[0::2].astype(np.float64) + 1.0) * 2.0**-53
    u2 = d[1::2].astype(np.float64) * 2.0**-53
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return (mean + std * z).astype(np.float32)
