//! Regression tests for defects found by differential testing (issue 11), each named after the
//! issue and failing before its fix.

mod common;

use common::*;
use kiln_codegen::compile;
use kiln_ir::{BinaryOp, Op, Tensor, UnaryOp};
use std::time::Instant;

/// Tolerance of a MatMul with k-term f32 sums against the f64-accumulating reference.
fn gemm_tol(k: usize) -> Tol {
    Tol { abs: 1e-6 * k as f32, rel: 1e-5 }
}

/// `a @ b + bias`, then Relu: a fused elementwise group right after a MatMul, the pattern the
/// GEMM epilogue takes.
fn matmul_bias_relu(a: &[usize], b: &[usize], seed: u64) -> Spec {
    let mut rng = XRng(seed);
    let out = matmul_shape(a, b);
    let bias: Vec<usize> = out.last().map(|&d| vec![d]).unwrap_or_default();
    let mut spec = Spec::new();
    spec.input("a", rng.tensor(a, -1.0, 1.0))
        .weight("b", rng.tensor(b, -1.0, 1.0))
        .weight("bias", rng.tensor(&bias, -1.0, 1.0))
        .node("mm", Op::MatMul, &["a", "b"], &["h"])
        .node("add", Op::Binary(BinaryOp::Add), &["h", "bias"], &["hb"])
        .node("act", Op::Unary(UnaryOp::Relu), &["hb"], &["y"])
        .output("y");
    spec
}

/// numpy matmul's output shape (1-D operands promoted, then the unit axis dropped).
fn matmul_shape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let a2 = if a.len() == 1 { vec![1, a[0]] } else { a.to_vec() };
    let b2 = if b.len() == 1 { vec![b[0], 1] } else { b.to_vec() };
    let (ba, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let mut batch = kiln_ir::ops::broadcast::broadcast_shapes(ba, bb).unwrap();
    if a.len() > 1 {
        batch.push(a2[a2.len() - 2]);
    }
    if b.len() > 1 {
        batch.push(b2[b2.len() - 1]);
    }
    batch
}

/// Issue 11: `[2,4,6] @ [6]` + bias: the epilogue ran over rows of the output's last axis (4)
/// while the GEMM's rows have n = 1, writing past the output (heap corruption) or leaving rows
/// without the bias. Every 1-D and broadcast form, at 1 and 2 threads, and with a GEMM large
/// enough to be split across the pool.
#[test]
fn issue11_matmul_with_1d_operand_and_fused_epilogue() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[2, 4, 6], &[6]),
        (&[4, 6], &[6]),
        (&[3, 1, 5, 7], &[7]),
        (&[6], &[2, 6, 4]),
        (&[6], &[6, 4]),
        (&[6], &[6]),
        (&[2, 1, 4, 6], &[3, 6, 5]),
        (&[4, 6], &[3, 6, 5]),
        (&[2, 5, 6], &[6, 1]),
        (&[2, 512, 512], &[512]),
        (&[512], &[4, 512, 256]),
        (&[3, 1, 200, 300], &[2, 300, 200]),
    ];
    for (i, &(a, b)) in cases.iter().enumerate() {
        let spec = matmul_bias_relu(a, b, 7 + i as u64);
        for threads in [1, 2] {
            let exe = check_with(&spec, gemm_tol(*a.last().unwrap()), &options(threads));
            let schedule = exe.schedule_text();
            // The epilogue is kept where its rows are the GEMM's (the output's last axis is n)
            // and refused where a 1-D second operand dropped n = 1.
            let fused_in_gemm = schedule.contains("epilogue");
            let n_is_last = b.len() > 1 && !matmul_shape(a, b).is_empty();
            assert_eq!(fused_in_gemm, n_is_last, "{a:?} @ {b:?}, {threads} threads:\n{schedule}");
        }
    }
}

/// Builds `x → (op_0) → … → (op_{n−1}) → y` over a small tensor, cycling through `ops`.
fn chain(n: usize, ops: &[Op]) -> Spec {
    let mut spec = Spec::new();
    spec.input("x", XRng(3).tensor(&[3, 5], -1.0, 1.0)).weight("c", Tensor::from_f32([5], vec![0.5; 5]).unwrap());
    let names: Vec<String> = (0..=n).map(|i| if i == 0 { "x".to_string() } else { format!("v{i}") }).collect();
    for i in 0..n {
        let op = ops[i % ops.len()].clone();
        let ins: Vec<&str> = match op {
            Op::Binary(_) => vec![&names[i], "c"],
            _ => vec![&names[i]],
        };
        spec.node(&format!("n{i}"), op, &ins, &[&names[i + 1]]);
    }
    spec.output(&names[n]);
    spec
}

/// Compiles `spec`, checks it against the interpreter and returns the compile time in seconds.
fn compile_time(spec: &Spec) -> f64 {
    let (g, w) = spec.build();
    let t = Instant::now();
    let exe = compile(&g, &w, &options(2)).unwrap_or_else(|e| panic!("compile failed: {e}"));
    let secs = t.elapsed().as_secs_f64();
    let want = kiln_ir::eval::run(&g, &w, &spec.inputs).unwrap();
    let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
    let got = exe.run(&ins).unwrap();
    assert_close("chain", &got[0], &want[0].1, Tol { abs: 1e-5, rel: 1e-5 });
    secs
}

/// Issue 11: fusion grouping rescanned each group to a fixed point (quadratic: a 20k-node chain
/// took 42–107 s at -O0). A 100k-node elementwise chain compiles in seconds; the 60 s bound is
/// generous for a loaded debug build on 2 shared cores.
#[test]
fn issue11_long_elementwise_chain_compiles_in_seconds() {
    let ops =
        [Op::Binary(BinaryOp::Mul), Op::Unary(UnaryOp::Tanh), Op::Binary(BinaryOp::Add), Op::Unary(UnaryOp::Relu)];
    let spec = chain(100_000, &ops);
    let secs = compile_time(&spec);
    eprintln!("100k-node elementwise chain: compiled in {secs:.2} s");
    assert!(secs < 60.0, "a 100k-node elementwise chain took {secs:.1} s to compile");
}

/// The same for a chain that cannot fuse into one kernel: a Transpose (a copy step) between
/// elementwise ops gives one kernel, one buffer and one step per pair, exercising the memory
/// plan, in-place reuse and the per-group member lists at scale.
#[test]
fn issue11_long_chain_of_separate_steps_compiles_in_seconds() {
    let ops = [Op::Unary(UnaryOp::Neg), Op::Transpose { perm: None }];
    let spec = chain(20_000, &ops);
    let secs = compile_time(&spec);
    eprintln!("20k-node chain of separate steps: compiled in {secs:.2} s");
    assert!(secs < 60.0, "a 20k-node chain of separate steps took {secs:.1} s to compile");
}

/// Issue 11: tensors within MAX_ELEMENTS that add up to more than the machine has aborted the
/// process ("memory allocation of … failed"). Under the memory cap the plan is refused at compile
/// time with an error naming the model, the node and the size — before the 16 GiB copy table of
/// an Expand to 2³¹ floats is built — and a plan just above a small cap is refused as a whole.
#[test]
fn issue11_plans_above_the_memory_cap_are_refused_at_compile_time() {
    let mut spec = Spec::new();
    spec.input("x", Tensor::from_f32([1], vec![1.0]).unwrap())
        .node("e1", Op::Expand { shape: vec![1 << 31] }, &["x"], &["e1"])
        .node(
            "s",
            Op::Reduce { kind: kiln_ir::ReduceKind::Sum, axes: None, keepdims: false, noop_with_empty_axes: false },
            &["e1"],
            &["s"],
        )
        .output("s");
    let (g, w) = spec.build();
    let t = Instant::now();
    let err = compile(&g, &w, &options(2)).err().expect("an 8 GiB Expand must be refused").to_string();
    assert!(err.contains("model 't'") && err.contains("node 'e1'") && err.contains("memory cap"), "{err}");
    assert!(t.elapsed().as_secs_f64() < 5.0, "refusing took {:?}", t.elapsed());

    // Each intermediate fits a 64 KiB cap alone, but not all of them at once: refused after
    // planning, with the planned total.
    let mut spec = Spec::new();
    spec.input("x", XRng(5).tensor(&[64, 64], -1.0, 1.0));
    let mut names = vec!["x".to_string()];
    for i in 0..6 {
        names.push(format!("t{i}"));
        spec.node(&format!("t{i}"), Op::Transpose { perm: None }, &[&names[i]], &[&names[i + 1]]);
    }
    for name in &names[1..] {
        spec.output(name);
    }
    let (g, w) = spec.build();
    let small = kiln_codegen::CodegenOptions { memory_cap: 64 << 10, ..options(1) };
    let err = compile(&g, &w, &small).err().expect("6 × 16 KiB outputs exceed 64 KiB").to_string();
    assert!(err.contains("model 't'") && err.contains("planned arena") && err.contains("65536"), "{err}");
    assert!(compile(&g, &w, &options(1)).is_ok());
}

/// Soak seed 121007484: Elu of −1e-39 was α·(e^x − 1) = 0 in f32 where the interpreter's
/// α·expm1(x) is −3e-40, and a following MatMul with an ∞ weight made that NaN against −∞. Elu,
/// Celu and Selu must be relative-accurate near 0 from below: tiny and subnormal negatives, and
/// across the switch between the series and e^x − 1 (|x| = 0.5), alone and as a MatMul
/// epilogue. Tolerance 1e-6 relative (the series is within 1e-9; e^x − 1 beyond 0.5 within
/// 2.6× the exponential's 1.5e-7), subnormal results within 2 ulps.
#[test]
fn elu_family_is_relative_accurate_near_zero() {
    let xs: Vec<f32> = vec![-1e-39, -1.4e-45, -1e-30, -1e-10, -1e-6, -1e-3, -0.1, -0.49, -0.5, -0.51, -0.9, -3.0, -0.0];
    let n = xs.len();
    let tol = Tol { abs: 2.0 * 1.4e-45, rel: 1e-6 };
    for op in [
        UnaryOp::Elu { alpha: 0.3 },
        UnaryOp::Celu { alpha: 1.7 },
        UnaryOp::Selu { alpha: 1.673_263_2, gamma: 1.050_701 },
    ] {
        let x = Tensor::from_f32([1, n], xs.clone()).unwrap();
        let mut alone = Spec::new();
        alone.input("x", x.clone()).node("e", Op::Unary(op), &["x"], &["y"]).output("y");
        check(&alone, tol);
        // [1, n] @ identity: the GEMM reproduces x exactly, the epilogue applies the op.
        let eye: Vec<f32> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
        let mut epi = Spec::new();
        epi.input("x", x)
            .weight("w", Tensor::from_f32([n, n], eye).unwrap())
            .node("mm", Op::MatMul, &["x", "w"], &["h"])
            .node("e", Op::Unary(op), &["h"], &["y"])
            .output("y");
        check(&epi, tol);
    }
}

/// Difftest seed 97005613: Gelu(−9.3) was −0 in the JIT and −6.5e-20 in the interpreter, and a
/// following ×(−∞) turned that into NaN against +∞. ½x·(1 + erf(x/√2)) cancels in f32 (17% off at
/// x = −5, 0 below −5.5), and 1 + tanh the same for the tanh form. Both GELUs, on their own (the
/// hand-written map kernel), inside a fused chain (the generated code) and as a GEMM epilogue, must
/// be relative-accurate down to the tail's underflow.
#[test]
fn gelu_negative_tail_is_relative_accurate() {
    let tail: Vec<f32> = (0..64).map(|i| -4.0 - i as f32 * 0.15).collect();
    let n = tail.len();
    // 2e-5: the tanh form's sweep bound (math_tests::gelu_sweeps); the erf form is within 1e-6.
    // Subnormal results carry that relative error of f32::MIN_POSITIVE as an absolute one.
    let tol = Tol { abs: 2e-5 * f32::MIN_POSITIVE, rel: 2e-5 };
    for tanh in [false, true] {
        let gelu = Op::Unary(UnaryOp::Gelu { tanh });
        let x = Tensor::from_f32([1, n], tail.clone()).unwrap();
        let mut alone = Spec::new();
        alone.input("x", x.clone()).node("g", gelu.clone(), &["x"], &["y"]).output("y");
        check(&alone, tol);
        let mut chain = Spec::new();
        chain
            .input("x", x.clone())
            .weight("s", Tensor::from_f32([1], vec![-3.0]).unwrap())
            .node("g", gelu.clone(), &["x"], &["h"])
            .node("m", Op::Binary(BinaryOp::Mul), &["h", "s"], &["y"])
            .output("y");
        check(&chain, tol);
        // [1, n] @ identity: the GEMM reproduces x exactly, the epilogue applies Gelu.
        let eye: Vec<f32> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
        let mut epi = Spec::new();
        epi.input("x", x)
            .weight("w", Tensor::from_f32([n, n], eye).unwrap())
            .node("mm", Op::MatMul, &["x", "w"], &["h"])
            .node("g", gelu, &["h"], &["y"])
            .output("y");
        check(&epi, tol);
    }
}
