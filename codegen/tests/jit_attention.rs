//! Blocked attention (one plan step per Attention op: per block of query rows, the score block,
//! bias, softmax and ·V in a per-thread scratch slot) against the reference interpreter.
//!
//! Shapes: Lq and Lk not multiples of 4, Lq below, at and above the block size (the block is
//! 2¹⁶/Lk rows rounded down to a multiple of 8, so Lk in the thousands gives blocks of a few rows
//! and several blocks with a ragged last one), size-1 dims everywhere, batch axes of Q, Kt and V
//! broadcast independently, a 1-D V, and every broadcast form of the bias (any trailing subset of
//! the scores' axes, each possibly 1), with additive values and −∞ / −1e9 mask entries.
//!
//! Tolerance: |jit − ref| ≤ 1e-5 + 1e-5·|ref| (the existing attention test's), plus
//! 2⁻²⁴·√Lk·8 absolute for long rows. The reference sums the softmax in f64; the JIT sums both the
//! softmax denominator and the Lk-term ·V dot products in f32, whose rounding error on random data
//! grows like √Lk·2⁻²⁴ relative to Σ|p·v| ≤ max|v| = 1 (8× margin).

mod common;

use common::*;
use kiln_codegen::{CodegenOptions, SoftmaxAlgo};
use kiln_ir::{Op, Tensor, TensorData};
use proptest::prelude::*;

fn cfg() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn tol(lk: usize) -> Tol {
    Tol { abs: 1e-5 + 8.0 * (lk as f32).sqrt() / (1u32 << 24) as f32, rel: 1e-5 }
}

fn opts(threads: usize, softmax: SoftmaxAlgo) -> CodegenOptions {
    CodegenOptions { threads, softmax, ..Default::default() }
}

/// The block softmax runs on the AVX2 row kernel where the ISA has it and as generated code
/// otherwise: both, for the tests of its special values.
const ISAS: [kiln_codegen::Isa; 2] = [kiln_codegen::Isa::Generic, kiln_codegen::Isa::Avx2Fma];

fn isa_opts(threads: usize, softmax: SoftmaxAlgo, isa: kiln_codegen::Isa) -> CodegenOptions {
    CodegenOptions { isa: kiln_codegen::Isa::supported(isa), ..opts(threads, softmax) }
}

/// A shape that broadcasts to `s`: some trailing dims kept, each kept dim possibly set to 1.
fn broadcast_of(s: &[usize], rng: &mut XRng) -> Vec<usize> {
    let keep = (rng.next() % (s.len() as u64 + 1)) as usize;
    s[s.len() - keep..].iter().map(|&d| if rng.next().is_multiple_of(3) { 1 } else { d }).collect()
}

/// Bias values for `shape`: uniform in [−3, 3), and when `mask` is set, −∞ or −1e9 at random
/// entries except the first key column (so no row is masked entirely: both would agree on NaN or
/// uniform rows differently, which is the softmax's business, not this step's).
fn bias_tensor(shape: &[usize], mask: bool, rng: &mut XRng) -> Tensor {
    let cols = *shape.last().unwrap_or(&1);
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| {
            let x = rng.f32(-3.0, 3.0);
            let r = rng.next() % 8;
            if mask && cols > 1 && i % cols != 0 && r < 2 { if r == 0 { f32::NEG_INFINITY } else { -1e9 } } else { x }
        })
        .collect();
    Tensor::from_f32(shape.to_vec(), v).unwrap()
}

/// Key counts: small (one block covers everything), or thousands (blocks of 24, 16, 8 or 5–7
/// rows, so that Lq from 1 to 40 falls below, on and above block boundaries).
fn lk_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..12, 2049usize..2200, 3900usize..4200, 8193usize..8400, 9400usize..12000]
}

#[allow(clippy::too_many_arguments)]
fn attention_spec(
    batch: &[usize],
    lq: usize,
    lk: usize,
    d: usize,
    dv: usize,
    v_1d: bool,
    bias_form: u8,
    scale: f32,
    rng: &mut XRng,
) -> Spec {
    let qb = broadcast_of(batch, rng);
    let kb = broadcast_of(batch, rng);
    let vb = broadcast_of(batch, rng);
    let cat = |b: &[usize], tail: [usize; 2]| b.iter().copied().chain(tail).collect::<Vec<_>>();
    let mut spec = Spec::new();
    spec.input("q", rng.tensor(&cat(&qb, [lq, d]), -1.0, 1.0)).input("kt", rng.tensor(&cat(&kb, [d, lk]), -1.0, 1.0));
    if v_1d {
        spec.weight("v", rng.tensor(&[lk], -1.0, 1.0));
    } else {
        spec.weight("v", rng.tensor(&cat(&vb, [lk, dv]), -1.0, 1.0));
    }
    let mut ins = vec!["q", "kt", "v"];
    if bias_form > 0 {
        // Scores are [broadcast(qb, kb)…, lq, lk]; the bias is any broadcast form of that.
        let sb = kiln_ir::ops::broadcast::broadcast_shapes(&qb, &kb).unwrap();
        let bs = broadcast_of(&cat(&sb, [lq, lk]), rng);
        spec.input("bias", bias_tensor(&bs, bias_form == 2, rng));
        ins.push("bias");
    }
    spec.node("att", Op::Attention { scale, nan_to_zero: false }, &ins, &["y"]).output("y");
    spec
}

proptest! {
    #![proptest_config(cfg())]

    /// Every shape form against the interpreter, at 1 and 2 threads and both softmax algorithms;
    /// always one plan step.
    #[test]
    fn blocked_attention_matches_interpreter(
        batch in prop::collection::vec(1usize..4, 0..3), lq in 1usize..41, lk in lk_strategy(), d in 1usize..10,
        dv in 1usize..10, v_1d in any::<bool>(), bias_form in 0u8..3, seed in any::<u64>(), threads in 1usize..3,
        three_pass in any::<bool>(), generic in any::<bool>(),
    ) {
        // Keep the interpreter's work bounded for long rows.
        let batch: Vec<usize> = if lk > 12 { batch.into_iter().take(1).map(|b| b.min(2)).collect() } else { batch };
        let mut rng = XRng(seed | 1);
        let spec = attention_spec(&batch, lq, lk, d, dv, v_1d, bias_form, 0.35, &mut rng);
        let algo = if three_pass { SoftmaxAlgo::ThreePass } else { SoftmaxAlgo::TwoPass };
        let isa = if generic { kiln_codegen::Isa::Generic } else { kiln_codegen::Isa::Avx2Fma };
        let exe = check_with(&spec, tol(lk), &isa_opts(threads, algo, isa));
        prop_assert_eq!(steps(&exe), 1, "{}", exe.schedule_text());
        prop_assert!(exe.schedule_text().contains("attention ("), "{}", exe.schedule_text());
    }
}

/// Bitwise equal outputs at 1, 2 and 3 threads and over repeated runs: each (batch, block) unit
/// is computed the same way whichever thread runs it.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = XRng(0x5eed);
    // 3 batches × 6 blocks of 8 rows (+ a ragged 7th): more units than threads, unevenly split.
    let spec = attention_spec(&[3], 53, 5003, 7, 5, false, 1, 0.125, &mut rng);
    let (g, w) = spec.build();
    let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
    let mut outs: Vec<Vec<f32>> = Vec::new();
    for threads in [1, 2, 3, 2] {
        let exe = kiln_codegen::compile(&g, &w, &opts(threads, SoftmaxAlgo::TwoPass)).unwrap();
        for _ in 0..2 {
            let y = exe.run(&ins).unwrap().remove(0);
            let TensorData::F32(v) = y.data() else { panic!("f32 output") };
            outs.push(v.clone());
        }
    }
    for o in &outs[1..] {
        assert!(o.iter().zip(&outs[0]).all(|(a, b)| a.to_bits() == b.to_bits()), "outputs differ across runs");
    }
    check_with(&spec, tol(5003), &opts(2, SoftmaxAlgo::TwoPass));
}

/// Chunk-causal masking (query i sees keys of chunks up to its own, as streaming models build
/// it), long enough that the mask changes inside and across blocks.
#[test]
fn chunk_causal_mask() {
    let (lq, lk, chunk) = (45, 4099, 300);
    let mut rng = XRng(7);
    let mask: Vec<f32> = (0..lq * lk)
        .map(|i| {
            let (r, c) = (i / lk, i % lk);
            if c / chunk <= (r * lk / lq) / chunk { 0.0 } else { f32::NEG_INFINITY }
        })
        .collect();
    let mut spec = Spec::new();
    spec.input("q", rng.tensor(&[2, lq, 16], -1.0, 1.0))
        .input("kt", rng.tensor(&[2, 16, lk], -1.0, 1.0))
        .input("v", rng.tensor(&[2, lk, 8], -1.0, 1.0))
        .weight("mask", Tensor::from_f32(vec![lq, lk], mask).unwrap())
        .node("att", Op::Attention { scale: 0.25, nan_to_zero: false }, &["q", "kt", "v", "mask"], &["y"])
        .output("y");
    for threads in [1, 2] {
        let exe = check_with(&spec, tol(lk), &opts(threads, SoftmaxAlgo::TwoPass));
        // The plan never holds a full [2, lq, lk] score matrix: the arena is the output plus one
        // [block, lk] slot per thread.
        assert!(exe.memory().arena_bytes < 2 * lq * lk * 4, "{:?}", exe.memory());
    }
}

/// A 1-D Q or Kt makes matmul drop an axis, so the scores' rows are not (batch, query) pairs:
/// these keep the unblocked four-step plan and still match.
#[test]
fn vector_q_or_kt_keeps_the_unblocked_plan() {
    let mut rng = XRng(11);
    let mut spec = Spec::new();
    spec.input("q", rng.tensor(&[6], -1.0, 1.0))
        .input("kt", rng.tensor(&[3, 6, 5], -1.0, 1.0))
        .input("v", rng.tensor(&[5, 4], -1.0, 1.0))
        .input("bias", rng.tensor(&[5], -1.0, 1.0))
        .node("att", Op::Attention { scale: 0.5, nan_to_zero: false }, &["q", "kt", "v", "bias"], &["y"])
        .output("y");
    let exe = check_with(&spec, tol(5), &opts(2, SoftmaxAlgo::TwoPass));
    assert_eq!(steps(&exe), 4, "{}", exe.schedule_text());
    let mut spec = Spec::new();
    spec.input("q", rng.tensor(&[2, 7, 6], -1.0, 1.0))
        .input("kt", rng.tensor(&[6], -1.0, 1.0))
        .input("v", rng.tensor(&[7, 3], -1.0, 1.0))
        .node("att", Op::Attention { scale: 0.5, nan_to_zero: false }, &["q", "kt", "v"], &["y"])
        .output("y");
    let exe = check_with(&spec, tol(7), &opts(1, SoftmaxAlgo::TwoPass));
    assert_eq!(steps(&exe), 4, "{}", exe.schedule_text());
}

/// A fully masked query row (bias −∞ on every key) behaves as the chosen softmax algorithm does
/// on the unfused graph: uniform weights (the mean of V's rows) with TwoPass, NaN with ThreePass
/// (as the reference). The block holding that row also holds ordinary rows, which must match.
#[test]
fn fully_masked_rows_follow_the_softmax_algorithm() {
    let (lq, lk, d, dv) = (20, 3001, 4, 3);
    let mut rng = XRng(3);
    let mut b = rng.tensor(&[lq, lk], -1.0, 1.0).as_f32().unwrap().to_vec();
    b[5 * lk..6 * lk].fill(f32::NEG_INFINITY);
    let bias = Tensor::from_f32(vec![lq, lk], b).unwrap();
    let (q, kt, v) =
        (rng.tensor(&[lq, d], -1.0, 1.0), rng.tensor(&[d, lk], -1.0, 1.0), rng.tensor(&[lk, dv], -1.0, 1.0));
    let mut fused = Spec::new();
    fused
        .input("q", q.clone())
        .input("kt", kt.clone())
        .input("v", v.clone())
        .input("bias", bias.clone())
        .node("att", Op::Attention { scale: 0.5, nan_to_zero: false }, &["q", "kt", "v", "bias"], &["y"])
        .output("y");
    let mut plain = Spec::new();
    plain
        .input("q", q)
        .input("kt", kt)
        .input("v", v)
        .input("bias", bias)
        .weight("s", Tensor::scalar_f32(0.5))
        .node("qk", Op::MatMul, &["q", "kt"], &["qk"])
        .node("sc", Op::Binary(kiln_ir::BinaryOp::Mul), &["qk", "s"], &["sc"])
        .node("add", Op::Binary(kiln_ir::BinaryOp::Add), &["sc", "bias"], &["sb"])
        .node("sm", Op::Softmax { axis: -1 }, &["sb"], &["p"])
        .node("pv", Op::MatMul, &["p", "v"], &["y"])
        .output("y");
    for (algo, isa) in [SoftmaxAlgo::TwoPass, SoftmaxAlgo::ThreePass].into_iter().flat_map(|a| ISAS.map(|i| (a, i))) {
        let run = |spec: &Spec| {
            let exe = compile_spec(spec, &isa_opts(2, algo, isa));
            let (g, _) = spec.build();
            let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
            exe.run(&ins).unwrap().remove(0)
        };
        let (got, want) = (run(&fused), run(&plain));
        let (TensorData::F32(g), TensorData::F32(w)) = (got.data(), want.data()) else { panic!("f32 outputs") };
        for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
            let masked = i / dv == 5;
            if masked && algo == SoftmaxAlgo::ThreePass {
                assert!(a.is_nan() && b.is_nan(), "{algo:?} {isa} [{i}]: {a} vs {b}");
            } else {
                let close = a.is_finite() && (a - b).abs() <= tol(lk).abs + 1e-5 * b.abs();
                assert!(close, "{algo:?} {isa} [{i}]: {a} vs {b}");
            }
        }
    }
}

/// A NaN score makes its whole query row NaN, as in the reference, wherever it sits in the row
/// (first key, a middle key, the scalar tail) and under both softmax algorithms; other rows of
/// the same block are unaffected.
#[test]
fn nan_scores_poison_their_row_only() {
    let (lq, lk) = (19, 2503);
    let mut rng = XRng(5);
    let mut b = rng.tensor(&[lq, lk], -1.0, 1.0).as_f32().unwrap().to_vec();
    for (row, col) in [(0, 0), (3, 1200), (17, lk - 1)] {
        b[row * lk + col] = f32::NAN;
    }
    let mut spec = Spec::new();
    spec.input("q", rng.tensor(&[2, lq, 6], -1.0, 1.0))
        .input("kt", rng.tensor(&[2, 6, lk], -1.0, 1.0))
        .weight("v", rng.tensor(&[lk, 5], -1.0, 1.0))
        .input("bias", Tensor::from_f32(vec![lq, lk], b).unwrap())
        .node("att", Op::Attention { scale: 0.3, nan_to_zero: false }, &["q", "kt", "v", "bias"], &["y"])
        .output("y");
    for algo in [SoftmaxAlgo::TwoPass, SoftmaxAlgo::ThreePass] {
        for isa in ISAS {
            // check_with requires NaN exactly where the reference has NaN.
            check_with(&spec, tol(lk), &isa_opts(2, algo, isa));
        }
    }
}

/// `nan_to_zero` (torch's exported attention, Where(IsNaN(P), 0, P)·V): a fully masked row and a
/// row with a NaN score give zeros, as the reference does; other rows of the block are ordinary.
/// Blocked (3-D Q) and unblocked (1-D Q) plans, at 1 and 2 threads. Not under TwoPass, whose
/// fully masked rows are uniform weights rather than NaN (see the test above), so that the guard
/// never fires there, fused or not.
#[test]
fn nan_to_zero_gives_zero_rows_where_the_probabilities_are_nan() {
    let (lq, lk) = (9, 37);
    let mut rng = XRng(21);
    let mut b = rng.tensor(&[lq, lk], -1.0, 1.0).as_f32().unwrap().to_vec();
    b[2 * lk..3 * lk].fill(f32::NEG_INFINITY);
    b[6 * lk + 11] = f32::NAN;
    let bias = Tensor::from_f32(vec![lq, lk], b).unwrap();
    let mut spec = Spec::new();
    spec.input("q", rng.tensor(&[2, lq, 6], -1.0, 1.0))
        .input("kt", rng.tensor(&[2, 6, lk], -1.0, 1.0))
        .input("v", rng.tensor(&[2, lk, 5], -1.0, 1.0))
        .input("bias", bias)
        .node("att", Op::Attention { scale: 0.5, nan_to_zero: true }, &["q", "kt", "v", "bias"], &["y"])
        .output("y");
    let mut vector = Spec::new();
    let mut b1 = rng.tensor(&[lk], -1.0, 1.0).as_f32().unwrap().to_vec();
    b1.fill(f32::NEG_INFINITY);
    vector
        .input("q", rng.tensor(&[6], -1.0, 1.0))
        .input("kt", rng.tensor(&[3, 6, lk], -1.0, 1.0))
        .input("v", rng.tensor(&[lk, 4], -1.0, 1.0))
        .input("bias", Tensor::from_f32(vec![lk], b1).unwrap())
        .node("att", Op::Attention { scale: 0.5, nan_to_zero: true }, &["q", "kt", "v", "bias"], &["y"])
        .output("y");
    for algo in [SoftmaxAlgo::ThreePass, SoftmaxAlgo::ThreePassStored, SoftmaxAlgo::Simd] {
        for threads in [1, 2] {
            let y = checked_output(&spec, lk, threads, algo);
            for batch in 0..2 {
                for row in [2, 6] {
                    let r = &y[(batch * lq + row) * 5..(batch * lq + row + 1) * 5];
                    assert!(r.iter().all(|&x| x == 0.0), "{algo:?} t{threads} row {row}: {r:?}");
                }
                let ordinary = &y[(batch * lq) * 5..(batch * lq + 1) * 5];
                assert!(ordinary.iter().all(|x| x.is_finite() && *x != 0.0), "{ordinary:?}");
            }
            let exe = check_with(&vector, tol(lk), &opts(threads, algo));
            assert_eq!(steps(&exe), 5, "{}", exe.schedule_text());
        }
    }
}

/// Checks the JIT against the interpreter on `spec`, then runs it again and returns its first
/// output, for assertions on exact values (zeros, NaNs) that the tolerance check does not make.
fn checked_output(spec: &Spec, lk: usize, threads: usize, algo: SoftmaxAlgo) -> Vec<f32> {
    let exe = check_with(spec, tol(lk), &opts(threads, algo));
    let (g, _) = spec.build();
    let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
    let y = exe.run(&ins).unwrap().remove(0);
    y.as_f32().unwrap().to_vec()
}

/// Soak seed 84001289: a row whose probabilities are NaN becomes zeros, and then ·V as the exported
/// graph computes it, so a column of V holding an inf or a NaN gives NaN there (0·inf = NaN), not 0.
#[test]
fn a_zeroed_row_times_a_non_finite_column_of_v_is_nan() {
    let (lq, lk, dv) = (4, 5, 3);
    let mut rng = XRng(84001289);
    let mut b = rng.tensor(&[lq, lk], -1.0, 1.0).as_f32().unwrap().to_vec();
    b[lk..2 * lk].fill(f32::NEG_INFINITY);
    let mut v = rng.tensor(&[lk, dv], -1.0, 1.0).as_f32().unwrap().to_vec();
    v[dv] = f32::NAN; // V[1, 0]
    v[3 * dv + 2] = f32::INFINITY; // V[3, 2]
    let mut spec = Spec::new();
    spec.input("q", rng.tensor(&[lq, 6], -1.0, 1.0))
        .input("kt", rng.tensor(&[6, lk], -1.0, 1.0))
        .input("v", Tensor::from_f32(vec![lk, dv], v).unwrap())
        .input("bias", Tensor::from_f32(vec![lq, lk], b).unwrap())
        .node("att", Op::Attention { scale: 0.5, nan_to_zero: true }, &["q", "kt", "v", "bias"], &["y"])
        .output("y");
    for algo in [SoftmaxAlgo::ThreePass, SoftmaxAlgo::ThreePassStored, SoftmaxAlgo::Simd] {
        for threads in [1, 2] {
            let y = checked_output(&spec, lk, threads, algo);
            let row = &y[dv..2 * dv];
            assert!(row[0].is_nan() && row[1] == 0.0 && row[2].is_nan(), "{algo:?} t{threads}: {row:?}");
        }
    }
}
