//! MatMul and Gemm with a weight B, which runs kiln's packed sgemm (`kiln_codegen::gemm`), and
//! dense Conv on a weight, which runs its implicit GEMM (`kiln_codegen::gemm::conv`), against the
//! reference interpreter: every ISA path this CPU can run (Generic and AVX2 forced through
//! `CodegenOptions::isa`; AVX-512 when the CPU has it), 1 and 2 threads, sizes past one MC/KC block and with edge tiles,
//! transposes, alpha/beta/C, fused epilogues, leading dims folded into M and skinny products
//! split by columns.
//!
//! Tolerance: `1e-5·k` absolute + 1e-5 relative, the convention of jit_vs_interp.rs for f32
//! dot products of length k with operands in [-1, 1] (each of the k roundings is ≤ 6e-8 of a
//! partial sum of magnitude ≤ k/2 on average; the bound keeps an order of magnitude of room
//! while a wrong element is off by O(1)).

mod common;

use common::*;
use kiln_codegen::{CodegenOptions, SoftmaxAlgo};
use kiln_ir::{BinaryOp, Op, UnaryOp};

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

/// Ragged shapes around every kernel's tile (6×16 AVX2/portable, 12×32 AVX-512): M, N and K not
/// multiples of it, N = 1, K = 1, one row, and K past one span of A blocks (4·256).
#[test]
fn ragged_shapes_every_tile() {
    for (m, k, n) in [(1, 1, 1), (13, 1, 33), (25, 257, 1), (7, 5, 47), (14, 1100, 17), (30, 64, 65)] {
        let mut rng = XRng((m * 1000 + k * 10 + n) as u64);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&[m, k], -1.0, 1.0))
            .weight("w", rng.tensor(&[k, n], -1.0, 1.0))
            .node("mm", Op::MatMul, &["x", "w"], &["y"])
            .output("y");
        // n = 1 is a matrix-vector product, which keeps the gemm crate.
        run_all(&spec, k, usize::from(n > 1));
    }
}

/// Dense convolutions on a weight run as the implicit GEMM on weights packed for the ISA's kernel
/// (6-row panels for AVX2 and portable, 12-row for AVX-512), with the fused epilogue: channel
/// counts off every tile height, planes whose rows are not whole 16- or 32-pixel panels (the
/// AVX-512 kernel pairs adjacent panels, read from the window or the gathered copy), strides,
/// and a 1×1. Tolerance as the GEMM's, k = C·kh·kw.
#[test]
fn dense_conv_every_tile() {
    // (c, m, h, w, k, stride, pad); output planes filling ≥ 90% of their 16-pixel panels, and
    // small ones (below 90%: gemm::conv::panel_fill), which run PackedConv::by_channels.
    let cases = [
        (3, 16, 29, 29, 7, 2, 3),
        (8, 13, 12, 40, 3, 1, 1),
        (16, 25, 17, 17, 3, 1, 1),
        (5, 64, 12, 12, 3, 1, 1),
        (20, 11, 14, 14, 1, 1, 0),
        (7, 30, 9, 31, 3, 2, 1),
        // Small planes (3², 6², 7²), the register tile along output channels.
        (24, 40, 3, 3, 3, 1, 1),
        (9, 16, 12, 12, 3, 2, 1),
        (33, 20, 7, 7, 1, 1, 0),
        // 1×1 at stride 2 (ResNet's downsamples: the compact copy), 28² and 14² outputs.
        (24, 21, 56, 56, 1, 2, 0),
        (40, 9, 27, 28, 1, 2, 0),
    ];
    for (c, m, h, w, k, s, p) in cases {
        let mut rng = XRng((c * 100 + m) as u64);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&[2, c, h, w], -1.0, 1.0))
            .weight("w", rng.tensor(&[m, c, k, k], -1.0, 1.0))
            .weight("b", rng.tensor(&[m], -1.0, 1.0))
            .node(
                "conv",
                Op::Conv { strides: [s, s], dilations: [1, 1], pads: [p, p, p, p], group: 1 },
                &["x", "w", "b"],
                &["h"],
            )
            .node("act", Op::Unary(UnaryOp::Relu), &["h"], &["y"])
            .output("y");
        for isa in isas() {
            for threads in [1, 2] {
                let opts = CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, isa, ..Default::default() };
                let exe = check_with(&spec, Tol { abs: 1e-5 * (c * k * k) as f32, rel: 1e-5 }, &opts);
                let schedule = exe.schedule_text();
                assert!(
                    schedule.contains("implicit gemm"),
                    "{isa}, {threads} threads, {c}→{m} {h}×{w} k{k}:\n{schedule}"
                );
                assert_eq!(
                    schedule.contains("compact 1×1 input"),
                    k == 1 && s > 1,
                    "{isa}, {threads} threads, {c}→{m} {h}×{w} k{k}:\n{schedule}"
                );
            }
        }
    }
}

/// Small-K dense convs (MobileNet v2's 16→96 1×1 expansions and its 3→32 3×3/2 stem) run with
/// the channel panels outermost and the epilogue after each ("channel panels streamed"), on every
/// ISA and at 1 and 2 threads: channels off every tile height, blocks of whole rows that are not
/// whole panels, stride 2 and padding, with and without bias, a ReLU6 or a residual Add + ReLU
/// epilogue. A conv with a large K keeps the other order. Tolerance as the GEMM's, k = C·kh·kw.
#[test]
fn small_k_conv_streams_channel_panels() {
    // (c, m, h, w, k, stride, pad, bias, residual, streamed)
    let cases = [
        (16, 29, 13, 23, 1, 1, 0, true, false, true),
        (16, 96, 12, 112, 1, 1, 0, true, false, true),
        (12, 40, 9, 7, 1, 1, 0, false, true, true),
        (3, 32, 37, 41, 3, 2, 1, true, false, true),
        (5, 13, 11, 19, 3, 1, 1, true, true, true),
        (64, 20, 16, 16, 3, 1, 1, true, false, false),
    ];
    for (c, m, h, w, k, s, p, bias, residual, streamed) in cases {
        let mut rng = XRng((c * 1000 + m * 10 + k) as u64);
        let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&[2, c, h, w], -1.0, 1.0)).weight("w", rng.tensor(&[m, c, k, k], -1.0, 1.0));
        let mut conv_in = vec!["x", "w"];
        if bias {
            spec.weight("b", rng.tensor(&[m], -1.0, 1.0));
            conv_in.push("b");
        }
        let conv = Op::Conv { strides: [s, s], dilations: [1, 1], pads: [p, p, p, p], group: 1 };
        spec.node("conv", conv, &conv_in, &["h"]);
        if residual {
            spec.input("r", rng.tensor(&[2, m, oh, ow], -1.0, 1.0))
                .node("add", Op::Binary(BinaryOp::Add), &["h", "r"], &["hr"])
                .node("act", Op::Unary(UnaryOp::Relu), &["hr"], &["y"]);
        } else {
            let relu6 = UnaryOp::Clip { min: Some(0.0), max: Some(6.0) };
            spec.node("act", Op::Unary(relu6), &["h"], &["y"]);
        }
        spec.output("y");
        for isa in isas() {
            for threads in [1, 2] {
                let opts = CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, isa, ..Default::default() };
                let exe = check_with(&spec, Tol { abs: 1e-5 * (c * k * k) as f32, rel: 1e-5 }, &opts);
                let schedule = exe.schedule_text();
                let case = format!("{isa}, {threads} threads, {c}→{m} {h}×{w} k{k}/{s}");
                // A Relu6 and a residual Add + Relu both run as the conv stores.
                assert!(schedule.contains("implicit gemm") && schedule.contains("in-store"), "{case}:\n{schedule}");
                assert_eq!(schedule.contains("channel panels streamed"), streamed, "{case}:\n{schedule}");
            }
        }
    }
}

/// A residual Add, a Relu or a Clip, or a Relu or Clip of a residual Add after a dense conv run as
/// the conv stores each tile ("in-store"), on every ISA at 1 and 2 threads: channels off every
/// tile height, planes whose rows are not whole panels, one pixel, K = 2, 3 and K past one block,
/// the windowed, identity and compact 1×1 paths and the channel-tiled one for small planes (7²,
/// 3², 1²), both operand orders of the Add, without bias, Clips with both bounds and with one
/// (bounds inside the outputs' range, so both sides clamp). An Add of a broadcast operand keeps
/// the generated epilogue. Tolerance as dense_conv_every_tile's (the Add and the activation
/// round once each, as the interpreter's do; a clamped output is exact).
#[test]
fn conv_residual_and_relu_in_store() {
    // (c, m, h, w, k, stride, pad, bias)
    let shapes = [
        (5, 13, 11, 19, 3, 1, 1, true),
        (40, 21, 14, 14, 3, 1, 1, true),
        (300, 9, 6, 17, 1, 1, 0, false),
        (24, 19, 28, 28, 1, 2, 0, true),
        (33, 20, 7, 7, 1, 1, 0, true),
        (9, 17, 5, 5, 3, 2, 1, false),
        // K = 2, 3 (K = 1 is one input channel: the depthwise kernel): the 1×1 identity, a
        // 1-pixel plane, a padded stride-2 1×1 on an odd plane.
        (2, 13, 9, 23, 1, 1, 0, true),
        (2, 18, 1, 1, 1, 1, 0, true),
        (3, 17, 13, 31, 1, 2, 1, false),
        (3, 25, 19, 33, 1, 1, 0, true),
    ];
    let clip = |min, max| Some(UnaryOp::Clip { min, max });
    // (add, activation, residual first, broadcast residual)
    let forms = [
        (true, Some(UnaryOp::Relu), false, false),
        (true, None, true, false),
        (false, Some(UnaryOp::Relu), false, false),
        (true, Some(UnaryOp::Relu), true, true),
        (false, clip(Some(-0.5), Some(0.75)), false, false),
        (true, clip(Some(0.0), Some(6.0)), true, false),
        (false, clip(None, Some(0.25)), false, false),
        (true, clip(Some(-0.3), None), false, false),
    ];
    for (c, m, h, w, k, s, p, bias) in shapes {
        for (add, act, res_first, broadcast) in forms {
            let mut rng = XRng((c * 1000 + m * 10 + k + add as usize) as u64);
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            let mut spec = Spec::new();
            spec.input("x", rng.tensor(&[2, c, h, w], -1.0, 1.0)).weight("w", rng.tensor(&[m, c, k, k], -1.0, 1.0));
            let mut conv_in = vec!["x", "w"];
            if bias {
                spec.weight("b", rng.tensor(&[m], -1.0, 1.0));
                conv_in.push("b");
            }
            let conv = Op::Conv { strides: [s, s], dilations: [1, 1], pads: [p, p, p, p], group: 1 };
            spec.node("conv", conv, &conv_in, &["h"]);
            let mut last = "h";
            if add {
                let shape = if broadcast { vec![1, m, 1, 1] } else { vec![2, m, oh, ow] };
                spec.input("r", rng.tensor(&shape, -1.0, 1.0));
                let ins = if res_first { ["r", "h"] } else { ["h", "r"] };
                spec.node("add", Op::Binary(BinaryOp::Add), &ins, &["hr"]);
                last = "hr";
            }
            if let Some(u) = act {
                spec.node("act", Op::Unary(u), &[last], &["y"]);
                last = "y";
            }
            spec.output(last);
            for isa in isas() {
                for threads in [1, 2] {
                    let opts = CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, isa, ..Default::default() };
                    let exe = check_with(&spec, Tol { abs: 1e-5 * (c * k * k) as f32, rel: 1e-5 }, &opts);
                    let schedule = exe.schedule_text();
                    let case = format!("{isa}, {threads} threads, {c}→{m} {h}×{w} k{k}/{s} add {add} {act:?}");
                    assert!(schedule.contains("implicit gemm"), "{case}:\n{schedule}");
                    assert_eq!(schedule.contains("in-store"), !broadcast, "{case}:\n{schedule}");
                }
            }
        }
    }
}

/// A generated epilogue (SiLU as exported: Sigmoid then Mul, the sigmoid a map kernel called from
/// the generated code) after dense convs whose units cover whole planes — the channel-tiled path
/// (1², 3², 6², 7²) and a 12² plane in one streamed block, where the executor calls it once for
/// the unit's channels — and after blocks of rows (56², 28² at stride 2): two images, every ISA,
/// 1 and 2 threads. Tolerance as dense_conv_every_tile's (the sigmoid's own error, a few ulps, is
/// far inside it).
#[test]
fn conv_generated_epilogue_whole_planes_and_blocks() {
    // (c, m, h, w, k, stride, pad)
    let cases = [
        (192, 40, 3, 3, 1, 1, 0),
        (7, 33, 1, 1, 1, 1, 0),
        (24, 21, 6, 6, 1, 1, 0),
        (17, 18, 7, 7, 3, 1, 1),
        (16, 29, 12, 12, 1, 1, 0),
        (8, 19, 56, 56, 1, 1, 0),
        (6, 23, 56, 56, 3, 2, 1),
    ];
    for (c, m, h, w, k, s, p) in cases {
        let mut rng = XRng((c * 100 + m + h) as u64);
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&[2, c, h, w], -1.0, 1.0))
            .weight("w", rng.tensor(&[m, c, k, k], -1.0, 1.0))
            .weight("b", rng.tensor(&[m], -1.0, 1.0))
            .node(
                "conv",
                Op::Conv { strides: [s, s], dilations: [1, 1], pads: [p, p, p, p], group: 1 },
                &["x", "w", "b"],
                &["h"],
            )
            .node("sig", Op::Unary(UnaryOp::Sigmoid), &["h"], &["g"])
            .node("silu", Op::Binary(BinaryOp::Mul), &["h", "g"], &["y"])
            .output("y");
        for isa in isas() {
            for threads in [1, 2] {
                let opts = CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, isa, ..Default::default() };
                let exe = check_with(&spec, Tol { abs: 1e-5 * (c * k * k) as f32, rel: 1e-5 }, &opts);
                let schedule = exe.schedule_text();
                let case = format!("{isa}, {threads} threads, {c}→{m} {h}×{w} k{k}/{s}");
                assert!(schedule.contains("implicit gemm"), "{case}:\n{schedule}");
                assert!(schedule.contains("epilogue") && !schedule.contains("in-store"), "{case}:\n{schedule}");
                assert_eq!(schedule.lines().count(), 1, "{case}:\n{schedule}");
            }
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
