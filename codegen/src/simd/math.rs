//! exp, tanh, sigmoid, erf and the activations built on them, over [`Lanes`]. The algorithms
//! and coefficients are `vmath`'s (the Cranelift emitters), so the error bounds stated there and
//! checked by `math_tests.rs` hold here too (`simd::tests` runs the same sweeps on both
//! instantiations). Two changes of form, not of result: n = round(x·log₂e) comes from adding and
//! subtracting 1.5·2²³ (round-to-nearest-even, as Cranelift's `nearest`), and 2ⁿ is built by
//! shifting the bits of n + 2²³ + 127 (no float→int conversion). Constants are splatted in
//! these inlined functions, which LLVM hoists out of the callers' loops.

use super::vector::Lanes;
use crate::vmath::{ERF_P, ERF_Q, ERFCX_P, ERFCX_T_SCALE, GELU_TAIL, LN2_HI, LN2_LO};

/// 1.5·2²³: x + MAGIC − MAGIC rounds x to the nearest integer (ties to even) for |x| < 2²².
const MAGIC: f32 = 12_582_912.0;

#[inline(always)]
fn poly<V: Lanes>(x: V, coeffs: &[f32]) -> V {
    let mut acc = V::splat(coeffs[0]);
    for &k in &coeffs[1..] {
        acc = acc.fma(x, V::splat(k));
    }
    acc
}

/// Rounds integer-valued-to-be x to the nearest integer (|x| < 2²²).
#[inline(always)]
fn round<V: Lanes>(x: V) -> V {
    x.add(V::splat(MAGIC)).sub(V::splat(MAGIC))
}

/// 2ⁿ for an integer-valued n in [−126, 127].
#[inline(always)]
fn pow2<V: Lanes>(n: V) -> V {
    // n + 2²³ + 127 has the biased exponent n + 127 in its low mantissa bits.
    n.add(V::splat(8_388_735.0)).shl23()
}

/// eˣ = p·2ⁿ with p ∈ [√½, √2] (Cody–Waite reduction, Taylor to r⁷): (p, n).
#[inline(always)]
fn exp_parts<V: Lanes>(x: V) -> (V, V) {
    // round(x·log₂e) as one FMA with the rounding constant (the product is not rounded first:
    // at a tie n may differ by one from rounding the rounded product; r stays in the reduced
    // range either way).
    let n = x.fma(V::splat(std::f32::consts::LOG2_E), V::splat(MAGIC)).sub(V::splat(MAGIC));
    let r = n.fma(V::splat(-LN2_HI), x);
    let r = n.fma(V::splat(-LN2_LO), r);
    let p = poly(r, &[1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0]);
    (p, n)
}

/// x clamped to [lo, hi], NaN kept.
#[inline(always)]
pub(crate) fn clamp_keep_nan<V: Lanes>(x: V, lo: f32, hi: f32) -> V {
    // splat.max(x) is x when x is NaN (x86 max returns its second operand on NaN).
    V::splat(hi).min(V::splat(lo).max(x))
}

#[inline(always)]
pub(crate) fn exp<V: Lanes>(x: V) -> V {
    // Outside [−104, 88.8] the result is 0 or +inf anyway.
    let x = clamp_keep_nan(x, -104.0, 88.8);
    let (p, n) = exp_parts(x);
    // 2ⁿ as two factors (n ∈ [−150, 128]), each a normal float, so subnormal results and
    // overflow to +inf round once, as in vmath.
    let n1 = round(n.mul(V::splat(0.5)));
    let n2 = n.sub(n1);
    p.mul(pow2(n1)).mul(pow2(n2))
}

/// eᵈ for d ≤ 0, −∞ or NaN (a score minus its row max), flushed to 0 below 2⁻¹²⁶ (vmath's
/// `exp_nonpos`): one 2ⁿ factor instead of two.
#[inline(always)]
pub(crate) fn exp_nonpos<V: Lanes>(d: V) -> V {
    let d = V::splat(-104.0).max(d);
    let (p, n) = exp_parts(d);
    let s = pow2(V::splat(-126.0).max(n));
    let s = V::select(n.lt(V::splat(-126.0)), V::splat(0.0), s);
    p.mul(s)
}

#[inline(always)]
fn abs<V: Lanes>(x: V) -> V {
    x.and(V::splat(f32::from_bits(0x7fff_ffff)))
}

#[inline(always)]
pub(crate) fn tanh<V: Lanes>(x: V) -> V {
    let a = abs(x);
    let z = x.mul(x);
    let q = poly(
        z,
        &[
            -929_569.0 / 638_512_875.0,
            21_844.0 / 6_081_075.0,
            -1_382.0 / 155_925.0,
            62.0 / 2_835.0,
            -17.0 / 315.0,
            2.0 / 15.0,
            -1.0 / 3.0,
        ],
    );
    let small = x.mul(z).fma(q, x);
    let one = V::splat(1.0);
    let e = exp(a.add(a));
    let t = one.sub(V::splat(2.0).div(e.add(one)));
    // t ≥ 0: or-ing in x's sign bit restores the sign.
    let large = t.or(x.and(V::splat(-0.0)));
    V::select(a.lt(V::splat(0.5)), small, large)
}

#[inline(always)]
pub(crate) fn sigmoid<V: Lanes>(x: V) -> V {
    // 1/(1 + e) for x ≥ 0, e/(1 + e) below, e = e^{−|x|}: one division whose numerator is ready
    // as soon as e is (the select runs beside 1 + e), so nothing waits on the quotient.
    let a = abs(x);
    let e = exp(V::splat(0.0).sub(a));
    let one = V::splat(1.0);
    V::select(V::splat(0.0).le(x), one, e).div(one.add(e))
}

/// e^{−|x|} for |x| ≤ 87 (a normal result: one 2ⁿ factor, n ≥ −126) and NaN, with the mask of
/// the lanes where |x| > 87 (or ∞), for which the value is wrong: the callers recompute a vector
/// with such a lane by the full [`exp`] (no activation in a model reaches them in practice).
#[inline(always)]
fn exp_neg_common<V: Lanes>(x: V) -> (V, V) {
    // −|x| by setting the sign bit.
    let (p, n) = exp_parts(x.or(V::splat(-0.0)));
    (p.mul(pow2(n)), V::splat(87.0).lt(abs(x)))
}

/// [`sigmoid`] where no lane is beyond ±87, and the mask of those that are (see
/// [`exp_neg_common`]).
#[inline(always)]
pub(crate) fn sigmoid_common<V: Lanes>(x: V) -> (V, V) {
    let (e, deep) = exp_neg_common(x);
    let one = V::splat(1.0);
    (V::select(V::splat(0.0).le(x), one, e).div(one.add(e)), deep)
}

/// [`silu`] where no lane is beyond ±87, and the mask of those that are.
#[inline(always)]
pub(crate) fn silu_common<V: Lanes>(x: V) -> (V, V) {
    let (e, deep) = exp_neg_common(x);
    (V::select(V::splat(0.0).le(x), x, x.mul(e)).div(V::splat(1.0).add(e)), deep)
}

#[inline(always)]
pub(crate) fn erf<V: Lanes>(x: V) -> V {
    let xc = clamp_keep_nan(x, -3.92, 3.92);
    let z = xc.mul(xc);
    xc.mul(poly(z, &ERF_P)).div(poly(z, &ERF_Q))
}

#[inline(always)]
pub(crate) fn silu<V: Lanes>(x: V) -> V {
    // x/(1 + e) for x ≥ 0, x·e/(1 + e) below (as `sigmoid`, with x in the numerator).
    let a = abs(x);
    let e = exp(V::splat(0.0).sub(a));
    V::select(V::splat(0.0).le(x), x, x.mul(e)).div(V::splat(1.0).add(e))
}

/// x·Φ(x): ½x·(1 + erf(x/√2)), and the erfc form for the lanes below `GELU_TAIL` when a vector
/// has any (vmath's `Lanes::gelu_erf` explains both).
#[inline(always)]
pub(crate) fn gelu_erf<V: Lanes>(x: V) -> V {
    let (common, in_tail) = gelu_erf_common(x);
    if !in_tail.any() {
        return common;
    }
    gelu_erf_fix(x, in_tail, common)
}

/// ½x·(1 + erf(x/√2)) and the mask of the lanes whose accurate value needs [`gelu_erf_fix`].
#[inline(always)]
pub(crate) fn gelu_erf_common<V: Lanes>(x: V) -> (V, V) {
    let e = erf(x.mul(V::splat(std::f32::consts::FRAC_1_SQRT_2)));
    (V::splat(0.5).mul(x).mul(V::splat(1.0).add(e)), x.lt(V::splat(GELU_TAIL)))
}

/// `common` with the `in_tail` lanes replaced by the erfc form.
#[inline(always)]
pub(crate) fn gelu_erf_fix<V: Lanes>(x: V, in_tail: V, common: V) -> V {
    V::select(in_tail, gelu_erf_tail(x), common)
}

/// x·Φ(x) = ½x·e^{−a²/2}·t·P(t) for x < 0.
#[inline(always)]
fn gelu_erf_tail<V: Lanes>(x: V) -> V {
    let a = clamp_keep_nan(abs(x), 0.0, 16.0);
    let h = a.mul(a);
    let l = a.fma(a, V::splat(0.0).sub(h));
    let one = V::splat(1.0);
    let e = exp(h.mul(V::splat(-0.5))).mul(l.fma(V::splat(-0.5), one));
    let t = one.div(a.fma(V::splat(ERFCX_T_SCALE), one));
    x.mul(V::splat(0.5).mul(e).mul(t.mul(poly(t, &ERFCX_P))))
}

/// ½x·(1 + tanh(u)) = x·σ(2u), u = √(2/π)·(x + 0.044715·x³): the sigmoid keeps the negative
/// tail that 1 + tanh cancels to 0.
#[inline(always)]
pub(crate) fn gelu_tanh<V: Lanes>(x: V) -> V {
    let inner = V::splat(0.044_715).fma(x.mul(x), V::splat(1.0));
    x.mul(sigmoid(V::splat(2.0 * 0.797_884_6).mul(x.mul(inner))))
}
