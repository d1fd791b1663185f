#!/usr/bin/env python3
"""Fits the scaled complementary error function erfcx(z) = erfc(z)*exp(z^2) = t*P(t),
t = 1/(1 + z/2), used by codegen's GELU (vmath.rs Lanes::gelu_erf, simd/math.rs gelu_erf) for
the lower tail Phi(-a) = erfc(a/sqrt2)/2 that 1 + erf(x/sqrt2) loses to cancellation. Reports
the max relative error of t*P(t) evaluated in f32 (FMA Horner) on 0 <= z <= 16/sqrt2 (the
kernels clamp |x| to 16, where exp(-x^2/2) is already 0 in f32).

Method: weighted linear least squares on erfcx(z)/t with weights 1/f (relative error), reweighted
by the residual (Lawson's iteration toward minimax). Needs numpy (pinned in
tools/zoo/requirements.txt). Usage: python3 tools/vmath/fit_erfc.py
"""
import math

import numpy as np

DEG, ZMAX = 8, 16 / math.sqrt(2)


def erfcx(z):
    return math.erfc(z) * math.exp(z * z)


def fit():
    zs = np.concatenate([np.linspace(0, 2, 20000), np.linspace(2, ZMAX, 20000)])
    t = 1 / (1 + 0.5 * zs)
    f = np.array([erfcx(z) for z in zs]) / t
    a = np.vstack([t**k for k in range(DEG + 1)]).T
    w = 1 / f
    lawson = np.ones_like(f)
    for _ in range(30):
        coef, *_ = np.linalg.lstsq(a * (w * lawson)[:, None], f * w * lawson, rcond=None)
        r = np.abs(a @ coef - f) / f
        lawson = lawson * (1 + r / r.max())
    return coef.astype(np.float32)


def max_rel_error(coef):
    zs = np.linspace(0, ZMAX, 300001).astype(np.float32)
    ref = np.array([erfcx(float(z)) for z in zs])
    t = (np.float32(1) / (np.float32(1) + np.float32(0.5) * zs)).astype(np.float32)
    acc = np.full_like(t, coef[-1])
    for k in coef[-2::-1]:
        acc = (acc.astype(np.float64) * t.astype(np.float64) + np.float64(k)).astype(np.float32)
    y = (acc * t).astype(np.float32)
    return float(np.max(np.abs(y - ref) / ref))


if __name__ == "__main__":
    c = fit()
    print("P (highest degree first):", [str(x) for x in c[::-1]])
    print(f"max relative error of t*P(t) in f32: {max_rel_error(c):.3e}")
