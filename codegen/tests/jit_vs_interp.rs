//! Differential tests: every op the JIT claims, and fused patterns, against the reference
//! interpreter over random shapes (sizes not a multiple of 4, size-1 and broadcast dims) and
//! random values. Plus concurrency, thread determinism and the memory plan. The i64 ops,
//! RegionNorm and broadcast norm parameters are in jit_int_and_norms.rs.
//!
//! Tolerances: the generated transcendental functions are within 4e-7 relative of f64
//! (math_tests.rs); composed ops (Gelu, Silu, Selu, Pow) and f32-accumulated reductions get
//! 1e-5 relative plus a small absolute term for results near zero, where cancellation in
//! 1 + erf, eˣ − 1 or a long sum makes relative error meaningless.

mod common;

use common::*;
use kiln_codegen::{CodegenOptions, SoftmaxAlgo};
use kiln_ir::{BinaryOp, DType, Op, ReduceKind, Tensor, UnaryOp};
use proptest::prelude::*;

const ELEMENTWISE: Tol = Tol { abs: 1e-6, rel: 2e-6 };
const COMPOSED: Tol = Tol { abs: 5e-6, rel: 1e-5 };
const REDUCTION: Tol = Tol { abs: 1e-5, rel: 1e-5 };

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..7, 0..4)
}

/// A shape that broadcasts to `s`: some trailing dims kept, some set to 1.
fn broadcast_of(s: &[usize], rng: &mut XRng) -> Vec<usize> {
    let keep = (rng.next() % (s.len() as u64 + 1)) as usize;
    s[s.len() - keep..].iter().map(|&d| if rng.next().is_multiple_of(3) { 1 } else { d }).collect()
}

fn cfg() -> ProptestConfig {
    // PROPTEST_CASES raises the count for a longer local soak.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

const UNARY: &[UnaryOp] = &[
    UnaryOp::Sqrt,
    UnaryOp::Reciprocal,
    UnaryOp::Neg,
    UnaryOp::Abs,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Tanh,
    UnaryOp::Erf,
    UnaryOp::Sigmoid,
    UnaryOp::Relu,
    UnaryOp::Silu,
    UnaryOp::LeakyRelu { alpha: 0.1 },
    UnaryOp::Selu { alpha: 1.673_263_2, gamma: 1.050_701 },
    UnaryOp::Gelu { tanh: false },
    UnaryOp::Gelu { tanh: true },
    UnaryOp::Clip { min: Some(-0.5), max: Some(1.5) },
    UnaryOp::Clip { min: None, max: Some(0.25) },
];

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn unary_ops(s in shape(), seed in any::<u64>()) {
        let mut rng = XRng(seed | 1);
        for &op in UNARY {
            let (lo, hi) = match op {
                UnaryOp::Sqrt | UnaryOp::Log | UnaryOp::Reciprocal => (0.05, 20.0),
                _ => (-6.0, 6.0),
            };
            let mut spec = Spec::new();
            spec.input("x", rng.tensor(&s, lo, hi)).node("u", Op::Unary(op), &["x"], &["y"]).output("y");
            let tol = match op {
                UnaryOp::Silu | UnaryOp::Selu { .. } | UnaryOp::Gelu { .. } => COMPOSED,
                _ => ELEMENTWISE,
            };
            check(&spec, tol);
        }
    }

    #[test]
    fn binary_ops_broadcast(s in shape(), seed in any::<u64>(), swap in any::<bool>()) {
        let mut rng = XRng(seed | 1);
        let t = broadcast_of(&s, &mut rng);
        let (sa, sb) = if swap { (t.clone(), s.clone()) } else { (s.clone(), t.clone()) };
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow, BinaryOp::Max,
                   BinaryOp::Min, BinaryOp::Equal, BinaryOp::Less] {
            let (a, b) = match op {
                BinaryOp::Pow => (rng.tensor(&sa, 0.1, 3.0), rng.tensor(&sb, -3.0, 3.0)),
                BinaryOp::Div => (rng.tensor(&sa, -5.0, 5.0), rng.tensor(&sb, 0.5, 4.0)),
                // Small integers so that Equal has true cases.
                BinaryOp::Equal | BinaryOp::Less => {
                    let r = |rng: &mut XRng, s: &[usize]| {
                        let t = rng.tensor(s, 0.0, 3.0);
                        Tensor::from_f32(s.to_vec(), t.as_f32().unwrap().iter().map(|v| v.floor()).collect()).unwrap()
                    };
                    (r(&mut rng, &sa), r(&mut rng, &sb))
                }
                _ => (rng.tensor(&sa, -5.0, 5.0), rng.tensor(&sb, -5.0, 5.0)),
            };
            let mut spec = Spec::new();
            spec.input("a", a).input("b", b).node("op", Op::Binary(op), &["a", "b"], &["y"]).output("y");
            // Pow = exp(y·log x): error grows with |y·log x| ≤ 3.3 here.
            let tol = if op == BinaryOp::Pow { COMPOSED } else { ELEMENTWISE };
            check(&spec, tol);
        }
    }

    /// x·w + b → Tanh → Where(x < 0, ·, Relu(x)) → Sigmoid, one kernel, w and b broadcast.
    #[test]
    fn fused_chain_is_one_kernel(s in shape(), seed in any::<u64>()) {
        let mut rng = XRng(seed | 1);
        let ws = broadcast_of(&s, &mut rng);
        let bs = broadcast_of(&s, &mut rng);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&s, -3.0, 3.0))
            .weight("w", rng.tensor(&ws, -2.0, 2.0))
            .weight("b", rng.tensor(&bs, -1.0, 1.0))
            .weight("zero", Tensor::scalar_f32(0.0))
            .node("mul", Op::Binary(BinaryOp::Mul), &["x", "w"], &["xw"])
            .node("add", Op::Binary(BinaryOp::Add), &["xw", "b"], &["h"])
            .node("tanh", Op::Unary(UnaryOp::Tanh), &["h"], &["t"])
            .node("less", Op::Binary(BinaryOp::Less), &["x", "zero"], &["neg"])
            .node("relu", Op::Unary(UnaryOp::Relu), &["x"], &["r"])
            .node("where", Op::Where, &["neg", "t", "r"], &["wh"])
            .node("sig", Op::Unary(UnaryOp::Sigmoid), &["wh"], &["y"])
            .output("y");
        let exe = check(&spec, ELEMENTWISE);
        prop_assert_eq!(steps(&exe), 1, "{}", exe.schedule_text());
    }

    /// A value read by two fused ops (silu-like x·σ(x)) and an intermediate that is also an output.
    #[test]
    fn fused_dag_and_shared_outputs(s in shape(), seed in any::<u64>()) {
        let mut rng = XRng(seed | 1);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&s, -3.0, 3.0))
            .node("e", Op::Unary(UnaryOp::Exp), &["x"], &["ex"])
            .node("sig", Op::Unary(UnaryOp::Sigmoid), &["ex"], &["s"])
            .node("mul", Op::Binary(BinaryOp::Mul), &["ex", "s"], &["m"])
            .node("neg", Op::Unary(UnaryOp::Neg), &["m"], &["y"])
            .node("cast", Op::Cast { to: DType::Bool }, &["x"], &["xb"])
            .node("where", Op::Where, &["xb", "m", "x"], &["z"])
            .output("y").output("m").output("z");
        check(&spec, ELEMENTWISE);
    }

    #[test]
    fn softmax_rows(s in prop::collection::vec(1usize..40, 1..4), seed in any::<u64>(), scale in 0.1f32..30.0) {
        let mut rng = XRng(seed | 1);
        let x = rng.tensor(&s, -scale, scale);
        for algo in [SoftmaxAlgo::TwoPass, SoftmaxAlgo::ThreePass, SoftmaxAlgo::ThreePassStored] {
            for op in [Op::Softmax { axis: -1 }, Op::LogSoftmax { axis: -1 }] {
                // The last axis (row kernel) and the first (transposed around the kernel).
                let mut spec = Spec::new();
                let op0 = match op { Op::Softmax { .. } => Op::Softmax { axis: 0 }, _ => Op::LogSoftmax { axis: 0 } };
                spec.input("x", x.clone()).node("sm", op.clone(), &["x"], &["y"]).node("sm0", op0, &["x"], &["y0"])
                    .output("y").output("y0");
                let tol = Tol { abs: 1e-6, rel: 1e-5 };
                let tol = if matches!(op, Op::LogSoftmax { .. }) { Tol { abs: 2e-6 * scale, rel: 1e-5 } } else { tol };
                check_with(&spec, tol, &CodegenOptions { threads: 2, softmax: algo, ..Default::default() });
            }
        }
    }

    #[test]
    fn layer_and_rms_norm(s in prop::collection::vec(1usize..20, 1..4), seed in any::<u64>(), axis_back in 1usize..3, bias in any::<bool>()) {
        let mut rng = XRng(seed | 1);
        let axis = -(axis_back.min(s.len()) as i64);
        let a = (s.len() as i64 + axis) as usize;
        let ps = s[a..].to_vec();
        let x = rng.tensor(&s, -4.0, 4.0);
        // As for GroupNorm: f32 statistics err by ≈ 2⁻²⁴·max|x| in x − μ, divided by σ.
        let row: usize = ps.iter().product();
        let sigma_min = x.as_f32().unwrap().chunks(row).map(|r| {
            let mu = r.iter().map(|&v| v as f64).sum::<f64>() / row as f64;
            (r.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / row as f64 + 1e-5).sqrt()
        }).fold(f64::INFINITY, f64::min);
        let tol = Tol { abs: 1e-4 + (8.0 * 4.0 * 2.0 / 16_777_216.0 / sigma_min) as f32, rel: 1e-4 };
        let mut spec = Spec::new();
        spec.input("x", x).weight("g", rng.tensor(&ps, 0.5, 2.0)).weight("b", rng.tensor(&ps, -1.0, 1.0));
        let ins: &[&str] = if bias { &["x", "g", "b"] } else { &["x", "g"] };
        spec.node("ln", Op::LayerNormalization { axis, epsilon: 1e-5 }, ins, &["y"])
            .node("rms", Op::RmsNormalization { axis, epsilon: 1e-6 }, &["x", "g"], &["z"])
            .output("y").output("z");
        check(&spec, tol);
    }

    /// BatchNormalization (rank 2–4) and UnifiedNorm fuse with a following Relu.
    #[test]
    fn affine_norms_fuse(s in prop::collection::vec(1usize..6, 2..5), seed in any::<u64>()) {
        let mut rng = XRng(seed | 1);
        let c = s[1];
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&s, -3.0, 3.0))
            .weight("scale", rng.tensor(&[c], 0.5, 2.0))
            .weight("bias", rng.tensor(&[c], -1.0, 1.0))
            .weight("mean", rng.tensor(&[c], -1.0, 1.0))
            .weight("var", rng.tensor(&[c], 0.1, 3.0))
            .node("bn", Op::BatchNormalization { epsilon: 1e-5 }, &["x", "scale", "bias", "mean", "var"], &["h"])
            .node("relu", Op::Unary(UnaryOp::Relu), &["h"], &["y"])
            .node("un", Op::UnifiedNorm { axis: 1, epsilon: 1e-5 }, &["x", "scale", "bias", "var"], &["z"])
            .output("y").output("z");
        let exe = check(&spec, Tol { abs: 1e-5, rel: 1e-5 });
        prop_assert_eq!(steps(&exe), 2, "{}", exe.schedule_text());
    }

    #[test]
    fn group_and_instance_norm(n in 1usize..3, g in 1usize..4, cpg in 1usize..4, sp in prop::collection::vec(1usize..7, 0..3), seed in any::<u64>()) {
        let mut rng = XRng(seed | 1);
        let c = g * cpg;
        let mut s = vec![n, c];
        s.extend(&sp);
        let x = rng.tensor(&s, -3.0, 5.0);
        // f32 statistics carry an absolute error of about 2⁻²⁴·max|x| in x − μ, which the
        // normalisation divides by σ: the tolerance scales with max|x|/σ of the worst row
        // (groups of `cpg` channels and single channels).
        let sp_len: usize = sp.iter().product();
        let xv = x.as_f32().unwrap();
        let sigma_min = [cpg * sp_len, sp_len].iter().map(|&row| {
            xv.chunks(row).map(|r| {
                let mu = r.iter().map(|&v| v as f64).sum::<f64>() / row as f64;
                (r.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / row as f64 + 1e-5).sqrt()
            }).fold(f64::INFINITY, f64::min)
        }).fold(f64::INFINITY, f64::min);
        let tol = Tol { abs: 1e-5 + (8.0 * 5.0 * 2.0 / 16_777_216.0 / sigma_min) as f32, rel: 1e-5 };
        let mut spec = Spec::new();
        spec.input("x", x)
            .weight("g", rng.tensor(&[c], 0.5, 2.0))
            .weight("b", rng.tensor(&[c], -1.0, 1.0))
            .node("gn", Op::GroupNormalization { num_groups: g, epsilon: 1e-5 }, &["x", "g", "b"], &["y"])
            .output("y");
        if s.len() >= 3 {
            spec.node("in", Op::InstanceNormalization { epsilon: 1e-5 }, &["x", "g", "b"], &["z"]).output("z");
        }
        check(&spec, tol);
    }

    #[test]
    fn power_norm(lead in prop::collection::vec(1usize..5, 0..3), groups in 1usize..4, cpg in 1usize..11, seed in any::<u64>()) {
        let mut rng = XRng(seed | 1);
        let d = groups * cpg;
        let mut s = lead.clone();
        s.push(d);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&s, -3.0, 3.0))
            .weight("g", rng.tensor(&[d], 0.5, 2.0))
            .weight("b", rng.tensor(&[d], -1.0, 1.0))
            .weight("phi", rng.tensor(&[d], 0.1, 3.0))
            .node("pn", Op::PowerNorm { groups, epsilon: 1e-5, group_epsilon: 1e-5 }, &["x", "g", "b", "phi"], &["y"])
            .output("y");
        check(&spec, Tol { abs: 1e-5, rel: 1e-5 });
    }

    #[test]
    fn matmul_gemm_and_mlp(m in 1usize..20, k in 1usize..20, n in 1usize..20, batch in prop::collection::vec(1usize..4, 0..3),
                           ta in any::<bool>(), tb in any::<bool>(), seed in any::<u64>(), threads in 1usize..4) {
        let mut rng = XRng(seed | 1);
        let mut xs = batch.clone();
        xs.extend([m, k]);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&xs, -1.0, 1.0))
            .weight("w", rng.tensor(&[k, n], -1.0, 1.0))
            .weight("b", rng.tensor(&[n], -1.0, 1.0))
            .input("a", rng.tensor(&if ta { [k, m] } else { [m, k] }, -1.0, 1.0))
            .weight("bt", rng.tensor(&if tb { [n, k] } else { [k, n] }, -1.0, 1.0))
            .weight("c", rng.tensor(&[m, 1], -1.0, 1.0))
            // Linear → +bias → Gelu: the matmul and a fused epilogue kernel.
            .node("mm", Op::MatMul, &["x", "w"], &["h"])
            .node("add", Op::Binary(BinaryOp::Add), &["h", "b"], &["hb"])
            .node("act", Op::Unary(UnaryOp::Gelu { tanh: true }), &["hb"], &["y"])
            .node("gemm", Op::Gemm { alpha: 0.5, beta: 2.0, trans_a: ta, trans_b: tb }, &["a", "bt", "c"], &["g"])
            .output("y").output("g");
        let tol = Tol { abs: 1e-5 * k as f32, rel: 1e-5 };
        let exe = check_with(&spec, tol, &CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, ..Default::default() });
        // Bias + Gelu run as the MatMul's epilogue: two steps in all (MatMul+epilogue, Gemm).
        let schedule = exe.schedule_text();
        prop_assert!(schedule.contains("mm + epilogue fused[add, act]"), "{}", schedule);
        prop_assert_eq!(steps(&exe), 2, "{}", schedule);
    }

    #[test]
    fn conv_pad_resize(n in 1usize..3, cg in 1usize..4, group in 1usize..3, mg in 1usize..3, h in 3usize..9, w in 3usize..9,
                       kk in 1usize..4, s in 1usize..3, d in 1usize..3, p in 0usize..2, seed in any::<u64>(), threads in 1usize..3) {
        prop_assume!(h + 2 * p > d * (kk - 1) && w + 2 * p > d * (kk - 1));
        let mut rng = XRng(seed | 1);
        let (c, m) = (cg * group, mg * group);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&[n, c, h, w], -1.0, 1.0))
            .weight("w", rng.tensor(&[m, cg, kk, kk], -1.0, 1.0))
            .weight("b", rng.tensor(&[m], -1.0, 1.0))
            .node("conv", Op::Conv { strides: [s, s], dilations: [d, d], pads: [p, p, p, p], group }, &["x", "w", "b"], &["y"])
            .node("relu", Op::Unary(UnaryOp::Relu), &["y"], &["r"])
            .node("pad", Op::Pad { mode: kiln_ir::PadMode::Reflect, pads: vec![0, 0, 1, 2, 0, 0, 2, 1], value: 0.0 }, &["x"], &["px"])
            .node("up", Op::Resize { scales: Some(vec![1.0, 1.0, 2.0, 2.0]), sizes: None,
                                     coordinate_transformation_mode: kiln_ir::CoordTransform::Asymmetric,
                                     nearest_mode: kiln_ir::NearestMode::Floor }, &["r"], &["u"])
            .output("u").output("px");
        let tol = Tol { abs: 1e-5 * (cg * kk * kk) as f32, rel: 1e-5 };
        check_with(&spec, tol, &CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, ..Default::default() });
    }

    #[test]
    fn attention(batch in prop::collection::vec(1usize..3, 0..3), lq in 1usize..9, lk in 1usize..9, d in 1usize..9,
                 dv in 1usize..9, bias_kind in 0usize..4, seed in any::<u64>(), threads in 1usize..3) {
        let mut rng = XRng(seed | 1);
        let sh = |tail: [usize; 2]| batch.iter().copied().chain(tail).collect::<Vec<_>>();
        let mut spec = Spec::new();
        spec.input("q", rng.tensor(&sh([lq, d]), -1.0, 1.0))
            .input("kt", rng.tensor(&sh([d, lk]), -1.0, 1.0))
            .weight("v", rng.tensor(&[lk, dv], -1.0, 1.0));
        let mut ins = vec!["q", "kt", "v"];
        let bias_shape: Option<Vec<usize>> = match bias_kind { 0 => None, 1 => Some(vec![lk]), 2 => Some(vec![lq, lk]), _ => Some(sh([lq, lk])) };
        if let Some(bs) = &bias_shape {
            spec.weight("bias", rng.tensor(bs, -3.0, 3.0));
            ins.push("bias");
        }
        spec.node("att", Op::Attention { scale: 0.35, nan_to_zero: false }, &ins, &["y"]).output("y");
        let exe = check_with(&spec, Tol { abs: 1e-5, rel: 1e-5 }, &CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, ..Default::default() });
        prop_assert_eq!(steps(&exe), 1, "{}", exe.schedule_text());
    }

    #[test]
    fn masked_softmax(s in prop::collection::vec(1usize..12, 1..4), seed in any::<u64>(), scale in 0.1f32..10.0) {
        let mut rng = XRng(seed | 1);
        let x = rng.tensor(&s, -scale, scale);
        let ms = broadcast_of(&s, &mut rng);
        // A 0/1 mask whose every row keeps at least the last entry (a row of zeros is NaN in both).
        let n: usize = ms.iter().product();
        let last = *ms.last().unwrap_or(&1);
        let m: Vec<f32> = (0..n).map(|i| if (i + 1).is_multiple_of(last) || !rng.next().is_multiple_of(3) { 1.0 } else { 0.0 }).collect();
        let mut spec = Spec::new();
        spec.input("x", x).weight("m", Tensor::from_f32(ms.clone(), m).unwrap())
            .node("msm", Op::MaskedSoftmax, &["x", "m"], &["y"]).output("y");
        check(&spec, Tol { abs: 1e-6, rel: 1e-5 });
    }

    #[test]
    fn evonorms(n in 1usize..3, g in 1usize..4, cpg in 1usize..4, h in 1usize..6, w in 1usize..6, seed in any::<u64>()) {
        let mut rng = XRng(seed | 1);
        let c = g * cpg;
        let x = rng.tensor(&[n, c, h, w], -3.0, 3.0);
        let mut spec = Spec::new();
        spec.input("x", x)
            .weight("v", rng.tensor(&[c], -1.0, 1.0))
            .weight("g", rng.tensor(&[c], 0.5, 2.0))
            .weight("b", rng.tensor(&[c], -1.0, 1.0))
            .weight("rv", rng.tensor(&[c], 0.1, 3.0))
            .node("s0", Op::EvoNormS0 { groups: g, epsilon: 1e-5 }, &["x", "v", "g", "b"], &["y"])
            .node("b0", Op::EvoNormB0 { epsilon: 1e-3 }, &["x", "v", "g", "b", "rv"], &["z"])
            .output("y").output("z");
        // σ ≥ √ε bounds the amplification of f32 statistics (see group_and_instance_norm).
        check(&spec, Tol { abs: 2e-4, rel: 1e-4 });
    }

    #[test]
    fn reductions(s in prop::collection::vec(1usize..9, 1..5), seed in any::<u64>(), keepdims in any::<bool>(),
                  pick in prop::collection::vec(any::<bool>(), 4)) {
        let mut rng = XRng(seed | 1);
        // Any non-empty subset of the axes (contiguous or not, e.g. N,H,W of NCHW).
        let r = s.len();
        let mut axes: Vec<i64> = (0..r).filter(|&a| pick[a]).map(|a| a as i64).collect();
        if axes.is_empty() {
            axes.push((r - 1) as i64);
        }
        let x = rng.tensor(&s, -3.0, 3.0);
        for kind in [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max, ReduceKind::L2] {
            let mut spec = Spec::new();
            spec.input("x", x.clone())
                .node("r", Op::Reduce { kind, axes: Some(axes.clone()), keepdims, noop_with_empty_axes: false }, &["x"], &["y"])
                .output("y");
            check(&spec, REDUCTION);
        }
    }

    #[test]
    fn movement(s in prop::collection::vec(1usize..6, 1..5), seed in any::<u64>()) {
        let mut rng = XRng(seed | 1);
        let r = s.len();
        let x = rng.tensor(&s, -3.0, 3.0);
        let mut perm: Vec<usize> = (0..r).collect();
        for i in (1..r).rev() {
            perm.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let axis = (rng.next() % r as u64) as i64;
        let d = s[axis as usize] as i64;
        let start = (rng.next() % d as u64) as i64;
        let step = if rng.next().is_multiple_of(2) { 1 } else { -1 - (rng.next() % 2) as i64 };
        let (st, en) = if step > 0 { (start, d) } else { (d - 1, start - 1 - d) };
        let idx = Tensor::from_i64([3], vec![0, d - 1, -1]).unwrap();
        let mut big = s.clone();
        big.insert(0, 2);
        let mut spec = Spec::new();
        spec.input("x", x.clone()).weight("idx", idx).input("x2", rng.tensor(&s, -1.0, 1.0))
            .node("tr", Op::Transpose { perm: Some(perm) }, &["x"], &["t"])
            .node("sl", Op::Slice { starts: vec![st], ends: vec![en], axes: Some(vec![axis]), steps: Some(vec![step]) }, &["x"], &["sl"])
            .node("cat", Op::Concat { axis }, &["x", "x2", "x"], &["cat"])
            .node("split", Op::Split { axis, split: None, num_outputs: 1 }, &["cat"], &["sp"])
            .node("ga", Op::Gather { axis }, &["x", "idx"], &["ga"])
            .node("ex", Op::Expand { shape: big.iter().map(|&v| v as i64).collect() }, &["x"], &["ex"])
            .node("un", Op::Unsqueeze { axes: vec![0] }, &["x"], &["un"])
            .node("fl", Op::Flatten { axis: 1 }, &["un"], &["fl"])
            .node("neg", Op::Unary(UnaryOp::Neg), &["fl"], &["nf"])
            .output("t").output("sl").output("cat").output("sp").output("ga").output("ex").output("nf");
        check(&spec, Tol { abs: 0.0, rel: 0.0 });
    }
}

#[test]
fn special_values_follow_the_reference() {
    let specials =
        vec![f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40, -1e-40, 88.8, -104.0, 1e30, -1e30];
    let n = specials.len();
    for &op in UNARY {
        let mut spec = Spec::new();
        spec.input("x", Tensor::from_f32([n], specials.clone()).unwrap())
            .node("u", Op::Unary(op), &["x"], &["y"])
            .output("y");
        check(&spec, COMPOSED);
    }
}

#[test]
fn layer_norm_keeps_accuracy_under_a_large_offset() {
    // Rows of 1e4 + U(−1, 1): with a plain f32 mean, x − μ would err by ≈ ulp(1e4)/σ ≈ 2e-3.
    let mut rng = XRng(21);
    let x = rng.tensor(&[8, 67], -1.0, 1.0);
    let x = Tensor::from_f32([8, 67], x.as_f32().unwrap().iter().map(|v| v + 1e4).collect()).unwrap();
    let mut spec = Spec::new();
    spec.input("x", x)
        .weight("g", Tensor::from_f32([67], vec![1.0; 67]).unwrap())
        .node("ln", Op::LayerNormalization { axis: -1, epsilon: 1e-5 }, &["x", "g"], &["y"])
        .output("y");
    check(&spec, Tol { abs: 2e-4, rel: 0.0 });
}

#[test]
fn split_into_uneven_parts() {
    let mut rng = XRng(7);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[3, 7], -1.0, 1.0))
        .node("sp", Op::Split { axis: 1, split: Some(vec![2, 4, 1]), num_outputs: 3 }, &["x"], &["a", "b", "c"])
        .output("a")
        .output("b")
        .output("c");
    check(&spec, Tol { abs: 0.0, rel: 0.0 });
}

#[test]
fn softmax_with_masks() {
    // −inf and −1e9 masks, a fully masked row (uniform for −1e9 in both), large logits.
    let x = Tensor::from_f32(
        [3, 5],
        vec![
            1.0,
            f32::NEG_INFINITY,
            2.0,
            -1e9,
            0.5, //
            -1e9,
            -1e9,
            -1e9,
            -1e9,
            -1e9, //
            80.0,
            -80.0,
            79.0,
            0.0,
            88.0,
        ],
    )
    .unwrap();
    for algo in [SoftmaxAlgo::TwoPass, SoftmaxAlgo::ThreePass, SoftmaxAlgo::ThreePassStored] {
        let mut spec = Spec::new();
        spec.input("x", x.clone()).node("sm", Op::Softmax { axis: 1 }, &["x"], &["y"]).output("y");
        check_with(
            &spec,
            Tol { abs: 1e-7, rel: 1e-5 },
            &CodegenOptions { threads: 1, softmax: algo, ..Default::default() },
        );
    }
}

#[test]
fn i64_and_bool_values_cross_the_boundary() {
    let mut spec = Spec::new();
    spec.input("x", Tensor::from_f32([5], vec![-2.7, -0.5, 0.0, 1.5, 3.9]).unwrap())
        .input("m", Tensor::from_bool([5], vec![true, false, true, true, false]).unwrap())
        .input("i", Tensor::from_i64([5], vec![3, 0, -1, 7, 2]).unwrap())
        .node("c1", Op::Cast { to: DType::I64 }, &["x"], &["xi"])
        .node("c2", Op::Cast { to: DType::F32 }, &["i"], &["if"])
        .node("c3", Op::Cast { to: DType::Bool }, &["i"], &["ib"])
        .node("c4", Op::Cast { to: DType::I64 }, &["m"], &["mi"])
        .node("c5", Op::Cast { to: DType::F32 }, &["m"], &["mf"])
        .node("w", Op::Where, &["m", "x", "if"], &["w"])
        .node("eq", Op::Binary(BinaryOp::Equal), &["x", "mf"], &["eq"])
        .output("xi")
        .output("ib")
        .output("mi")
        .output("w")
        .output("eq")
        .output("m");
    check(&spec, Tol { abs: 0.0, rel: 0.0 });
}

fn mixed_model(rng: &mut XRng) -> Spec {
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[64, 300], -2.0, 2.0))
        .weight("g", rng.tensor(&[300], 0.5, 1.5))
        .weight("b", rng.tensor(&[300], -0.5, 0.5))
        .node("ln", Op::LayerNormalization { axis: -1, epsilon: 1e-5 }, &["x", "g", "b"], &["h"])
        .node("gelu", Op::Unary(UnaryOp::Gelu { tanh: false }), &["h"], &["a"])
        .node("sm", Op::Softmax { axis: -1 }, &["a"], &["p"])
        .node("res", Op::Binary(BinaryOp::Add), &["p", "x"], &["r"])
        .node(
            "mean",
            Op::Reduce { kind: ReduceKind::Mean, axes: Some(vec![0]), keepdims: false, noop_with_empty_axes: false },
            &["r"],
            &["y"],
        )
        .output("y")
        .output("r");
    spec
}

#[test]
fn concurrent_runs_match_single_threaded() {
    let mut rng = XRng(11);
    let spec = mixed_model(&mut rng);
    let exe = compile_spec(&spec, &options(2));
    let inputs: Vec<Tensor> = (0..8).map(|_| rng.tensor(&[64, 300], -2.0, 2.0)).collect();
    let expected: Vec<Vec<Tensor>> = inputs.iter().map(|t| exe.run(&[t]).unwrap()).collect();
    std::thread::scope(|s| {
        for (t, want) in inputs.iter().zip(&expected) {
            let exe = &exe;
            s.spawn(move || {
                for _ in 0..50 {
                    let got = exe.run(&[t]).unwrap();
                    assert!(got == *want, "a concurrent run differs from the single-threaded result");
                }
            });
        }
    });
}

/// GEMMs above the parallel threshold (1 Mi flops) are split across the pool in row blocks, with the
/// fused epilogue run per block; the small proptest shapes above stay on one thread.
#[test]
fn large_gemms_split_across_threads() {
    let (m, k, n) = (96, 160, 80);
    for (batch, threads) in [(vec![3], 2), (vec![1], 2), (vec![], 3), (vec![2, 2], 3)] {
        let mut rng = XRng(17 + threads as u64);
        let mut xs: Vec<usize> = batch.clone();
        xs.extend([m, k]);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&xs, -1.0, 1.0))
            .weight("w", rng.tensor(&[k, n], -1.0, 1.0))
            .weight("b", rng.tensor(&[n], -1.0, 1.0))
            .input("a", rng.tensor(&[k, m], -1.0, 1.0))
            .weight("bt", rng.tensor(&[n, k], -1.0, 1.0))
            .weight("c", rng.tensor(&[m, 1], -1.0, 1.0))
            .node("mm", Op::MatMul, &["x", "w"], &["h"])
            .node("add", Op::Binary(BinaryOp::Add), &["h", "b"], &["hb"])
            .node("act", Op::Unary(UnaryOp::Gelu { tanh: true }), &["hb"], &["y"])
            .node("gemm", Op::Gemm { alpha: 0.5, beta: 2.0, trans_a: true, trans_b: true }, &["a", "bt", "c"], &["g"])
            .output("y")
            .output("g");
        let tol = Tol { abs: 1e-5 * k as f32, rel: 1e-5 };
        let exe =
            check_with(&spec, tol, &CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, ..Default::default() });
        let ins = kiln_ir::eval::check_inputs(&spec.build().0, &spec.inputs).unwrap();
        let one = compile_spec(&spec, &options(1)).run(&ins).unwrap();
        assert_eq!(exe.run(&ins).unwrap(), one, "batch {batch:?}, {threads} threads: results depend on the split");
    }
}

#[test]
fn thread_counts_agree_and_results_are_deterministic() {
    let mut rng = XRng(5);
    let spec = mixed_model(&mut rng);
    let x = rng.tensor(&[64, 300], -2.0, 2.0);
    let one = compile_spec(&spec, &options(1)).run(&[&x]).unwrap();
    let two = compile_spec(&spec, &options(2)).run(&[&x]).unwrap();
    let four = compile_spec(&spec, &options(4));
    assert_eq!(one, two);
    assert_eq!(one, four.run(&[&x]).unwrap());
    assert_eq!(one, four.run(&[&x]).unwrap());
}

#[test]
fn memory_plan_reuses_buffers() {
    // A chain of non-fusable row kernels: each intermediate dies after its consumer.
    let mut rng = XRng(9);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[32, 256], -1.0, 1.0));
    let mut prev = "x".to_string();
    for i in 0..6 {
        let out = format!("s{i}");
        spec.node(&format!("sm{i}"), Op::Softmax { axis: -1 }, &[&prev], &[&out]);
        prev = out;
    }
    spec.output(&prev);
    let exe = check(&spec, Tol { abs: 1e-7, rel: 1e-5 });
    let m = exe.memory();
    let buf = 32 * 256 * 4;
    assert_eq!(m.unshared_bytes, 6 * buf);
    assert_eq!(m.lower_bound_bytes, 2 * buf);
    assert_eq!(m.arena_bytes, 2 * buf, "{m:?}");
}

#[test]
fn elementwise_ops_between_kernels_run_in_place() {
    // softmax → exp → softmax → (·2) → softmax: each elementwise kernel overwrites its dying input,
    // so two buffers suffice; `s0` is a graph output and must survive, so the first exp cannot
    // overwrite it.
    let mut rng = XRng(4);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[16, 100], -1.0, 1.0))
        .weight("two", Tensor::scalar_f32(2.0))
        .node("sm0", Op::Softmax { axis: -1 }, &["x"], &["s0"])
        .node("e", Op::Unary(UnaryOp::Exp), &["s0"], &["e"])
        .node("sm1", Op::Softmax { axis: -1 }, &["e"], &["s1"])
        .node("m", Op::Binary(BinaryOp::Mul), &["s1", "two"], &["m"])
        .node("sm2", Op::Softmax { axis: -1 }, &["m"], &["y"])
        .output("y")
        .output("s0");
    let exe = check(&spec, Tol { abs: 1e-7, rel: 1e-5 });
    let buf: usize = 16 * 100 * 4;
    let m = exe.memory();
    // Buffers: s0 (output), e, s1 (m written in place over it), y (output).
    assert_eq!(m.unshared_bytes, 4 * buf.div_ceil(64) * 64, "{m:?}");
    assert_eq!(m.arena_bytes, 3 * buf.div_ceil(64) * 64, "{m:?}");
}

#[test]
fn clif_text_names_every_kernel() {
    let mut rng = XRng(1);
    let spec = mixed_model(&mut rng);
    let exe = compile_spec(&spec, &CodegenOptions { keep_clif: true, ..options(1) });
    let clif = exe.clif_text();
    // LayerNorm and the lone GELU run hand-written host kernels (crate::simd), not generated code.
    assert_eq!(clif.len(), 3, "softmax, add, mean: {:?}", clif.iter().map(|c| &c.0).collect::<Vec<_>>());
    for (name, text) in clif {
        assert!(text.starts_with("function u0:"), "{name}: {text}");
        assert!(text.contains("f32x4"), "{name} has no vector code");
    }
    // Without keep_clif the kernels are named but their text is not printed.
    let exe = compile_spec(&spec, &options(1));
    let names: Vec<&String> = exe.clif_text().iter().map(|c| &c.0).collect();
    assert_eq!(names, clif.iter().map(|c| &c.0).collect::<Vec<_>>());
    assert!(exe.clif_text().iter().all(|c| c.1.is_empty()));
}

/// Found by the differential tester: a row whose maximum is masked out and far above the kept
/// values made every kept exp(x − max) underflow, and the JIT gave NaN (0/0). The maximum is over
/// the kept elements; a masked +∞ or NaN weighs exactly 0; a fully masked row is NaN in both.
#[test]
fn masked_softmax_ignores_masked_out_maxima() {
    let rows = vec![
        200.0,
        0.0,
        1.0,
        5.0, //
        f32::INFINITY,
        0.5,
        -0.5,
        2.0, //
        f32::NAN,
        1.0,
        2.0,
        3.0, //
        1.0,
        2.0,
        3.0,
        4.0,
    ];
    let mask = vec![
        0.0, 1.0, 1.0, 1.0, //
        0.0, 1.0, 1.0, 1.0, //
        0.0, 1.0, 1.0, 1.0, //
        0.0, 0.0, 0.0, 0.0,
    ];
    for threads in [1, 2] {
        let mut spec = Spec::new();
        spec.input("x", Tensor::from_f32([4, 4], rows.clone()).unwrap())
            .weight("m", Tensor::from_f32([4, 4], mask.clone()).unwrap())
            .node("msm", Op::MaskedSoftmax, &["x", "m"], &["y"])
            .output("y");
        check_with(&spec, Tol { abs: 1e-6, rel: 1e-5 }, &options(threads));
        let (g, w) = spec.build();
        let want = kiln_ir::eval::run(&g, &w, &spec.inputs).unwrap();
        let y = want[0].1.as_f32().unwrap();
        assert!(y[..12].iter().all(|v| v.is_finite()), "kept rows are finite: {y:?}");
        assert!(y[12..].iter().all(|v| v.is_nan()), "a fully masked row is NaN: {y:?}");
    }
}

/// Clip (a fused chain's ReLU6, say) on the special values, bit for bit as the interpreter: NaN
/// stays NaN, −0 stays −0 inside the range, the infinities clamp, and a bound may be missing.
/// Clip is a compare and a blend per bound in generated code, as `ir::ops::elementwise` states it.
#[test]
fn clip_keeps_nan_and_signed_zero() {
    let xs = vec![f32::NAN, -0.0, 0.0, f32::INFINITY, f32::NEG_INFINITY, -1.0, 0.0, 6.0, 7.5, 3.25, -0.0, 1e-45];
    for (min, max) in [(Some(0.0), Some(6.0)), (Some(-0.0), None), (None, Some(-0.0)), (Some(-1.0), Some(-1.0))] {
        let n = xs.len();
        let mut spec = Spec::new();
        // Times one keeps the Clip inside a generated chain (a lone Clip is a chain of one).
        spec.input("x", Tensor::from_f32([n], xs.clone()).unwrap())
            .weight("one", Tensor::from_f32([1], vec![1.0]).unwrap())
            .node("m", Op::Binary(BinaryOp::Mul), &["x", "one"], &["h"])
            .node("c", Op::Unary(UnaryOp::Clip { min, max }), &["h"], &["y"])
            .output("y");
        let (g, w) = spec.build();
        let want = kiln_ir::eval::run(&g, &w, &spec.inputs).unwrap();
        for threads in [1, 2] {
            let exe = compile_spec(&spec, &options(threads));
            let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
            let got = exe.run(&ins).unwrap();
            let bits = |t: &Tensor| t.as_f32().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got[0]), bits(&want[0].1), "Clip({min:?}, {max:?})");
        }
    }
}
