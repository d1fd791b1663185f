//! The hand-written kernels against f64 references (math sweeps, with `math_tests`' bounds) and
//! against the reference interpreter through `compile` (one-op graphs), with the ISA forced to
//! Generic and to AVX2 + FMA, at 1 and 2 threads, on odd row lengths and tails.

use super::{MapOp, MapPre, portable};
use crate::math_tests::{check_values, check_values_sub, sweep};
use crate::{CodegenOptions, Isa, compile};
use kiln_ir::{GraphBuilder, Op, Tensor, UnaryOp, Weights};

/// The ISAs this CPU can run: Generic always, AVX2 + FMA when present.
fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Generic];
    if Isa::detect() >= Isa::Avx2Fma {
        v.push(Isa::Avx2Fma);
    }
    v
}

fn run_map(isa: Isa, op: MapOp, xs: &[f32]) -> Vec<f32> {
    let mut ys = vec![0f32; xs.len()];
    // SAFETY: xs and ys hold xs.len() f32; the AVX2 path only where the CPU has it.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2Fma {
            super::avx2::map(op, xs.as_ptr(), ys.as_mut_ptr(), xs.len());
            return ys;
        }
        portable::map(op, xs.as_ptr(), ys.as_mut_ptr(), xs.len());
    }
    ys
}

/// The same dense sweeps and bounds as the generated functions (`math_tests.rs`): the sweep's
/// length is ≡ 3 mod 8 as well, so the tail path runs.
#[test]
fn transcendental_sweeps_meet_vmath_bounds() {
    let xs = sweep();
    type Case = (MapOp, fn(f64) -> f64, f64);
    let cases: [Case; 4] = [
        (MapOp::Exp, f64::exp, 1.5e-7),
        (MapOp::Tanh, f64::tanh, 2e-7),
        (MapOp::Sigmoid, |x| 1.0 / (1.0 + (-x).exp()), 2.5e-7),
        (MapOp::Erf, libm::erf, 4e-7),
    ];
    for isa in isas() {
        for (op, reference, bound) in cases {
            let ys = run_map(isa, op, &xs);
            check_values(&format!("{op:?} {isa}"), &xs, &ys, reference, bound);
        }
        // The GELUs as in `math_tests::gelu_sweeps`.
        for (op, reference, bound) in [
            (MapOp::GeluErf, crate::math_tests::gelu_erf_ref as fn(f64) -> f64, 2e-5),
            (MapOp::GeluTanh, crate::math_tests::gelu_tanh_ref, 2e-5),
        ] {
            let ys = run_map(isa, op, &xs);
            let sub_ulps = 2.0 + bound * f32::MIN_POSITIVE as f64 / 1.4013e-45;
            check_values_sub(&format!("{op:?} {isa}"), &xs, &ys, reference, bound, sub_ulps);
        }
    }
}

/// Deterministic values in [−1, 1).
pub(crate) fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// One op on input "x" (plus weights), compiled at each ISA and thread count and compared with
/// the interpreter by `close(got, want)`; returns nothing, panics naming the case.
fn check_graph(op: Op, x: Tensor, weights: &[(&str, Tensor)], close: &dyn Fn(f32, f32) -> bool) {
    let mut gb = GraphBuilder::new("t");
    gb.input("x", "x", x.ty());
    let mut w = Weights::new();
    let mut inputs = vec!["x".to_string()];
    for (name, t) in weights {
        gb.weight(*name, *name, t.ty());
        w.insert(name.to_string(), t.clone());
        inputs.push(name.to_string());
    }
    let what = format!("{op:?} on {:?}", x.shape());
    gb.node("n", "n", Ok(op), inputs, vec!["y".into()]);
    gb.output("o", "y");
    let graph = gb.finish().unwrap();
    let want = kiln_ir::eval::run(&graph, &w, &[("x".to_string(), x.clone())]).unwrap().remove(0).1;
    let want = want.as_f32().unwrap();
    for isa in isas() {
        for threads in [1, 2] {
            let exe = compile(&graph, &w, &CodegenOptions { threads, isa, ..Default::default() }).unwrap();
            assert_eq!(exe.isa(), isa);
            let got = exe.run(&[&x]).unwrap().remove(0);
            let got = got.as_f32().unwrap();
            assert_eq!(got.len(), want.len());
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                assert!(close(g, w), "{what} {isa} {threads}t [{i}]: got {g:e}, want {w:e}");
            }
        }
    }
}

/// Row lengths of the brief (odd, around the 8- and 32-wide steps, a 4097 tail) and one past the
/// stored-softmax limit (the blocked two-pass path); enough rows that 2 threads split the work.
const LENS: [usize; 8] = [1, 3, 7, 8, 9, 31, 4097, super::kernels::STORED_SOFTMAX_MAX + 2051];

fn rows_for(n: usize) -> usize {
    (40_000 / n).max(2) + 3
}

/// Each output within 3e-7·|y| + 1e-9 of the reference: one exp (1.5e-7), a sum in f32 blocks
/// added in f64, and a rounded reciprocal. Each row sums to 1 within 1e-6.
#[test]
fn softmax_matches_interpreter() {
    let close = |g: f32, w: f32| (g as f64 - w as f64).abs() <= 3e-7 * (w as f64).abs() + 1e-9;
    for n in LENS {
        let rows = rows_for(n);
        let mut v: Vec<f32> = data(rows * n, n as u64).iter().map(|x| x * 30.0).collect();
        // A row with −∞ (masked) entries and one with a large common offset.
        if n > 1 {
            v[..n / 2].fill(f32::NEG_INFINITY);
        }
        v[n..2 * n].iter_mut().for_each(|x| *x += 1e4);
        let x = Tensor::from_f32([rows, n], v).unwrap();
        check_graph(Op::Softmax { axis: -1 }, x.clone(), &[], &close);
        // Row sums, at the best ISA.
        let (graph, w) = one_op(Op::Softmax { axis: -1 }, &x);
        let exe = compile(&graph, &w, &CodegenOptions::default()).unwrap();
        let y = exe.run(&[&x]).unwrap().remove(0);
        for (r, row) in y.as_f32().unwrap().chunks(n).enumerate() {
            let s: f64 = row.iter().map(|&v| v as f64).sum();
            assert!((s - 1.0).abs() <= 1e-6, "softmax n={n} row {r} sums to {s}");
        }
    }
}

fn one_op(op: Op, x: &Tensor) -> (kiln_ir::Graph, Weights) {
    let mut gb = GraphBuilder::new("t");
    gb.input("x", "x", x.ty());
    gb.node("n", "n", Ok(op), vec!["x".into()], vec!["y".into()]);
    gb.output("o", "y");
    (gb.finish().unwrap(), Weights::new())
}

/// A NaN anywhere in a row makes the whole row NaN, as in the reference; a row of all −∞ is NaN
/// too (e^{−∞−(−∞)}), as in the reference and the generated kernels.
#[test]
fn softmax_special_rows() {
    for n in [5, 9, super::kernels::STORED_SOFTMAX_MAX + 9] {
        let mut v = data(3 * n, 7);
        v[1] = f32::NAN;
        v[n..2 * n].fill(f32::NEG_INFINITY);
        let x = Tensor::from_f32([3, n], v).unwrap();
        let same = |g: f32, w: f32| (g.is_nan() && w.is_nan()) || (g - w).abs() <= 3e-7 * w.abs() + 1e-9;
        check_graph(Op::Softmax { axis: -1 }, x.clone(), &[], &same);
        check_graph(Op::LogSoftmax { axis: -1 }, x, &[], &|g, w| {
            (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-6 * (1.0 + w.abs())
        });
    }
}

/// x − (max + ln Σ) with |x| ≤ 20: the f32 shift carries half an ulp of 20 (9.5e-7) and the
/// subtraction cancels, so the error is absolute at that scale: 3e-6 + 1e-6·|y|.
#[test]
fn log_softmax_matches_interpreter() {
    let close = |g: f32, w: f32| (g as f64 - w as f64).abs() <= 3e-6 + 1e-6 * (w as f64).abs();
    for n in LENS {
        let rows = rows_for(n);
        let v: Vec<f32> = data(rows * n, 3 + n as u64).iter().map(|x| x * 20.0).collect();
        check_graph(Op::LogSoftmax { axis: -1 }, Tensor::from_f32([rows, n], v).unwrap(), &[], &close);
    }
}

/// A non-innermost axis goes through the transposes around the row kernel.
#[test]
fn softmax_inner_axis() {
    let x = Tensor::from_f32([3, 37, 5], data(3 * 37 * 5, 11)).unwrap();
    let close = |g: f32, w: f32| (g - w).abs() <= 3e-7 * w.abs() + 1e-9;
    check_graph(Op::Softmax { axis: 1 }, x.clone(), &[], &close);
    check_graph(Op::LogSoftmax { axis: 0 }, x, &[], &|g, w| (g - w).abs() <= 1e-6 * (1.0 + w.abs()));
}

/// LayerNorm and RMSNorm: a few f32 roundings of terms up to |y|, so 2e-6·(1 + |y|); the rows
/// with a common offset of 1e3 (σ ≈ 0.6) check the hi/lo centring (without it the error is at
/// the scale of 1e3·2⁻²⁴/σ ≈ 1e-4).
#[test]
fn norms_match_interpreter() {
    let close = |g: f32, w: f32| (g as f64 - w as f64).abs() <= 2e-6 * (1.0 + (w as f64).abs());
    for n in LENS {
        let rows = rows_for(n);
        let mut v = data(rows * n, 5 + n as u64);
        v[..n].iter_mut().for_each(|x| *x += 1e3);
        let x = Tensor::from_f32([rows, n], v).unwrap();
        let g = Tensor::from_f32([n], data(n, 1).iter().map(|v| 1.0 + v).collect()).unwrap();
        let b = Tensor::from_f32([n], data(n, 2)).unwrap();
        let ln = Op::LayerNormalization { axis: -1, epsilon: 1e-5 };
        check_graph(ln.clone(), x.clone(), &[("g", g.clone()), ("b", b)], &close);
        check_graph(ln, x.clone(), &[("g", g.clone())], &close);
        check_graph(Op::RmsNormalization { axis: -1, epsilon: 1e-5 }, x, &[("g", g)], &close);
    }
}

/// CRMSNorm: the same error sources as RMSNorm (f32 terms summed in f64, one scale, one product),
/// so the same 2e-6·(1 + |y|). The rows are the stored d − 1 components of random vectors (their
/// sum is then the negated missing one, as large as any); the first row's offset of 1e2 makes
/// (Σx′)² dominate Σx′².
#[test]
fn crms_norm_matches_interpreter() {
    let close = |g: f32, w: f32| (g as f64 - w as f64).abs() <= 2e-6 * (1.0 + (w as f64).abs());
    for n in LENS {
        let rows = rows_for(n);
        let mut v = data(rows * n, 7 + n as u64);
        v[..n].iter_mut().for_each(|x| *x += 1e2);
        let x = Tensor::from_f32([rows, n], v).unwrap();
        check_graph(Op::CrmsNormalization { epsilon: 1e-5, d: n + 1 }, x, &[], &close);
    }
}

/// The standalone transcendental ops (not fused with anything): odd lengths around the 8- and
/// 16-wide steps and the 8192-element work units. Exp, Tanh, Sigmoid, Erf: the sweep bounds
/// plus the reference's own rounding (3e-7 relative). Silu and the GELUs are relative too, their
/// negative tails included (no 1 + erf or 1 + tanh to cancel): 2e-5, the tanh GELU's sweep bound
/// (its 2u reaches −87 in f32 at |x| < 12).
#[test]
fn map_ops_match_interpreter() {
    let tight = |g: f32, w: f32| (g as f64 - w as f64).abs() <= 3e-7 * (w as f64).abs() + 1e-30;
    let loose = |g: f32, w: f32| (g as f64 - w as f64).abs() <= 2e-5 * (w as f64).abs() + 1e-30;
    let ops: [(UnaryOp, bool); 7] = [
        (UnaryOp::Exp, true),
        (UnaryOp::Tanh, true),
        (UnaryOp::Sigmoid, true),
        (UnaryOp::Erf, true),
        (UnaryOp::Silu, false),
        (UnaryOp::Gelu { tanh: false }, false),
        (UnaryOp::Gelu { tanh: true }, false),
    ];
    for len in [1usize, 3, 7, 8, 9, 17, 31, 4097, 8192 * 5 + 13] {
        let v: Vec<f32> = data(len, len as u64).iter().map(|x| x * 12.0).collect();
        let x = Tensor::from_f32([len], v).unwrap();
        for (u, is_tight) in ops {
            let close: &dyn Fn(f32, f32) -> bool = if is_tight { &tight } else { &loose };
            check_graph(Op::Unary(u), x.clone(), &[], close);
        }
    }
}

/// The lowering picks the host kernels: one step each, described with the ISA.
#[test]
fn schedule_names_the_host_kernels() {
    let x = Tensor::from_f32([4, 9], data(36, 1)).unwrap();
    for (op, what) in [(Op::Softmax { axis: -1 }, "Softmax rows of 9"), (Op::Unary(UnaryOp::Exp), "Exp over 36")] {
        let (graph, w) = one_op(op, &x);
        let exe = compile(&graph, &w, &CodegenOptions { isa: Isa::Generic, ..Default::default() }).unwrap();
        let s = exe.schedule_text();
        assert!(s.contains(what) && s.contains("generic"), "{s}");
    }
}

/// Generated code passes a `MapOp` to the host entry as its code: every op round-trips, and an
/// unknown code is no op (the entry does nothing rather than panic into generated code).
#[test]
fn map_op_codes_round_trip() {
    for op in MapOp::ALL {
        assert_eq!(MapOp::from_code(op.code()), Some(op));
    }
    assert_eq!(MapOp::from_code(MapOp::ALL.len() as u32), None);
}

fn run_map_pre(isa: Isa, op: MapOp, pre: MapPre, xs: &[f32]) -> Vec<f32> {
    let mut ys = vec![0f32; xs.len()];
    // SAFETY: xs and ys hold xs.len() f32; the AVX2 path only where the CPU has it.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2Fma {
            super::avx2::map_pre(op, pre, xs.as_ptr(), ys.as_mut_ptr(), xs.len());
            return ys;
        }
        portable::map_pre(op, pre, xs.as_ptr(), ys.as_mut_ptr(), xs.len());
    }
    ys
}

/// `map_pre` is `map` over `MapPre::apply`'s values: lengths 0–3, across the 8-lane tail and the
/// 256-float chunk, NaN/±inf/±0 inputs, each stage alone and together, and in place (y = x).
/// Both sides run the same map kernel on the same staged values, so they agree to the kernels'
/// own bound (2e-5 relative: the bundled and single-vector paths of an op may round differently).
#[test]
fn map_pre_is_map_of_the_staged_input() {
    let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 5.0, -5.0, 1e-30];
    let pres = [
        MapPre { scale: 0.25, shift: -0.0, lo: -5.0, hi: 5.0 },
        MapPre { scale: 1.0, shift: 0.75, lo: f32::NEG_INFINITY, hi: f32::INFINITY },
        MapPre { scale: -3.0, shift: 1.5, lo: -2.0, hi: f32::INFINITY },
        MapPre { scale: 1.0, shift: -0.0, lo: f32::NEG_INFINITY, hi: 0.0 },
    ];
    let close = |g: f32, w: f32| {
        (g.is_nan() && w.is_nan()) || g == w || (g as f64 - w as f64).abs() <= 2e-5 * (w as f64).abs() + 1e-30
    };
    for len in [0usize, 1, 2, 3, 7, 8, 9, 255, 256, 257, 600] {
        let mut xs: Vec<f32> = data(len, len as u64 + 5).iter().map(|x| x * 20.0).collect();
        for (x, s) in xs.iter_mut().zip(specials) {
            *x = s;
        }
        for isa in isas() {
            for op in MapOp::ALL {
                for pre in pres {
                    let staged: Vec<f32> = xs.iter().map(|&x| pre.apply(x)).collect();
                    let want = run_map(isa, op, &staged);
                    let got = run_map_pre(isa, op, pre, &xs);
                    // In place: the chunk is read whole before its outputs are written.
                    let mut inplace = xs.clone();
                    // SAFETY: `inplace` holds len f32, read and written at the same positions.
                    unsafe {
                        let p = inplace.as_mut_ptr();
                        #[cfg(target_arch = "x86_64")]
                        if isa >= Isa::Avx2Fma {
                            super::avx2::map_pre(op, pre, p, p, len);
                        } else {
                            portable::map_pre(op, pre, p, p, len);
                        }
                        #[cfg(not(target_arch = "x86_64"))]
                        portable::map_pre(op, pre, p, p, len);
                    }
                    for i in 0..len {
                        let what = format!("{op:?} {pre:?} {isa:?} len {len} [{i}] x {}", xs[i]);
                        assert!(close(got[i], want[i]), "{what}: got {}, want {}", got[i], want[i]);
                        assert!(close(inplace[i], want[i]), "{what} in place: got {}, want {}", inplace[i], want[i]);
                    }
                }
            }
        }
    }
}

/// The stage's rules: Mul, Add, then the Clip's compare-and-select (NaN and −0 kept), and the
/// identity changes no value (−0 included) and is recognised bitwise.
#[test]
fn map_pre_stage_rules() {
    let id = MapPre::IDENTITY;
    assert!(id.is_identity());
    for x in [0.0f32, -0.0, 1.5, -7.0, f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE] {
        assert_eq!(id.apply(x).to_bits(), x.to_bits(), "{x}");
    }
    assert!(id.apply(f32::NAN).is_nan());
    let clamp = MapPre { scale: 0.25, lo: -5.0, hi: 5.0, ..id };
    assert!(!clamp.is_identity());
    assert!(!MapPre { shift: 0.0, ..id }.is_identity(), "+0 is not the identity shift");
    assert_eq!(clamp.apply(40.0), 5.0);
    assert_eq!(clamp.apply(-40.0), -5.0);
    assert_eq!(clamp.apply(f32::NEG_INFINITY), -5.0);
    assert_eq!(clamp.apply(-0.0).to_bits(), (-0.0f32).to_bits());
    assert!(clamp.apply(f32::NAN).is_nan());
    assert_eq!(MapPre { scale: 3.0, shift: -1.0, ..id }.apply(2.0), 5.0);
}
