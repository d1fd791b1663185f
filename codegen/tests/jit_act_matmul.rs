//! MatMul and Gemm of two activations (B known only at run time), which run kiln's micro-kernels
//! with B packed per call (`kiln_codegen::gemm::Product::run_strided`), against the reference
//! interpreter: every ISA path this CPU can run (Generic and AVX2 forced through
//! `CodegenOptions::isa`; AVX-512 when the CPU has it), 1 and 2 threads, M, N and K off every
//! tile (6×16, 12×32) and past one MC/KC block, K = 1, batch broadcast on either side, transposed
//! operands (Gemm's transA/transB, and Transpose nodes feeding the product), with and without a
//! fused epilogue.
//!
//! Tolerance: `1e-5·k` absolute + 1e-5 relative, the convention of jit_vs_interp.rs and
//! jit_packed_gemm.rs for f32 dot products of length k with operands in [-1, 1] (each of the k
//! roundings is ≤ 6e-8 of a partial sum of magnitude ≤ k/2 on average; the bound keeps an order
//! of magnitude of room while a wrong element is off by O(1)). Epilogues (Clip to ±5, Exp, Mul by
//! values in [0, 1)) scale an error by at most e⁵ ≈ 148 relative to the product's size, so those
//! cases use 150× the bound.

mod common;

use common::*;
use kiln_codegen::{CodegenOptions, SoftmaxAlgo};
use kiln_ir::{BinaryOp, Op, UnaryOp};

const NEW_PATH: &str = "gemm (B packed per call";

/// Checks `spec` on every ISA at 1 and 2 threads; `expect_new` steps must take the new path.
fn run_all(spec: &Spec, tol: Tol, expect_new: usize) {
    for isa in isas() {
        for threads in [1, 2] {
            let opts = CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, isa, ..Default::default() };
            let exe = check_with(spec, tol, &opts);
            let schedule = exe.schedule_text();
            assert_eq!(schedule.matches(NEW_PATH).count(), expect_new, "{isa}, {threads} threads:\n{schedule}");
        }
    }
}

fn tol(k: usize) -> Tol {
    Tol { abs: 1e-5 * k.max(1) as f32, rel: 1e-5 }
}

/// Ragged 2-D and batched shapes: (A shape, B shape). M, N, K off the tiles, K = 1, K past one
/// KC block (256) and one span of them (1024), batch broadcast on A's side, B's side and both.
#[test]
fn ragged_and_batched_shapes() {
    let cases: [(&[usize], &[usize]); 9] = [
        (&[13, 1], &[1, 33]),
        (&[7, 5], &[5, 47]),
        (&[30, 64], &[64, 65]),
        (&[25, 257], &[257, 17]),
        (&[14, 1100], &[1100, 20]),
        (&[3, 37, 16], &[3, 16, 40]),
        (&[2, 3, 9, 8], &[3, 8, 19]),
        (&[21, 12], &[4, 12, 50]),
        (&[4, 1, 11, 6], &[1, 3, 6, 24]),
    ];
    for (i, (sa, sb)) in cases.into_iter().enumerate() {
        let mut rng = XRng(100 + i as u64);
        let mut spec = Spec::new();
        spec.input("a", rng.tensor(sa, -1.0, 1.0))
            .input("b", rng.tensor(sb, -1.0, 1.0))
            .node("mm", Op::MatMul, &["a", "b"], &["y"])
            .output("y");
        run_all(&spec, tol(sa[sa.len() - 1]), 1);
    }
}

/// Products at most one 16-column panel wide or shorter than 4 rows keep the `gemm` crate
/// (`gemm::strided_pays`), and give the same answers.
#[test]
fn narrow_and_short_products_keep_the_old_path() {
    for (sa, sb) in [([5, 9], [9, 7]), ([3, 40], [40, 64]), ([1, 16], [16, 32]), ([40, 64], [64, 16])] {
        let mut rng = XRng(7);
        let mut spec = Spec::new();
        spec.input("a", rng.tensor(&sa, -1.0, 1.0))
            .input("b", rng.tensor(&sb, -1.0, 1.0))
            .node("mm", Op::MatMul, &["a", "b"], &["y"])
            .output("y");
        run_all(&spec, tol(sa[1]), 0);
    }
}

/// Gemm of two activations with every transpose combination, alpha, and beta·C broadcast.
#[test]
fn gemm_transposed_operands_alpha_beta() {
    let (m, k, n) = (19, 23, 35);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut rng = XRng(11 + ta as u64 * 2 + tb as u64);
        let sa = if ta { [k, m] } else { [m, k] };
        let sb = if tb { [n, k] } else { [k, n] };
        let mut spec = Spec::new();
        spec.input("a", rng.tensor(&sa, -1.0, 1.0))
            .input("b", rng.tensor(&sb, -1.0, 1.0))
            .input("c", rng.tensor(&[n], -1.0, 1.0))
            .node("g", Op::Gemm { alpha: 0.75, beta: -1.5, trans_a: ta, trans_b: tb }, &["a", "b", "c"], &["y"])
            .output("y");
        run_all(&spec, tol(k), 1);
    }
}

/// Attention-shaped products as exporters write them: heads split by Reshape + Transpose of a
/// [L, H·D] projection (Q as [H, L, D], K as [H, D, L] times a scalar scale, V as [H, L, D]), QKᵀ with a fused
/// Clip/Exp/Mul epilogue, P·V, and the heads merged back by Transpose + Reshape. L = 37 and
/// D = 20 are off every tile (D > 16 so that P·V takes the new path too); 3 heads. The head
/// transposes of Q, K and V take no step: the products read the projections through strides.
#[test]
fn attention_heads_with_epilogue() {
    let (l, h, d) = (37usize, 3usize, 20usize);
    let mut rng = XRng(5);
    let mut spec = Spec::new();
    let hd = (h * d) as i64;
    let heads = Op::Reshape { shape: vec![l as i64, h as i64, d as i64], allowzero: false };
    spec.input("q", rng.tensor(&[l, h * d], -1.0, 1.0))
        .input("k", rng.tensor(&[l, h * d], -1.0, 1.0))
        .input("v", rng.tensor(&[l, h * d], -1.0, 1.0))
        .input("adj", rng.tensor(&[l, l], 0.0, 1.0))
        .node("qh", heads.clone(), &["q"], &["qh"])
        .node("qt", Op::Transpose { perm: Some(vec![1, 0, 2]) }, &["qh"], &["qt"])
        .node("kh", heads.clone(), &["k"], &["kh"])
        .node("kt", Op::Transpose { perm: Some(vec![1, 2, 0]) }, &["kh"], &["kt"])
        .node("vh", heads, &["v"], &["vh"])
        .node("vt", Op::Transpose { perm: Some(vec![1, 0, 2]) }, &["vh"], &["vt"])
        .weight("scale", kiln_ir::Tensor::from_f32(vec![], vec![0.35]).unwrap())
        .node("kscaled", Op::Binary(BinaryOp::Mul), &["kt", "scale"], &["kts"])
        .node("qk", Op::MatMul, &["qt", "kts"], &["s"])
        .node("clip", Op::Unary(UnaryOp::Clip { min: Some(-5.0), max: Some(5.0) }), &["s"], &["sc"])
        .node("exp", Op::Unary(UnaryOp::Exp), &["sc"], &["e"])
        .node("p", Op::Binary(BinaryOp::Mul), &["e", "adj"], &["p"])
        .node("pv", Op::MatMul, &["p", "vt"], &["o"])
        .node("ot", Op::Transpose { perm: Some(vec![1, 0, 2]) }, &["o"], &["oh"])
        .node("merge", Op::Reshape { shape: vec![l as i64, hd], allowzero: false }, &["oh"], &["y"])
        .output("y");
    // P·V sums l terms of size up to e⁵: the product bound at k = l, scaled by e⁵ (see above).
    run_all(&spec, Tol { abs: 150.0 * 1e-5 * l as f32, rel: 1e-4 }, 2);
    let exe = compile_spec(&spec, &options(1));
    let schedule = exe.schedule_text();
    // Only the merge of the heads (ot) is still a copy, and Kᵀ's scale is the product's alpha.
    assert_eq!(schedule.lines().filter(|l| l.contains("copy")).count(), 1, "{schedule}");
    assert!(!schedule.contains("kscaled"), "{schedule}");
}

/// The same product with an epilogue and as a graph output of its own: the epilogue is applied
/// per row block, and a product that is also an output keeps its plain value.
#[test]
fn epilogue_and_product_output() {
    let (m, k, n) = (50, 9, 70);
    let mut rng = XRng(9);
    let mut spec = Spec::new();
    spec.input("a", rng.tensor(&[2, m, k], -1.0, 1.0))
        .input("b", rng.tensor(&[2, k, n], -1.0, 1.0))
        .input("r", rng.tensor(&[n], -1.0, 1.0))
        .node("mm", Op::MatMul, &["a", "b"], &["s"])
        .node("add", Op::Binary(BinaryOp::Add), &["s", "r"], &["t"])
        .node("relu", Op::Unary(UnaryOp::Relu), &["t"], &["y"])
        .output("y");
    run_all(&spec, tol(k), 1);
    spec.output("s");
    run_all(&spec, tol(k), 1);
}

/// A scalar scale of an operand folds into the product's alpha whichever side of the Mul the
/// constant is on, and only when MatMuls alone read the scaled value: one that is also a graph
/// output keeps its own step.
#[test]
fn operand_scale_folds_into_alpha() {
    let (m, k, n) = (20, 9, 30);
    for also_output in [false, true] {
        let mut rng = XRng(21);
        let mut spec = Spec::new();
        spec.input("a", rng.tensor(&[2, m, k], -1.0, 1.0))
            .input("b", rng.tensor(&[2, k, n], -1.0, 1.0))
            .weight("c", kiln_ir::Tensor::from_f32(vec![1], vec![-2.5]).unwrap())
            .node("scale", Op::Binary(BinaryOp::Mul), &["c", "a"], &["as"])
            .node("mm", Op::MatMul, &["as", "b"], &["y"])
            .output("y");
        if also_output {
            spec.output("as");
        }
        // |alpha| = 2.5 scales the products' error bound.
        run_all(&spec, Tol { abs: 2.5e-5 * k as f32, rel: 1e-5 }, 1);
        let schedule = compile_spec(&spec, &options(1)).schedule_text();
        assert_eq!(schedule.contains("scale"), also_output, "{schedule}");
    }
}

/// A transposed A read through strides keeps its batches, so a B that is a view of a weight
/// (which would take the packed path, one batch of rows) is not packed: every batch is computed.
#[test]
fn strided_batched_a_times_a_weight_view() {
    let (m, k, n) = (5, 6, 20);
    let mut rng = XRng(31);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[m, 2, k], -1.0, 1.0))
        .weight("w", rng.tensor(&[k * n], -1.0, 1.0))
        .node("wr", Op::Reshape { shape: vec![k as i64, n as i64], allowzero: false }, &["w"], &["b"])
        .node("xt", Op::Transpose { perm: Some(vec![1, 0, 2]) }, &["x"], &["a"])
        .node("mm", Op::MatMul, &["a", "b"], &["y"])
        .output("y");
    run_all(&spec, tol(k), 1);
}
