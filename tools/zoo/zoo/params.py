"""Model weights: each weight's values plus how the kiln JSON declares it.

Random weights are drawn from the SplitMix64 streams of docs/model-format.md (zoo.rng), one seed per
weight, so the same values are available in Python (for the numpy golden and the ONNX twin) and to
kiln (from the safetensors file, or regenerated from the JSON `init` entry for benchmark models).
"""

from collections import OrderedDict

import numpy as np

from . import rng


INIT_THRESHOLD = 4096


class Params:
    """An ordered set of named weights.

    `inline_init=False` (small models): weights go to the safetensors file, except random weights of
    at least INIT_THRESHOLD elements, which are declared with the seeded JSON `init` form so that the
    committed zoo stays small (their values are the same SplitMix64 streams either way).
    `inline_init=True` (benchmark models and the few small models too large to commit): random and
    constant weights are declared with the JSON `init` form, computed tables with inline `data`.
    """

    def __init__(self, seed: int, inline_init: bool):
        self.arrays: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self.specs: "dict[str, dict]" = {}
        self.seed = seed
        self.inline_init = inline_init

    def _add(self, name, array, spec):
        if name in self.arrays:
            raise ValueError(f"weight {name} defined twice")
        self.arrays[name] = array
        self.specs[name] = spec
        return name

    def _next_seed(self):
        self.seed += 1
        return self.seed

    def normal(self, name, shape, std=1.0, mean=0.0):
        seed = self._next_seed()
        n = int(np.prod(shape))
        a = rng.normal(seed, n, mean, std).reshape(shape)
        return self._add(name, a, {"init": {"normal": {"mean": float(mean), "std": float(std), "seed": seed}}})

    def uniform(self, name, shape, low=0.0, high=1.0):
        seed = self._next_seed()
        n = int(np.prod(shape))
        a = rng.uniform(seed, n, low, high).reshape(shape)
        return self._add(name, a, {"init": {"uniform": {"low": float(low), "high": float(high), "seed": seed}}})

    def constant(self, name, shape, value):
        a = np.full(shape, value, dtype=np.float32)
        return self._add(name, a, {"init": {"constant": {"value": float(value)}}})

    def linear(self, name, fan_in, fan_out, bias=True, gain=1.0, bias_std=0.02):
        """A [fan_in, fan_out] weight (y = x @ W + b) with std gain/√fan_in, keeping activations O(1)."""
        w = self.normal(name + ".weight", [fan_in, fan_out], gain / np.sqrt(fan_in))
        b = self.normal(name + ".bias", [fan_out], bias_std) if bias else None
        return w, b

    def conv(self, name, cin, cout, k, bias=True, gain=1.0, groups=1):
        fan_in = cin // groups * k * k
        w = self.normal(name + ".weight", [cout, cin // groups, k, k], gain / np.sqrt(fan_in))
        b = self.normal(name + ".bias", [cout], 0.02) if bias else None
        return w, b

    def norm_affine(self, name, c, scale_std=0.1, bias_std=0.1):
        """γ ~ 1 + N(0, scale_std), β ~ N(0, bias_std): non-trivial but near-identity."""
        g = self.normal(name + ".weight", [c], scale_std, 1.0)
        b = self.normal(name + ".bias", [c], bias_std)
        return g, b

    def data(self, name, array):
        """A computed table (sinusoids, RoPE cos/sin, masks, index lists)."""
        a = np.ascontiguousarray(array)
        if a.dtype == np.float64:
            a = a.astype(np.float32)
        assert a.dtype in (np.float32, np.int64), a.dtype
        return self._add(name, a, {"data": True})

    def calibrate(self, name, array):
        """Replaces a weight by chosen or measured values (BatchNorm running statistics measured on a
        forward pass, so that the layer normalises as a trained one would); stored as data."""
        assert self.arrays[name].shape == array.shape, name
        self.arrays[name] = np.asarray(array, dtype=np.float32)
        self.specs[name] = {"data": True}

    def in_safetensors(self, name):
        return "safetensors" in self.entry(name)

    def entry(self, name):
        """The kiln JSON weight entry."""
        a = self.arrays[name]
        dtype = {np.dtype(np.float32): "f32", np.dtype(np.int64): "i64"}[a.dtype]
        e = {"name": name}
        if dtype != "f32":
            e["dtype"] = dtype
        e["shape"] = list(a.shape)
        spec = self.specs[name]
        if "init" in spec and (self.inline_init or a.size >= INIT_THRESHOLD):
            e["init"] = spec["init"]
        elif not self.inline_init:
            e["safetensors"] = name
        elif "init" in spec:
            e["init"] = spec["init"]
        else:
            e["data"] = a.reshape(-1).tolist() if dtype == "i64" else [_f32(v) for v in a.reshape(-1)]
        return e


def _f32(v):
    return np.float32(v)
