#!/usr/bin/env python3
"""Fits the rational approximation erf(x) = x*P(x^2)/Q(x^2) used by codegen/src/vmath.rs
(Lanes::erf) and reports its max relative error when evaluated in f32 (Horner, with and without
FMA), against math.erf on |x| <= 3.92. Beyond 3.92 erf rounds to +-1 in f32; the kernel clamps x.

Method: iterated weighted linear least squares (Loeb / Sanathanan-Koerner) on f(z) = erf(sqrt z)/sqrt z,
weights 1/(f*Q_prev) so the residual approximates the relative error. Needs numpy (pinned in
tools/zoo/requirements.txt). Usage: python3 tools/vmath/fit_erf.py
"""
import math

import numpy as np

DEG_P, DEG_Q, LIMIT = 5, 6, 3.92


def fit():
    xs = np.linspace(1e-4, LIMIT, 40000)
    z = xs * xs
    f = np.array([math.erf(x) / x for x in xs])
    q_prev = np.ones_like(z)
    for _ in range(60):
        a = np.hstack(
            [
                np.vstack([z**k for k in range(DEG_P + 1)]).T,
                -(f[:, None] * np.vstack([z**k for k in range(1, DEG_Q + 1)]).T),
            ]
        )
        w = 1 / (f * q_prev)
        coef, *_ = np.linalg.lstsq(a * w[:, None], f * w, rcond=None)
        p, q = coef[: DEG_P + 1], np.concatenate([[1.0], coef[DEG_P + 1 :]])
        q_prev = np.polyval(q[::-1], z)
    return p.astype(np.float32), q.astype(np.float32)


def max_rel_error(p, q, fma):
    xt = np.linspace(1e-6, LIMIT, 400001).astype(np.float32)
    ref = np.array([math.erf(float(v)) for v in xt])
    zz = (xt * xt).astype(np.float32)

    def horner(c):
        acc = np.full_like(xt, c[-1])
        for k in c[-2::-1]:
            if fma:
                acc = (acc.astype(np.float64) * zz.astype(np.float64) + np.float64(k)).astype(np.float32)
            else:
                acc = ((acc * zz).astype(np.float32) + k).astype(np.float32)
        return acc

    y = (xt * horner(p)).astype(np.float32) / horner(q)
    return float(np.max(np.abs(y.astype(np.float64) - ref) / ref))


if __name__ == "__main__":
    p, q = fit()
    print("P (highest degree first):", [f"{c:.8e}" for c in p[::-1]])
    print("Q (highest degree first):", [f"{c:.8e}" for c in q[::-1]])
    print(f"max relative error in f32: fma {max_rel_error(p, q, True):.3e}, no fma {max_rel_error(p, q, False):.3e}")
