//! Dense sweeps of the generated transcendental functions against f64 references.

use crate::jit::{HostFeatures, Jit};
use crate::kernels::elementwise::{self, Expr, Fused};
use kiln_ir::{BinaryOp, UnaryOp};

/// Runs `op` over `xs` through a generated kernel (vector body and scalar tail both exercised).
pub(crate) fn run_unary(op: UnaryOp, xs: &[f32], features: HostFeatures) -> Vec<f32> {
    let mut jit = Jit::new(features).unwrap();
    let n = xs.len();
    let f = Fused { nodes: vec![Expr::Leaf(0), Expr::Unary(op, 0)], out_shape: vec![n], leaf_shapes: vec![vec![n]] };
    let lay = elementwise::define(&mut jit, "u", &f).unwrap();
    let (funcs, _mem) = jit.finish().unwrap();
    let mut out = vec![0f32; n];
    let args = [out.as_mut_ptr() as *mut u8, xs.as_ptr() as *mut u8];
    // SAFETY: the kernel reads n f32 from args[1] and writes n f32 to args[0], both of length n.
    unsafe { (funcs[0].func)(args.as_ptr(), 0, lay.rows() as i64) };
    out
}

/// Inputs: every 61st f32 bit pattern of both signs (≈ 4.4M values spanning the whole range),
/// plus specials.
pub(crate) fn sweep() -> Vec<f32> {
    let mut xs: Vec<f32> =
        (0u32..0x7f80_0000).step_by(61 * 16).flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)]).collect();
    xs.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
        f32::MAX,
        -f32::MAX,
        1.0,
        -1.0,
        0.5,
        0.75,
        -0.75,
        88.72,
        88.73,
        -87.3,
        -103.0,
        -104.0,
    ]);
    xs.extend((-20000..20000).map(|i| i as f32 * 1e-3));
    xs.push(3.0); // length ≡ 3 (mod 4) so the scalar tail runs
    while xs.len() % 4 != 3 {
        xs.push(0.25);
    }
    xs
}

/// Max relative error (normal results) and whether specials match, over the sweep.
fn check(op: UnaryOp, reference: fn(f64) -> f64, bound: f64) {
    for fma in [true, false] {
        let feats = HostFeatures { fma: fma && HostFeatures::detect().fma };
        let xs = sweep();
        let ys = run_unary(op, &xs, feats);
        check_values(&format!("{op:?} fma={}", feats.fma), &xs, &ys, reference, bound);
    }
}

/// `ys` = f(`xs`) against `reference` in f64: NaN where it is NaN, infinities only at the f32
/// overflow boundary, subnormal results within 2 subnormal ulps, normal ones within `bound`
/// relative. Shared with the hand-written kernels' tests (`simd::tests`).
pub(crate) fn check_values(what: &str, xs: &[f32], ys: &[f32], reference: fn(f64) -> f64, bound: f64) {
    check_values_sub(what, xs, ys, reference, bound, 2.0)
}

/// [`check_values`] with subnormal results allowed `sub_ulps` subnormal ulps: a function that
/// rounds several normal intermediates before its result underflows (GELU's tail) carries their
/// relative error into the subnormal range as an absolute one.
pub(crate) fn check_values_sub(
    what: &str,
    xs: &[f32],
    ys: &[f32],
    reference: fn(f64) -> f64,
    bound: f64,
    sub_ulps: f64,
) {
    let mut worst = (0f64, 0f32);
    for (&x, &y) in xs.iter().zip(ys) {
        let r = reference(x as f64);
        let rf = r as f32;
        if rf.is_nan() {
            assert!(y.is_nan(), "{what}({x:e}) = {y:e}, expected NaN");
            continue;
        }
        if rf.is_infinite() || y.is_infinite() {
            // f32 overflow boundary: allow the neighbouring f32 to overflow (or not).
            if rf != y {
                assert!(
                    (r.abs() - f32::MAX as f64).abs() / (f32::MAX as f64) < 1e-6,
                    "{what}({x:e}) = {y:e}, expected {r:e}"
                );
            }
            continue;
        }
        if r.abs() < f32::MIN_POSITIVE as f64 {
            // Subnormal results: absolute error within `sub_ulps` subnormal ulps.
            assert!((y as f64 - r).abs() <= sub_ulps * 1.4013e-45, "{what}({x:e}) = {y:e}, expected {r:e}");
            continue;
        }
        let rel = ((y as f64 - r) / r).abs();
        if rel > worst.0 {
            worst = (rel, x);
        }
    }
    eprintln!("{what} max rel err {:.3e} at x = {:e}", worst.0, worst.1);
    assert!(worst.0 <= bound, "{what}: max relative error {:.3e} at x = {:e} exceeds {bound:e}", worst.0, worst.1);
}

#[test]
fn exp_sweep() {
    check(UnaryOp::Exp, f64::exp, 1.5e-7);
}

#[test]
fn log_sweep() {
    check(UnaryOp::Log, f64::ln, 2e-7);
}

#[test]
fn tanh_sweep() {
    check(UnaryOp::Tanh, f64::tanh, 2e-7);
}

#[test]
fn sigmoid_sweep() {
    check(UnaryOp::Sigmoid, |x| 1.0 / (1.0 + (-x).exp()), 2.5e-7);
}

#[test]
fn erf_sweep() {
    check(UnaryOp::Erf, libm::erf, 4e-7);
}

/// x·Φ(x) = ½x·erfc(−x/√2) in f64: the exact GELU, accurate in its negative tail.
pub(crate) fn gelu_erf_ref(x: f64) -> f64 {
    0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// x·σ(2u), u = √(2/π)·(x + 0.044715·x³): the tanh GELU without 1 + tanh's cancellation.
pub(crate) fn gelu_tanh_ref(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    x / (1.0 + (-2.0 * k * (x + 0.044715 * x * x * x)).exp())
}

/// Both GELUs relative to themselves over the whole range, the negative tail included (down to
/// where x·Φ(x) underflows): ½x·(1 + erf) alone would be 17% off at x = −5 and 0 below −5.5.
#[test]
fn gelu_sweeps() {
    // (op, reference, relative bound with FMA, without): the erf form's 2e-5 is ½x·(1 + erf)'s
    // just above vmath::GELU_TAIL (its erfc form is within 1e-6 with FMA, 5e-6 without); the tanh
    // form's 2u reaches −87 before the result underflows, and u's f32 rounding (≈ 2⁻²⁴·87) is
    // relative error in e^{2u}.
    type Case = (UnaryOp, fn(f64) -> f64, f64, f64);
    let cases: [Case; 2] = [
        (UnaryOp::Gelu { tanh: false }, gelu_erf_ref, 2e-5, 2e-5),
        (UnaryOp::Gelu { tanh: true }, gelu_tanh_ref, 2e-5, 2e-5),
    ];
    for (op, reference, with_fma, without) in cases {
        for fma in [true, false] {
            let feats = HostFeatures { fma: fma && HostFeatures::detect().fma };
            let xs = sweep();
            let ys = run_unary(op, &xs, feats);
            let bound = if feats.fma { with_fma } else { without };
            // Subnormal results: the same relative error of the last normal intermediate.
            let sub_ulps = 2.0 + bound * f32::MIN_POSITIVE as f64 / 1.4013e-45;
            check_values_sub(&format!("{op:?} fma={}", feats.fma), &xs, &ys, reference, bound, sub_ulps);
        }
    }
}

/// Runs `x op y` elementwise through a generated kernel (vector body and scalar tail).
fn run_binary(op: BinaryOp, xs: &[f32], ys: &[f32], features: HostFeatures) -> Vec<f32> {
    let mut jit = Jit::new(features).unwrap();
    let n = xs.len();
    let f = Fused {
        nodes: vec![Expr::Leaf(0), Expr::Leaf(1), Expr::Binary(op, 0, 1)],
        out_shape: vec![n],
        leaf_shapes: vec![vec![n], vec![n]],
    };
    let lay = elementwise::define(&mut jit, "b", &f).unwrap();
    let (funcs, _mem) = jit.finish().unwrap();
    let mut out = vec![0f32; n];
    let args = [out.as_mut_ptr() as *mut u8, xs.as_ptr() as *mut u8, ys.as_ptr() as *mut u8];
    // SAFETY: the kernel reads n f32 from args[1] and args[2] and writes n f32 to args[0].
    unsafe { (funcs[0].func)(args.as_ptr(), 0, lay.rows() as i64) };
    out
}

/// Issue 11: Pow(−inf, y) was NaN in the JIT. Every pair of a table of special and ordinary
/// values against Rust's `f32::powf` (C99 `powf`): special results (NaN, ±0, ±inf, exact 1)
/// must match exactly, sign of zero and infinity included; finite results within
/// 2⁻²²·(2 + |y·ln|x||) relative, the rounding of y·ln|x| amplified by e^{…} plus the exp/log
/// bounds (see the module header of vmath.rs).
#[test]
fn pow_follows_c_special_cases() {
    let vals = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        1.0,
        -1.0,
        0.5,
        -0.5,
        2.0,
        -2.0,
        3.0,
        -3.0,
        2.5,
        -2.5,
        0.25,
        1e-3,
        -7.0,
        1e30,
        -1e30,
        1e-40,
        -1e-40,
        f32::MAX,
        16777216.0,
        -16777217.0,
        33554432.0,
    ];
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for &x in &vals {
        for &y in &vals {
            xs.push(x);
            ys.push(y);
        }
    }
    xs.push(2.0); // length ≢ 0 (mod 4) so the scalar tail runs too
    ys.push(3.0);
    for fma in [true, false] {
        let feats = HostFeatures { fma: fma && HostFeatures::detect().fma };
        let got = run_binary(BinaryOp::Pow, &xs, &ys, feats);
        for ((&x, &y), &g) in xs.iter().zip(&ys).zip(&got) {
            let want = x.powf(y);
            if want.is_nan() || g.is_nan() {
                assert!(want.is_nan() && g.is_nan(), "pow({x:e}, {y:e}) = {g:e}, want {want:e}");
            } else if want == 0.0 || want.is_infinite() || want == 1.0 || g == 0.0 || g.is_infinite() {
                let r = (x as f64).powf(y as f64);
                // Results that over/underflow in f32 only near the limit may round either way.
                let edge = r.abs() > f32::MAX as f64 * 0.99999 || (r != 0.0 && r.abs() < 1e-44);
                assert!(
                    g.to_bits() == want.to_bits() || edge,
                    "pow({x:e}, {y:e}) = {g:e}, want {want:e} (bit-exact for special results)"
                );
            } else {
                let r = (x as f64).powf(y as f64);
                let scale = (y as f64 * (x.abs() as f64).ln()).abs();
                let tol = 2f64.powi(-22) * (2.0 + scale);
                let rel = ((g as f64 - r) / r).abs();
                let subnormal = r.abs() < f32::MIN_POSITIVE as f64;
                assert!(
                    rel <= tol || (subnormal && (g as f64 - r).abs() <= 2.0 * 1.4013e-45),
                    "pow({x:e}, {y:e}) = {g:e}, want {r:e} (rel {rel:e} > {tol:e})"
                );
            }
        }
    }
}

/// Error of `y` against the exact `r` in units of the f32 ulp at `r` (spacing of f32 near |r|).
fn ulps(y: f32, r: f64) -> f64 {
    let rf = r as f32;
    let ulp =
        if rf == 0.0 { f32::from_bits(1) as f64 } else { (f32::from_bits(rf.abs().to_bits() + 1) - rf.abs()) as f64 };
    (y as f64 - r).abs() / ulp
}

/// Sin, Cos and Tan against f64 over dense sweeps (10⁶ points) of |x| ≤ π and |x| ≤ 1024.
/// Measured (FMA host), where |result| ≥ 1e-3: sin 1.41/2.31 ulp, cos 1.54/2.22 ulp, tan
/// 3.41/4.14 ulp; absolute error ≤ 1.1e-7 (sin, cos) everywhere, including near their zeros.
/// Beyond 2^24 the result is in [−1, 1] but meaningless (tests/elementwise_ops.rs).
#[test]
fn trig_sweeps() {
    let feats = HostFeatures::detect();
    for (limit, count) in [(std::f32::consts::PI, 1_000_003usize), (1024.0, 1_000_003)] {
        let xs: Vec<f32> = (0..count).map(|i| -limit + 2.0 * limit * (i as f32 / (count - 1) as f32)).collect();
        for (op, f, is_tan) in [
            (UnaryOp::Sin, f64::sin as fn(f64) -> f64, false),
            (UnaryOp::Cos, f64::cos, false),
            (UnaryOp::Tan, f64::tan, true),
        ] {
            let ys = run_unary(op, &xs, feats);
            let (mut max_ulp, mut max_abs) = (0f64, 0f64);
            for (&x, &y) in xs.iter().zip(&ys) {
                let r = f(x as f64);
                max_abs = max_abs.max(((y as f64 - r) / if is_tan { r.abs().max(1.0) } else { 1.0 }).abs());
                // ulp error where the result is not near a zero (|r| ≥ 1e-3).
                if r.abs() >= 1e-3 {
                    max_ulp = max_ulp.max(ulps(y, r));
                }
            }
            eprintln!("{op:?} |x| ≤ {limit}: max {max_ulp:.2} ulp (|result| ≥ 1e-3), max abs err {max_abs:.2e}");
            let bound = if is_tan { 6.0 } else { 3.0 };
            assert!(max_ulp <= bound, "{op:?} |x| ≤ {limit}: {max_ulp} ulp");
            assert!(max_abs <= 3e-7, "{op:?} |x| ≤ {limit}: abs {max_abs:e}");
        }
    }
}

/// The inverse and hyperbolic functions and the activations built on log1p, over the general
/// sweep (every 61st·16 f32 pattern plus specials): relative bounds as measured, with margin.
#[test]
fn inverse_and_hyperbolic_sweeps() {
    check(UnaryOp::Atan, f64::atan, 4e-7);
    check(UnaryOp::Asin, f64::asin, 4e-7);
    check(UnaryOp::Acos, f64::acos, 4e-7);
    check(UnaryOp::Sinh, f64::sinh, 6e-7);
    check(UnaryOp::Cosh, f64::cosh, 6e-7);
    check(UnaryOp::Asinh, f64::asinh, 6e-7);
    check(UnaryOp::Acosh, f64::acosh, 6e-7);
    check(UnaryOp::Atanh, f64::atanh, 6e-7);
    check(UnaryOp::Softplus, |x| if x > 0.0 { x + (-x).exp().ln_1p() } else { x.exp().ln_1p() }, 6e-7);
}
