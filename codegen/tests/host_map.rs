//! Fused chains that contain an op with a hand-written 8-wide kernel (exp, tanh, sigmoid, SiLU,
//! erf, the GELUs): where the ISA has the kernels, the generated code computes the op's operand
//! into the output, calls the host kernel over a group of rows in place, and finishes the chain
//! reading the op's value back (`kernels::elementwise`, `MapSplit`). Checked against the
//! interpreter at each ISA and thread count, with the cut taken (or not) as expected.

mod common;

use common::*;
use kiln_codegen::{CodegenOptions, Isa};
use kiln_ir::{BinaryOp, Op, Tensor, UnaryOp};

/// Every ISA this CPU has, the portable one first (no host kernel there: the chain stays whole).
fn isas() -> Vec<Isa> {
    [Isa::Generic, Isa::Avx2Fma, Isa::Avx512].into_iter().filter(|&i| Isa::supported(i) == i).collect()
}

/// The transcendental bounds (2e-5 relative, the GELUs' sweep bound) on top of f32 rounding of
/// the cheap ops around them; a GEMM's 16-term f32 sums add 1e-5 absolute.
const TOL: Tol = Tol { abs: 1e-5, rel: 3e-5 };

fn unary(u: UnaryOp) -> Op {
    Op::Unary(u)
}

fn binary(b: BinaryOp) -> Op {
    Op::Binary(b)
}

/// The graphs: (name, spec, whether the chain is cut where the ISA has host kernels).
fn cases() -> Vec<(&'static str, Spec, bool)> {
    let mut rng = XRng(41);
    let mut out = Vec::new();

    // Bias then GELU: the op is the result (nothing after the cut).
    let mut s = Spec::new();
    s.input("x", rng.tensor(&[3, 37], -6.0, 3.0))
        .weight("b", rng.tensor(&[37], -1.0, 1.0))
        .node("add", binary(BinaryOp::Add), &["x", "b"], &["h"])
        .node("g", unary(UnaryOp::Gelu { tanh: false }), &["h"], &["y"])
        .output("y");
    out.push(("bias_gelu", s, true));

    // Graph-transformer attention scores: clamp, exp, times a mask leaf after the cut.
    let mut s = Spec::new();
    s.input("x", rng.tensor(&[5, 130], -8.0, 8.0))
        .input("adj", rng.tensor(&[5, 130], 0.0, 1.0))
        .node("clip", unary(UnaryOp::Clip { min: Some(-5.0), max: Some(5.0) }), &["x"], &["c"])
        .node("exp", unary(UnaryOp::Exp), &["c"], &["e"])
        .node("mask", binary(BinaryOp::Mul), &["e", "adj"], &["y"])
        .output("y");
    out.push(("clamp_exp_mask", s, true));

    // Rows longer than one host call's group (4096 floats): one row per call; a scalar leaf.
    let mut s = Spec::new();
    s.input("x", rng.tensor(&[2, 5003], -3.0, 3.0))
        .weight("k", Tensor::from_f32([1], vec![1.5]).unwrap())
        .weight("c", Tensor::from_f32([1], vec![-0.25]).unwrap())
        .node("scale", binary(BinaryOp::Mul), &["x", "k"], &["h"])
        .node("t", unary(UnaryOp::Tanh), &["h"], &["t"])
        .node("shift", binary(BinaryOp::Add), &["t", "c"], &["y"])
        .output("y");
    out.push(("long_rows_tanh", s, true));

    // Many short rows (585 per call), a per-row broadcast leaf after the cut, and a leaf used on
    // both sides of it.
    let mut s = Spec::new();
    s.input("x", rng.tensor(&[300, 7], -4.0, 4.0))
        .input("r", rng.tensor(&[300, 1], -1.0, 1.0))
        .node("neg", unary(UnaryOp::Neg), &["x"], &["n"])
        .node("sig", unary(UnaryOp::Sigmoid), &["n"], &["s"])
        .node("row", binary(BinaryOp::Mul), &["s", "r"], &["m"])
        .node("again", binary(BinaryOp::Add), &["m", "x"], &["y"])
        .output("y");
    out.push(("short_rows_sigmoid", s, true));

    // x·σ(x) written out: the value before the cut is needed after it, so no cut.
    let mut s = Spec::new();
    s.input("x", rng.tensor(&[4, 19], -5.0, 5.0))
        .weight("b", rng.tensor(&[19], -1.0, 1.0))
        .node("add", binary(BinaryOp::Add), &["x", "b"], &["h"])
        .node("sig", unary(UnaryOp::Sigmoid), &["h"], &["s"])
        .node("silu", binary(BinaryOp::Mul), &["h", "s"], &["y"])
        .output("y");
    out.push(("silu_written_out", s, false));

    // A GEMM epilogue: bias, tanh GELU, a per-column scale.
    let mut s = Spec::new();
    s.input("a", rng.tensor(&[9, 16], -1.0, 1.0))
        .weight("w", rng.tensor(&[16, 33], -1.0, 1.0))
        .weight("b", rng.tensor(&[33], -1.0, 1.0))
        .weight("g", rng.tensor(&[33], -2.0, 2.0))
        .node("mm", Op::MatMul, &["a", "w"], &["h"])
        .node("add", binary(BinaryOp::Add), &["h", "b"], &["hb"])
        .node("act", unary(UnaryOp::Gelu { tanh: true }), &["hb"], &["a2"])
        .node("scale", binary(BinaryOp::Mul), &["a2", "g"], &["y"])
        .output("y");
    out.push(("gemm_epilogue_gelu_tanh", s, true));

    // Leaves that share the output's buffer (written in place) must not be read after the cut:
    // the kernel has overwritten them by then. Difftest seeds 103000521 (a dead Softmax result
    // read on both sides of an Exp: got 2e for e + 1), 103004411 (a GEMM epilogue reading the GEMM
    // output after a Gelu) and 103001451 (a bool input, converted into a buffer the Where writes
    // over, read as the condition after the cut) — each failed before the cut knew of aliasing.
    let mut s = Spec::new();
    s.input("x", rng.tensor(&[3, 5], -2.0, 2.0))
        .node("sm", Op::Softmax { axis: -2 }, &["x"], &["p"])
        .node("exp", unary(UnaryOp::Exp), &["p"], &["e"])
        .node("add", binary(BinaryOp::Add), &["p", "e"], &["y"])
        .output("y");
    out.push(("in_place_leaf_after_the_cut", s, false));
    let mut s = Spec::new();
    s.input("a", rng.tensor(&[1, 1, 7], -1.0, 1.0))
        .input("b", rng.tensor(&[1, 7, 1], -1.0, 1.0))
        .node("mm", Op::MatMul, &["a", "b"], &["h"])
        .node("g", unary(UnaryOp::Gelu { tanh: false }), &["h"], &["gh"])
        .node("mul", binary(BinaryOp::Mul), &["gh", "h"], &["y"])
        .output("y");
    out.push(("epilogue_reads_the_gemm_output_after_the_cut", s, false));
    let mut s = Spec::new();
    s.input("x", Tensor::from_f32([2], vec![0.0, -1.0]).unwrap())
        .input("c", Tensor::from_bool([2], vec![true, false]).unwrap())
        .weight("w", Tensor::from_f32([], vec![1.0]).unwrap())
        .node("g", unary(UnaryOp::Gelu { tanh: false }), &["x"], &["gx"])
        .node("where", Op::Where, &["c", "gx", "w"], &["y"])
        .output("y");
    out.push(("bool_condition_in_the_output_buffer", s, false));

    // The host kernel's own input stage (`MapPre`: a Mul by a constant, an Add or Sub of one, a
    // Clip, in that order, on a dense leaf): no generated pass before the call. NaN, ±inf and ±0
    // among the inputs: the stage keeps NaN and −0 as the generated Clip does.
    // Graph-transformer scores: ×0.25, clamp, exp, times a mask broadcast over the heads.
    let mut s = Spec::new();
    s.input("x", specials(rng.tensor(&[2, 3, 131], -40.0, 40.0)))
        .input("adj", rng.tensor(&[3, 131], 0.0, 1.0))
        .weight("k", Tensor::from_f32([], vec![0.25]).unwrap())
        .node("scale", binary(BinaryOp::Mul), &["x", "k"], &["s"])
        .node("clip", unary(UnaryOp::Clip { min: Some(-5.0), max: Some(5.0) }), &["s"], &["c"])
        .node("exp", unary(UnaryOp::Exp), &["c"], &["e"])
        .node("mask", binary(BinaryOp::Mul), &["e", "adj"], &["y"])
        .output("y");
    out.push(("pre_scaled_clamped_exp_mask", s, true));
    // The same as a GEMM's epilogue (the leaf is the GEMM's output, written in place).
    let mut s = Spec::new();
    s.input("q", rng.tensor(&[2, 5, 16], -2.0, 2.0))
        .input("kt", rng.tensor(&[2, 16, 37], -2.0, 2.0))
        .input("adj", rng.tensor(&[5, 37], 0.0, 1.0))
        .weight("k", Tensor::from_f32([], vec![0.25]).unwrap())
        .node("qk", Op::MatMul, &["q", "kt"], &["qk"])
        .node("scale", binary(BinaryOp::Mul), &["k", "qk"], &["s"])
        .node("clip", unary(UnaryOp::Clip { min: Some(-5.0), max: Some(5.0) }), &["s"], &["c"])
        .node("exp", unary(UnaryOp::Exp), &["c"], &["e"])
        .node("mask", binary(BinaryOp::Mul), &["e", "adj"], &["y"])
        .output("y");
    out.push(("pre_gemm_scores_epilogue", s, true));
    // Ragged lengths 1–3 and 8·k ± 1: a shift (Sub) then tanh, a shift (Add, constant first)
    // then SiLU, a lower-only Clip then sigmoid times a second leaf (a squeeze-excite gate).
    for (n, shape) in [(1, vec![1]), (2, vec![2, 1]), (3, vec![1, 3]), (4, vec![3, 257]), (5, vec![1, 511])] {
        let len: usize = shape.iter().product();
        let x = specials(rng.tensor(&shape, -9.0, 9.0));
        let mut s = Spec::new();
        match n % 3 {
            0 => {
                s.input("x", x)
                    .weight("c", Tensor::from_f32([1], vec![0.75]).unwrap())
                    .node("sub", binary(BinaryOp::Sub), &["x", "c"], &["h"])
                    .node("t", unary(UnaryOp::Tanh), &["h"], &["y"]);
            }
            1 => {
                s.input("x", x)
                    .weight("c", Tensor::from_f32([1], vec![-1.5]).unwrap())
                    .weight("k", Tensor::from_f32([1], vec![3.0]).unwrap())
                    .node("mul", binary(BinaryOp::Mul), &["x", "k"], &["m"])
                    .node("add", binary(BinaryOp::Add), &["c", "m"], &["h"])
                    .node("t", unary(UnaryOp::Silu), &["h"], &["y"]);
            }
            _ => {
                s.input("x", x)
                    .input("g", rng.tensor(&shape, -2.0, 2.0))
                    .node("clip", unary(UnaryOp::Clip { min: Some(-3.0), max: None }), &["x"], &["c"])
                    .node("sig", unary(UnaryOp::Sigmoid), &["c"], &["sg"])
                    .node("gate", binary(BinaryOp::Mul), &["g", "sg"], &["y"]);
            }
        }
        s.output("y");
        let name: &'static str = Box::leak(format!("pre_ragged_{len}").into_boxed_str());
        out.push((name, s, true));
    }
    // Stages out of order (Clip before the Mul): no `MapPre`, the generated pass runs first.
    let mut s = Spec::new();
    s.input("x", specials(rng.tensor(&[3, 11], -9.0, 9.0)))
        .weight("k", Tensor::from_f32([], vec![0.5]).unwrap())
        .node("clip", unary(UnaryOp::Clip { min: Some(-5.0), max: Some(5.0) }), &["x"], &["c"])
        .node("scale", binary(BinaryOp::Mul), &["c", "k"], &["s"])
        .node("exp", unary(UnaryOp::Exp), &["s"], &["y"])
        .output("y");
    out.push(("clip_then_scale_generated_before", s, true));
    out
}

/// `t` with NaN, ±inf and ±0 written over its first elements (as many as it has).
fn specials(t: Tensor) -> Tensor {
    let shape = t.ty().shape.clone();
    let mut v = t.as_f32().unwrap().to_vec();
    for (x, s) in v.iter_mut().zip([f32::NAN, f32::INFINITY, -0.0, f32::NEG_INFINITY, 0.0, -f32::NAN]) {
        *x = s;
    }
    Tensor::from_f32(shape, v).unwrap()
}

/// A chain that is only the stage and the op (`x·c → exp`, the result) runs as the host call
/// alone where the ISA has the kernels: the kernel has no generated 128-bit loop left (no
/// `f32x4` value in its CLIF) — before `MapPre` it computed x·c into the output first.
#[test]
fn a_pre_stage_chain_is_one_host_call() {
    let mut rng = XRng(7);
    let mut s = Spec::new();
    s.input("x", rng.tensor(&[4, 300], -3.0, 3.0))
        .weight("k", Tensor::from_f32([], vec![0.125]).unwrap())
        .node("scale", binary(BinaryOp::Mul), &["x", "k"], &["s"])
        .node("exp", unary(UnaryOp::Exp), &["s"], &["y"])
        .output("y");
    for isa in isas() {
        let opts = CodegenOptions { isa, keep_clif: true, ..options(1) };
        check_with(&s, TOL, &opts);
        let exe = compile_spec(&s, &opts);
        let clif = exe.clif_text();
        let calls = clif.iter().any(|(_, text)| text.contains("call_indirect"));
        let vector = clif.iter().any(|(_, text)| text.contains("f32x4"));
        assert_eq!(calls, isa >= Isa::Avx2Fma, "{isa:?}: host call {calls}");
        assert_eq!(vector, isa < Isa::Avx2Fma, "{isa:?}: generated vector loop {vector}");
    }
}

#[test]
fn chains_cut_at_a_map_op_match_the_interpreter() {
    for (name, spec, _) in cases() {
        for isa in isas() {
            for threads in [1, 2] {
                let opts = CodegenOptions { isa, ..options(threads) };
                eprintln!("{name} {isa:?} {threads} thread(s)");
                check_with(&spec, TOL, &opts);
            }
        }
    }
}

/// The cut is taken exactly where the ISA has the host kernels and the chain allows it: some
/// kernel's CLIF calls out (`call_indirect`) — and none does at the portable ISA or for a chain
/// that cannot be cut.
#[test]
fn the_cut_is_taken_where_the_isa_has_host_kernels() {
    for (name, spec, cut) in cases() {
        for isa in isas() {
            let opts = CodegenOptions { isa, keep_clif: true, ..options(1) };
            let exe = compile_spec(&spec, &opts);
            let calls = exe.clif_text().iter().any(|(_, text)| text.contains("call_indirect"));
            let want = cut && isa >= Isa::Avx2Fma;
            assert_eq!(calls, want, "{name} at {isa:?}: host call {calls}, expected {want}");
        }
    }
}

/// A squeeze-excite block: x·σ(s) with one s per channel. The Sigmoid runs on its own over the
/// 16 values, not once per output element inside the Mul's loop (where the group would
/// broadcast it 81 times over); a Sigmoid of the full-size operand stays in the group.
#[test]
fn a_broadcast_transcendental_runs_once_per_value() {
    let mut rng = XRng(43);
    let mut s = Spec::new();
    s.input("x", rng.tensor(&[1, 16, 9, 9], -3.0, 3.0))
        .input("s", rng.tensor(&[1, 16, 1, 1], -6.0, 6.0))
        .node("sig", unary(UnaryOp::Sigmoid), &["s"], &["g"])
        .node("scale", binary(BinaryOp::Mul), &["x", "g"], &["y"])
        .node("sig2", unary(UnaryOp::Sigmoid), &["y"], &["z"])
        .node("mul2", binary(BinaryOp::Mul), &["z", "x"], &["w"])
        .output("w");
    for isa in isas() {
        for threads in [1, 2] {
            let opts = CodegenOptions { isa, ..options(threads) };
            let exe = check_with(&s, TOL, &opts);
            let text = exe.schedule_text();
            assert!(text.contains("Sigmoid over 16 ("), "{isa:?}:\n{text}");
            assert_eq!(text.lines().count(), 2, "{isa:?}: the rest is one fused group\n{text}");
        }
    }
}
