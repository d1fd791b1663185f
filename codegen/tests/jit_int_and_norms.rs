//! Differential tests for the lowerings that completed the JIT's op coverage, against the
//! reference interpreter over random shapes (sizes not a multiple of 4, size-1 and broadcast
//! dims, scalars): i64 Binary ops and Where on i64, i64 ReduceSum/ReduceMax, RegionNorm,
//! LayerNorm/RMSNorm with broadcast scale and bias, and 1-D convolution in the IR's 2-D form. Plus the run-time evaluation errors these ops
//! can raise, which the JIT must raise too (not compute garbage).
//!
//! Tolerances:
//! - i64 and bool results: exact (integer arithmetic; `assert_close` compares them with `==`).
//! - RegionNorm: exact. The kernel performs the reference's f64 operations (IEEE add, sub, mul,
//!   div, sqrt — correctly rounded, and Cranelift never contracts them into FMAs) in the
//!   reference's order and rounds to f32 once, so the results are bit-identical (checked over
//!   400 random cases as well as the default 24).
//! - Broadcast LayerNorm/RMSNorm: as `layer_and_rms_norm` in jit_vs_interp.rs (the same row
//!   kernel; f32 statistics err by ≈ 2⁻²⁴·max|x| in x − μ, amplified by 1/σ).

mod common;

use common::*;
use kiln_codegen::compile;
use kiln_ir::{BinaryOp, Op, ReduceKind, Tensor};
use proptest::prelude::*;

fn cfg() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..7, 0..4)
}

/// A shape that broadcasts to `s`: some trailing dims kept, some set to 1.
fn broadcast_of(s: &[usize], rng: &mut XRng) -> Vec<usize> {
    let keep = (rng.next() % (s.len() as u64 + 1)) as usize;
    s[s.len() - keep..].iter().map(|&d| if rng.next().is_multiple_of(3) { 1 } else { d }).collect()
}

/// i64 values: mostly small (so comparisons have ties), some near the ends of the range (so
/// Add/Sub/Mul wrap).
fn ints(rng: &mut XRng, shape: &[usize], lo: i64, hi: i64, extremes: bool) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            let r = rng.next();
            if extremes && r.is_multiple_of(7) {
                [i64::MAX, i64::MIN, i64::MAX - 3, i64::MIN + 1][(r >> 8) as usize % 4]
            } else {
                lo + ((r >> 16) % (hi - lo + 1) as u64) as i64
            }
        })
        .collect();
    Tensor::from_i64(shape.to_vec(), v).unwrap()
}

fn bools(rng: &mut XRng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_bool(shape.to_vec(), (0..n).map(|_| rng.next().is_multiple_of(2)).collect()).unwrap()
}

const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };

proptest! {
    #![proptest_config(cfg())]

    /// Every Binary op on i64 with numpy broadcasting either way round.
    #[test]
    fn i64_binary_ops_broadcast(s in shape(), seed in any::<u64>(), swap in any::<bool>()) {
        let mut rng = XRng(seed | 1);
        let t = broadcast_of(&s, &mut rng);
        let (sa, sb) = if swap { (t.clone(), s.clone()) } else { (s.clone(), t.clone()) };
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow, BinaryOp::Max,
                   BinaryOp::Min, BinaryOp::Equal, BinaryOp::Less] {
            let (a, b) = match op {
                // Divisors never 0 (an error, tested below); −1 and MIN operands included.
                BinaryOp::Div => {
                    let b = ints(&mut rng, &sb, 1, 9, false);
                    let signs: Vec<i64> = b.as_i64().unwrap().iter().map(|&v| if rng.next().is_multiple_of(2) { v } else { -v }).collect();
                    (ints(&mut rng, &sa, -50, 50, true), Tensor::from_i64(sb.clone(), signs).unwrap())
                }
                // Exponents 0..=70 wrap for |base| ≥ 2.
                BinaryOp::Pow => (ints(&mut rng, &sa, -5, 5, false), ints(&mut rng, &sb, 0, 70, false)),
                _ => (ints(&mut rng, &sa, -4, 4, true), ints(&mut rng, &sb, -4, 4, true)),
            };
            let mut spec = Spec::new();
            spec.input("a", a).input("b", b).node("op", Op::Binary(op), &["a", "b"], &["y"]).output("y");
            check(&spec, EXACT);
        }
    }

    /// Where(bool, i64, i64), all three broadcast, with the i64 result feeding an i64 Add.
    #[test]
    fn i64_where_broadcast(s in shape(), seed in any::<u64>()) {
        let mut rng = XRng(seed | 1);
        let (sc, sx, sy) = (broadcast_of(&s, &mut rng), broadcast_of(&s, &mut rng), s.clone());
        let mut spec = Spec::new();
        spec.input("c", bools(&mut rng, &sc))
            .input("x", ints(&mut rng, &sx, -9, 9, true))
            .weight("y", ints(&mut rng, &sy, -9, 9, false))
            .node("w", Op::Where, &["c", "x", "y"], &["w"])
            .node("add", Op::Binary(BinaryOp::Add), &["w", "y"], &["z"])
            .output("w").output("z");
        check(&spec, EXACT);
    }

    /// ReduceSum and ReduceMax over i64 on any subset of axes, with and without keepdims, and
    /// the no-op form (empty axes with noop_with_empty_axes).
    #[test]
    fn i64_reductions(s in prop::collection::vec(1usize..7, 0..5), seed in any::<u64>(), keepdims in any::<bool>(),
                      pick in prop::collection::vec(any::<bool>(), 5), noop in any::<bool>()) {
        let mut rng = XRng(seed | 1);
        let axes: Vec<i64> = (0..s.len()).filter(|&a| pick[a]).map(|a| a as i64).collect();
        // Empty axes: all axes reduced, or (noop) none.
        let x = ints(&mut rng, &s, -1000, 1000, false);
        for kind in [ReduceKind::Sum, ReduceKind::Max] {
            let mut spec = Spec::new();
            spec.input("x", x.clone())
                .node("r", Op::Reduce { kind, axes: Some(axes.clone()), keepdims, noop_with_empty_axes: noop }, &["x"], &["y"])
                .output("y");
            check(&spec, EXACT);
        }
    }

    /// RegionNorm over random NCHW shapes and masks, including channels whose image has an empty
    /// foreground or background (mask all 0 or all 1).
    #[test]
    fn region_norm(n in 1usize..3, c in 1usize..6, h in 1usize..6, w in 1usize..7, seed in any::<u64>(),
                   fill in 0u8..4) {
        let mut rng = XRng(seed | 1);
        let hw = h * w;
        let mask: Vec<f32> = (0..n * hw)
            .map(|_| match fill {
                0 => 0.0,
                1 => 1.0,
                _ => (rng.next() % 2) as f32,
            })
            .collect();
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&[n, c, h, w], -3.0, 3.0))
            .input("mask", Tensor::from_f32([n, 1, h, w], mask).unwrap())
            .weight("gf", rng.tensor(&[c], -0.5, 0.5))
            .weight("bf", rng.tensor(&[c], -1.0, 1.0))
            .weight("gb", rng.tensor(&[c], -0.5, 0.5))
            .weight("bb", rng.tensor(&[c], -1.0, 1.0))
            .node("rn", Op::RegionNorm { epsilon: 1e-5 }, &["x", "mask", "gf", "bf", "gb", "bb"], &["y"])
            .output("y");
        check(&spec, EXACT);
    }

    /// 1-D convolution as the IR expresses it (its Conv is 2-D): [N,C,L] unsqueezed to
    /// [N,C,1,L], a [M,C/g,1,k] kernel, squeezed back — the Unsqueeze/Squeeze are free views on the
    /// JIT, so the 2-D path runs it with H = kH = 1. Tolerance as `conv_pad_resize`: GEMM sums of
    /// C/g·k products of values in [−1, 1], f32-accumulated in a different order.
    #[test]
    fn conv_1d_through_the_2d_path(n in 1usize..3, cg in 1usize..4, group in 1usize..3, mg in 1usize..3,
                                   l in 1usize..13, k in 1usize..4, s in 1usize..3, d in 1usize..3, p in 0usize..3,
                                   seed in any::<u64>(), threads in 1usize..3) {
        prop_assume!(l + 2 * p > d * (k - 1));
        let mut rng = XRng(seed | 1);
        let (c, m) = (cg * group, mg * group);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&[n, c, l], -1.0, 1.0))
            .weight("w", rng.tensor(&[m, cg, 1, k], -1.0, 1.0))
            .weight("b", rng.tensor(&[m], -1.0, 1.0))
            .node("up", Op::Unsqueeze { axes: vec![2] }, &["x"], &["x4"])
            .node("conv", Op::Conv { strides: [1, s], dilations: [1, d], pads: [0, p, 0, p], group }, &["x4", "w", "b"], &["y4"])
            .node("down", Op::Squeeze { axes: Some(vec![2]) }, &["y4"], &["y"])
            .output("y");
        let tol = Tol { abs: 1e-5 * (cg * k) as f32, rel: 1e-5 };
        check_with(&spec, tol, &options(threads));
    }

    /// LayerNorm/RMSNorm whose scale and bias broadcast to the normalized shape (size-1 dims,
    /// fewer dims) rather than matching it; the parameters are graph inputs in half the cases.
    #[test]
    fn norms_with_broadcast_parameters(s in prop::collection::vec(1usize..12, 1..4), seed in any::<u64>(),
                                       axis_back in 1usize..4, as_inputs in any::<bool>()) {
        let mut rng = XRng(seed | 1);
        let axis = -(axis_back.min(s.len()) as i64);
        let a = (s.len() as i64 + axis) as usize;
        let ps = s[a..].to_vec();
        let (gs, bs) = (broadcast_of(&ps, &mut rng), broadcast_of(&ps, &mut rng));
        let x = rng.tensor(&s, -4.0, 4.0);
        let row: usize = ps.iter().product();
        let sigma_min = x.as_f32().unwrap().chunks(row).map(|r| {
            let mu = r.iter().map(|&v| v as f64).sum::<f64>() / row as f64;
            (r.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / row as f64 + 1e-5).sqrt()
        }).fold(f64::INFINITY, f64::min);
        let tol = Tol { abs: 1e-4 + (8.0 * 4.0 * 2.0 / 16_777_216.0 / sigma_min) as f32, rel: 1e-4 };
        let (g, b) = (rng.tensor(&gs, 0.5, 2.0), rng.tensor(&bs, -1.0, 1.0));
        let mut spec = Spec::new();
        spec.input("x", x);
        if as_inputs {
            spec.input("g", g).input("b", b);
        } else {
            spec.weight("g", g).weight("b", b);
        }
        spec.node("ln", Op::LayerNormalization { axis, epsilon: 1e-5 }, &["x", "g", "b"], &["y"])
            .node("rms", Op::RmsNormalization { axis, epsilon: 1e-6 }, &["x", "g"], &["z"])
            .output("y").output("z");
        check(&spec, tol);
    }
}

/// Runs a spec on both backends and returns their errors (both must fail).
fn both_fail(spec: &Spec) -> (String, String) {
    let (g, w) = spec.build();
    let Err(want) = kiln_ir::eval::run(&g, &w, &spec.inputs) else { panic!("the interpreter must fail") };
    let exe = compile(&g, &w, &options(2)).unwrap_or_else(|e| panic!("compile failed: {e}"));
    let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
    let Err(got) = exe.run(&ins) else { panic!("the JIT must fail") };
    (got.to_string(), want.to_string())
}

#[test]
fn i64_evaluation_errors_are_raised() {
    let i = |v: &[i64]| Tensor::from_i64([v.len()], v.to_vec()).unwrap();
    // Division by zero (one zero among ordinary divisors), and the wrapping MIN / −1 that is not
    // an error.
    let mut spec = Spec::new();
    spec.input("a", i(&[7, 8, 9])).input("b", i(&[2, 0, 3])).node(
        "div",
        Op::Binary(BinaryOp::Div),
        &["a", "b"],
        &["y"],
    );
    spec.output("y");
    let (got, want) = both_fail(&spec);
    assert!(got.contains("integer division by zero") && got.contains("div"), "{got} (interpreter: {want})");
    let mut spec = Spec::new();
    spec.input("a", i(&[i64::MIN, -7, 7])).input("b", i(&[-1, 2, -2]));
    spec.node("div", Op::Binary(BinaryOp::Div), &["a", "b"], &["y"]).output("y");
    check(&spec, EXACT);
    // A negative exponent.
    let mut spec = Spec::new();
    spec.input("a", i(&[2, 3])).input("b", i(&[1, -1])).node("pow", Op::Binary(BinaryOp::Pow), &["a", "b"], &["y"]);
    spec.output("y");
    let (got, want) = both_fail(&spec);
    assert!(got.contains("negative exponent"), "{got} (interpreter: {want})");
    // ReduceSum overflow follows the reference's order: MAX + 1 overflows before − 1 comes in,
    // while MAX − 1 + 1 does not.
    let sum = Op::Reduce { kind: ReduceKind::Sum, axes: None, keepdims: false, noop_with_empty_axes: false };
    let mut spec = Spec::new();
    spec.input("x", i(&[i64::MAX, 1, -1])).node("sum", sum.clone(), &["x"], &["y"]).output("y");
    let (got, want) = both_fail(&spec);
    assert!(got.contains("overflows i64"), "{got} (interpreter: {want})");
    let mut spec = Spec::new();
    spec.input("x", i(&[i64::MAX, -1, 1])).node("sum", sum, &["x"], &["y"]).output("y");
    check(&spec, EXACT);
}

#[test]
fn region_norm_rejects_a_mask_that_is_not_zero_or_one() {
    let mut rng = XRng(5);
    for bad in [0.5, f32::NAN] {
        let mut mask = vec![1.0f32; 9];
        mask[4] = bad;
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&[1, 4, 3, 3], -1.0, 1.0))
            .input("mask", Tensor::from_f32([1, 1, 3, 3], mask).unwrap())
            .weight("g1", rng.tensor(&[4], 0.5, 1.5))
            .weight("b1", rng.tensor(&[4], -1.0, 1.0))
            .weight("g2", rng.tensor(&[4], 0.5, 1.5))
            .weight("b2", rng.tensor(&[4], -1.0, 1.0))
            .node("rn", Op::RegionNorm { epsilon: 1e-5 }, &["x", "mask", "g1", "b1", "g2", "b2"], &["y"])
            .output("y");
        let (got, want) = both_fail(&spec);
        assert!(got.contains("rn") && got.contains("mask must be 0 or 1"), "{got} (interpreter: {want})");
    }
}

/// The error cell is cleared before every run: a failing run does not poison the next one.
#[test]
fn a_failed_run_does_not_poison_the_next() {
    let mut spec = Spec::new();
    spec.input("a", Tensor::from_i64([2], vec![6, 8]).unwrap())
        .input("b", Tensor::from_i64([2], vec![2, 4]).unwrap())
        .node("div", Op::Binary(BinaryOp::Div), &["a", "b"], &["y"])
        .output("y");
    let exe = compile_spec(&spec, &options(1));
    let a = Tensor::from_i64([2], vec![6, 8]).unwrap();
    let zero = Tensor::from_i64([2], vec![0, 4]).unwrap();
    let good = Tensor::from_i64([2], vec![2, 4]).unwrap();
    assert!(exe.run(&[&a, &zero]).is_err());
    let y = exe.run(&[&a, &good]).expect("a good run after a failed one");
    assert_eq!(y[0].as_i64().unwrap(), &[3, 2]);
}

/// Data movement on i64 and bool values: constant Pad fills with the pad value in the tensor's
/// own type (i64: truncated, bool: value ≠ 0), the other modes and copies carry the values.
#[test]
fn pad_and_copies_on_i64_and_bool() {
    use kiln_ir::PadMode;
    let mut rng = XRng(9);
    let shape = [2, 3, 5];
    for (mode, value) in [
        (PadMode::Constant, 2.7),
        (PadMode::Constant, 0.0),
        (PadMode::Constant, -0.5),
        (PadMode::Edge, 0.0),
        (PadMode::Reflect, 0.0),
    ] {
        let pads = vec![0, 1, 2, 1, 0, -1];
        let mut spec = Spec::new();
        spec.input("i", ints(&mut rng, &shape, -9, 9, true))
            .input("b", bools(&mut rng, &shape))
            .node("pi", Op::Pad { mode, pads: pads.clone(), value }, &["i"], &["pi"])
            .node("pb", Op::Pad { mode, pads, value }, &["b"], &["pb"])
            .node("bf", Op::Cast { to: kiln_ir::DType::F32 }, &["pb"], &["bf"])
            .node("tr", Op::Transpose { perm: Some(vec![2, 0, 1]) }, &["i"], &["tr"])
            .output("pi")
            .output("pb")
            .output("bf")
            .output("tr");
        check(&spec, EXACT);
    }
}

/// Big enough (≥ 2¹⁵ elements) that the executor splits the checked kernels across two threads:
/// results match, and an error found only by the second chunk still fails the run.
#[test]
fn checked_kernels_split_across_threads() {
    let opts = options(2);
    let mut rng = XRng(21);
    let (rows, cols) = (300, 131);
    let a = ints(&mut rng, &[rows, cols], -1000, 1000, true);
    let b = ints(&mut rng, &[cols], 1, 7, false);
    let mut spec = Spec::new();
    spec.input("a", a.clone()).input("b", b).node("div", Op::Binary(BinaryOp::Div), &["a", "b"], &["y"]).output("y");
    check_with(&spec, EXACT, &opts);
    // Full-size divisors, the only zero in the last row (the second chunk's).
    let d = ints(&mut rng, &[rows, cols], 1, 7, false);
    let mut spec = Spec::new();
    spec.input("a", a.clone()).input("d", d).node("div", Op::Binary(BinaryOp::Div), &["a", "d"], &["y"]).output("y");
    let exe = check_with(&spec, EXACT, &opts);
    assert!(exe.schedule_text().contains("checked kernel"), "{}", exe.schedule_text());
    let mut zero_late = vec![3i64; rows * cols];
    zero_late[rows * cols - 1] = 0;
    let zero_late = Tensor::from_i64([rows, cols], zero_late).unwrap();
    assert!(exe.run(&[&a, &zero_late]).is_err(), "a zero divisor in the last row must fail");

    let (n, c, h, w) = (2, 8, 48, 50);
    let mut mask: Vec<f32> = (0..n * h * w).map(|_| (rng.next() % 2) as f32).collect();
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[n, c, h, w], -3.0, 3.0))
        .input("mask", Tensor::from_f32([n, 1, h, w], mask.clone()).unwrap())
        .weight("gf", rng.tensor(&[c], -0.5, 0.5))
        .weight("bf", rng.tensor(&[c], -1.0, 1.0))
        .weight("gb", rng.tensor(&[c], -0.5, 0.5))
        .weight("bb", rng.tensor(&[c], -1.0, 1.0))
        .node("rn", Op::RegionNorm { epsilon: 1e-5 }, &["x", "mask", "gf", "bf", "gb", "bb"], &["y"])
        .output("y");
    let exe = check_with(&spec, EXACT, &opts);
    *mask.last_mut().unwrap() = 2.0;
    let x = rng.tensor(&[n, c, h, w], -3.0, 3.0);
    let bad = Tensor::from_f32([n, 1, h, w], mask).unwrap();
    assert!(exe.run(&[&x, &bad]).is_err(), "a bad mask value must fail on every chunk");
}
