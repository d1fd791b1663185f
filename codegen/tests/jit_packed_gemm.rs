//! MatMul and Gemm with a weight B, which runs kiln's packed sgemm (`kiln_codegen::gemm`),
//! against the reference interpreter: every ISA path this CPU can run (Generic forced through
//! `CodegenOptions::isa`), 1 and 2 threads, sizes past one MC/KC block and with edge tiles,
//! transposes, alpha/beta/C, fused epilogues, leading dims folded into M and skinny products
//! split by columns.
//!
//! Tolerance: `1e-5·k` absolute + 1e-5 relative, the convention of jit_vs_interp.rs for f32
//! dot products of length k with operands in [-1, 1] (each of the k roundings is ≤ 6e-8 of a
//! partial sum of magnitude ≤ k/2 on average; the bound keeps an order of magnitude of room
//! while a wrong element is off by O(1)).

mod common;

use common::*;
use kiln_codegen::{CodegenOptions, Isa, SoftmaxAlgo};
use kiln_ir::{BinaryOp, Op, UnaryOp};

fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Generic];
    if Isa::supported(Isa::Avx2Fma) == Isa::Avx2Fma {
        v.push(Isa::Avx2Fma);
    }
    v
}

fn run_all(spec: &Spec, k: usize, expect_packed: usize) {
    for isa in isas() {
        for threads in [1, 2] {
            let opts = CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, isa, ..Default::default() };
            let exe = check_with(spec, Tol { abs: 1e-5 * k as f32, rel: 1e-5 }, &opts);
            let schedule = exe.schedule_text();
            assert_eq!(
                schedule.matches("gemm (packed B)").count(),
                expect_packed,
                "{isa}, {threads} threads:\n{schedule}"
            );
        }
    }
}

#[test]
fn linear_with_epilogue_past_one_block() {
    // m = 150 rows (3 MC blocks, an MR edge), k = 300 (2 KC blocks), n = 70 (an NR edge).
    let (m, k, n) = (150, 300, 70);
    let mut rng = XRng(11);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[m, k], -1.0, 1.0))
        .weight("w", rng.tensor(&[k, n], -1.0, 1.0))
        .weight("b", rng.tensor(&[n], -1.0, 1.0))
        .node("mm", Op::MatMul, &["x", "w"], &["h"])
        .node("add", Op::Binary(BinaryOp::Add), &["h", "b"], &["hb"])
        .node("act", Op::Unary(UnaryOp::Gelu { tanh: true }), &["hb"], &["y"])
        .output("y");
    run_all(&spec, k, 1);
}

#[test]
fn gemm_transposes_alpha_beta_c() {
    let (m, k, n) = (37, 257, 45);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        for c_shape in [vec![n], vec![m, 1], vec![m, n]] {
            let mut rng = XRng(5 + ta as u64 + 2 * tb as u64);
            let mut spec = Spec::new();
            spec.input("a", rng.tensor(&if ta { [k, m] } else { [m, k] }, -1.0, 1.0))
                .weight("b", rng.tensor(&if tb { [n, k] } else { [k, n] }, -1.0, 1.0))
                .input("c", rng.tensor(&c_shape, -1.0, 1.0))
                .node("g", Op::Gemm { alpha: -0.75, beta: 1.5, trans_a: ta, trans_b: tb }, &["a", "b", "c"], &["y"])
                .output("y");
            run_all(&spec, k, 1);
        }
    }
}

#[test]
fn leading_dims_fold_into_one_product() {
    // ViT's sequence-first projection in small: [37, 1, 64] × [64, 100] is one 37-row GEMM.
    let mut rng = XRng(3);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[37, 1, 64], -1.0, 1.0))
        .input("z", rng.tensor(&[2, 3, 5, 64], -1.0, 1.0))
        .weight("w", rng.tensor(&[64, 100], -1.0, 1.0))
        .node("mm", Op::MatMul, &["x", "w"], &["y"])
        .node("mm2", Op::MatMul, &["z", "w"], &["y2"])
        .output("y")
        .output("y2");
    run_all(&spec, 64, 2);
}

#[test]
fn skinny_product_splits_by_columns() {
    // 3 rows × 2000 columns: too few row panels for two threads, so they take column panels, and
    // the epilogue runs after both.
    let (m, k, n) = (3, 96, 2000);
    let mut rng = XRng(9);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[m, k], -1.0, 1.0))
        .weight("w", rng.tensor(&[k, n], -1.0, 1.0))
        .input("r", rng.tensor(&[m, n], -1.0, 1.0))
        .node("mm", Op::MatMul, &["x", "w"], &["h"])
        .node("add", Op::Binary(BinaryOp::Add), &["h", "r"], &["y"])
        .output("y");
    run_all(&spec, k, 1);
}

#[test]
fn a_weight_read_elsewhere_keeps_its_copy() {
    // w feeds a packed GEMM and an Add: the Add still reads the plain copy.
    let (m, k) = (20, 24);
    let mut rng = XRng(4);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[m, k], -1.0, 1.0))
        .weight("w", rng.tensor(&[k, k], -1.0, 1.0))
        .input("y", rng.tensor(&[k, k], -1.0, 1.0))
        .node("mm", Op::MatMul, &["x", "w"], &["h"])
        .node("add", Op::Binary(BinaryOp::Add), &["w", "y"], &["s"])
        .output("h")
        .output("s")
        .output("w");
    run_all(&spec, k, 1);
}

#[test]
fn narrow_and_vector_weights_keep_the_gemm_crate() {
    let mut rng = XRng(8);
    let mut spec = Spec::new();
    spec.input("x", rng.tensor(&[9, 33], -1.0, 1.0))
        .weight("v", rng.tensor(&[33], -1.0, 1.0))
        .weight("w", rng.tensor(&[33, 3], -1.0, 1.0))
        .node("mv", Op::MatMul, &["x", "v"], &["y"])
        .node("mm", Op::MatMul, &["x", "w"], &["z"])
        .output("y")
        .output("z");
    run_all(&spec, 33, 0);
}
