//! The attention kernel's QKᵀ on kiln's micro-kernels with Kt packed once per head (heads of
//! several blocks of query rows, `lower::attention::kt_packed_per_head`), and Q, Kt and V read
//! in place through a transpose that takes no step, against the reference interpreter on every
//! ISA this CPU runs (portable, AVX2+FMA, AVX-512 — whose per-head QKᵀ runs the AVX2 tile), at 1 and
//! 2 threads.
//!
//! Shapes: query counts not multiples of the 6-row tile nor of the block (several blocks per head,
//! a ragged last one), key counts not multiples of the 16-column panel, head dims 1, 7, 16, 32 and
//! 64, blocks under 4 rows and heads of one block (both kept on the crate), batch axes of Q, Kt
//! and V broadcast independently (a Kt shared by several heads), masks with −∞ entries and fully
//! masked rows.
//!
//! Tolerance: |jit − ref| ≤ 1e-5 + 1e-5·|ref| + 2⁻²⁴·√Lk·8 (jit_attention.rs's: the reference sums
//! in f64, the kernels in f32; inputs in [−1, 1), so the d-term scores and the Lk-term ·V sums
//! are rounded to ≲ √n·2⁻²⁴ of magnitudes ≤ d·scale and ≤ 1, with an 8× margin).

mod common;

use common::*;
use kiln_codegen::{CodegenOptions, SoftmaxAlgo};
use kiln_ir::{Op, Tensor, TensorData};

fn tol(lk: usize) -> Tol {
    Tol { abs: 1e-5 + 8.0 * (lk as f32).sqrt() / (1u32 << 24) as f32, rel: 1e-5 }
}

fn opts(threads: usize, softmax: SoftmaxAlgo, isa: kiln_codegen::Isa) -> CodegenOptions {
    CodegenOptions { threads, softmax, isa, ..Default::default() }
}

struct Case {
    qb: &'static [usize],
    kb: &'static [usize],
    vb: &'static [usize],
    lq: usize,
    lk: usize,
    d: usize,
    dv: usize,
    /// 0: no bias; 1: an additive [lq, lk] bias with −∞ entries; 2: as 1 with rows 1 and lq − 1
    /// masked entirely (their probabilities are NaN: `nan_to_zero` writes them as zeros).
    bias: u8,
    scale: f32,
}

const CASES: &[Case] = &[
    // BERT-like heads (d = dv = 64) of 3 blocks (1100 keys: blocks of 56 rows; 130 = 56 + 56 + 18),
    // one Kt for each of the second batch axis' 3 heads, V broadcast over the second axis.
    Case { qb: &[2, 3], kb: &[3], vb: &[2, 1], lq: 130, lk: 1100, d: 64, dv: 64, bias: 1, scale: 0.125 },
    // Ragged everything: blocks of 24 rows (2100 keys), 70 = 24 + 24 + 22, fully masked rows.
    Case { qb: &[2], kb: &[2], vb: &[2], lq: 70, lk: 2100, d: 7, dv: 17, bias: 2, scale: 0.35 },
    // One block per head: the crate.
    Case { qb: &[3], kb: &[1], vb: &[3], lq: 13, lk: 5, d: 16, dv: 16, bias: 0, scale: 1.0 },
    // Head dim 1, blocks of 16 rows (3000 keys).
    Case { qb: &[], kb: &[], vb: &[], lq: 40, lk: 3000, d: 1, dv: 33, bias: 1, scale: 0.5 },
    // Blocks of 3 rows (20000 keys): the crate.
    Case { qb: &[2], kb: &[2], vb: &[2], lq: 7, lk: 20000, d: 5, dv: 3, bias: 2, scale: 0.125 },
    // yoso-like: two heads of 3 blocks of 64 rows (1000 keys), d = 32.
    Case { qb: &[2], kb: &[2], vb: &[1], lq: 150, lk: 1000, d: 32, dv: 40, bias: 2, scale: 0.17677669 },
];

/// Query rows per block, as `lower::attention::attention_block` sizes it (2¹⁶ / lk floats, a
/// multiple of 8 when there is room).
fn block(lq: usize, lk: usize) -> usize {
    let b = ((1 << 16) / lk).max(1);
    (if b >= 8 { b / 8 * 8 } else { b }).min(lq)
}

fn packs_kt(c: &Case) -> bool {
    let b = block(c.lq, c.lk);
    b >= 4 && c.lq > b
}

fn spec_of(c: &Case, rng: &mut XRng) -> Spec {
    let cat = |b: &[usize], tail: [usize; 2]| b.iter().copied().chain(tail).collect::<Vec<_>>();
    let mut spec = Spec::new();
    spec.input("q", rng.tensor(&cat(c.qb, [c.lq, c.d]), -1.0, 1.0))
        .input("kt", rng.tensor(&cat(c.kb, [c.d, c.lk]), -1.0, 1.0))
        .input("v", rng.tensor(&cat(c.vb, [c.lk, c.dv]), -1.0, 1.0));
    let mut ins = vec!["q", "kt", "v"];
    if c.bias > 0 {
        let mut b: Vec<f32> = (0..c.lq * c.lk)
            .map(|i| if i % c.lk != 0 && rng.next().is_multiple_of(5) { f32::NEG_INFINITY } else { rng.f32(-3.0, 3.0) })
            .collect();
        if c.bias == 2 {
            for r in [1, c.lq - 1] {
                b[r * c.lk..(r + 1) * c.lk].fill(f32::NEG_INFINITY);
            }
        }
        spec.input("bias", Tensor::from_f32(vec![c.lq, c.lk], b).unwrap());
        ins.push("bias");
    }
    spec.node("att", Op::Attention { scale: c.scale, nan_to_zero: c.bias == 2 }, &ins, &["y"]).output("y");
    spec
}

/// Every case on every ISA at 1 and 2 threads against the interpreter; the schedule says when Kt
/// is packed per head.
#[test]
fn packed_block_products_match_interpreter() {
    for (i, c) in CASES.iter().enumerate() {
        let spec = spec_of(c, &mut XRng(0x51 + i as u64));
        let (g, w) = spec.build();
        let want = kiln_ir::eval::run(&g, &w, &spec.inputs).unwrap().remove(0).1;
        let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
        // ThreePass for the fully masked rows: NaN probabilities, zeroed as the reference does
        // (TwoPass would give uniform weights there, which the interpreter does not).
        let algo = if c.bias == 2 { SoftmaxAlgo::ThreePass } else { SoftmaxAlgo::TwoPass };
        for isa in isas() {
            for threads in [1, 2] {
                let exe = kiln_codegen::compile(&g, &w, &opts(threads, algo, isa)).unwrap();
                assert_close(
                    &format!("case {i} {isa} {threads}t"),
                    &exe.run(&ins).unwrap().remove(0),
                    &want,
                    tol(c.lk),
                );
                let text = exe.schedule_text();
                assert_eq!(steps(&exe), 1, "{text}");
                assert_eq!(text.contains("Kt packed per head"), packs_kt(c), "case {i}, {isa}: {text}");
            }
        }
    }
}

/// Q, K and V as exporters split heads: [batch, L, heads, d] transposed to [batch, heads, L, d]
/// (K to [batch, heads, d, L]); the transposes take no step, the attention reads them through
/// strides. Heads of one block (the crate) and of several (Kt packed from K's rows).
#[test]
fn transposed_operands_are_read_in_place() {
    for (lq, lk, d, dv) in [(37, 45, 64, 64), (90, 1500, 16, 24), (9, 700, 7, 1)] {
        let mut rng = XRng(0x7a + lq as u64);
        let (b, h) = (2, 3);
        let mut spec = Spec::new();
        spec.input("q", rng.tensor(&[b, lq, h, d], -1.0, 1.0))
            .input("k", rng.tensor(&[b, lk, h, d], -1.0, 1.0))
            .input("v", rng.tensor(&[b, lk, h, dv], -1.0, 1.0))
            .node("qt", Op::Transpose { perm: Some(vec![0, 2, 1, 3]) }, &["q"], &["qt"])
            .node("kt", Op::Transpose { perm: Some(vec![0, 2, 3, 1]) }, &["k"], &["kt"])
            .node("vt", Op::Transpose { perm: Some(vec![0, 2, 1, 3]) }, &["v"], &["vt"])
            .node("att", Op::Attention { scale: 0.3, nan_to_zero: false }, &["qt", "kt", "vt"], &["y"])
            .output("y");
        for isa in isas() {
            for threads in [1, 2] {
                let exe = check_with(&spec, tol(lk), &opts(threads, SoftmaxAlgo::TwoPass, isa));
                let text = exe.schedule_text();
                assert_eq!(steps(&exe), 1, "{lq}×{lk}: the transposes should take no step: {text}");
                let packed = block(lq, lk) >= 4 && lq > block(lq, lk);
                assert_eq!(text.contains("Kt packed per head"), packed, "{lq}×{lk} {isa}: {text}");
            }
        }
    }
}

/// Transposes that leave no operand with contiguous rows: Q and V given column-major ([b, d, Lq],
/// [b, dv, Lk]) and K row-major ([b, Lk, d]), so that Q and V are read with a column stride of
/// Lq and Lk and Kt with one of d; heads of one block and of several.
#[test]
fn column_strided_operands_are_read_in_place() {
    for (lq, lk, d, dv) in [(21, 50, 9, 20), (70, 1500, 12, 18)] {
        let mut rng = XRng(0x3c + lk as u64);
        let mut spec = Spec::new();
        spec.input("q", rng.tensor(&[2, d, lq], -1.0, 1.0))
            .input("k", rng.tensor(&[2, lk, d], -1.0, 1.0))
            .input("v", rng.tensor(&[2, dv, lk], -1.0, 1.0))
            .input("bias", bias_rows(lq, lk, &mut rng))
            .node("qt", Op::Transpose { perm: Some(vec![0, 2, 1]) }, &["q"], &["qt"])
            .node("kt", Op::Transpose { perm: Some(vec![0, 2, 1]) }, &["k"], &["kt"])
            .node("vt", Op::Transpose { perm: Some(vec![0, 2, 1]) }, &["v"], &["vt"])
            .node("att", Op::Attention { scale: 0.4, nan_to_zero: false }, &["qt", "kt", "vt", "bias"], &["y"])
            .output("y");
        for isa in isas() {
            for threads in [1, 2] {
                let exe = check_with(&spec, tol(lk), &opts(threads, SoftmaxAlgo::TwoPass, isa));
                assert_eq!(steps(&exe), 1, "{lq}×{lk}: {}", exe.schedule_text());
            }
        }
    }
}

/// An additive [lq, lk] bias in [−3, 3) with −∞ entries (never the first key).
fn bias_rows(lq: usize, lk: usize, rng: &mut XRng) -> Tensor {
    let b = (0..lq * lk)
        .map(|i| if i % lk != 0 && rng.next().is_multiple_of(5) { f32::NEG_INFINITY } else { rng.f32(-3.0, 3.0) })
        .collect();
    Tensor::from_f32(vec![lq, lk], b).unwrap()
}

/// Bitwise equal outputs at 1, 2 and 3 threads and over repeated runs with Kt packed per head:
/// whichever thread packs a head's Kt, and whichever blocks it runs, each unit is computed the
/// same way.
#[test]
fn packed_results_do_not_depend_on_the_thread_count() {
    // Blocks of 32 rows (2003 keys): 53 = 32 + 21, three heads over 1–3 threads.
    let c = Case { qb: &[3], kb: &[3], vb: &[3], lq: 53, lk: 2003, d: 24, dv: 20, bias: 1, scale: 0.2 };
    let spec = spec_of(&c, &mut XRng(0x5eed));
    let (g, w) = spec.build();
    let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
    for isa in isas() {
        let mut outs: Vec<Vec<f32>> = Vec::new();
        for threads in [1, 2, 3, 2] {
            let exe = kiln_codegen::compile(&g, &w, &opts(threads, SoftmaxAlgo::TwoPass, isa)).unwrap();
            assert!(exe.schedule_text().contains("Kt packed per head"), "{}", exe.schedule_text());
            for _ in 0..2 {
                let y = exe.run(&ins).unwrap().remove(0);
                let TensorData::F32(v) = y.data() else { panic!("f32 output") };
                outs.push(v.clone());
            }
        }
        for o in &outs[1..] {
            assert!(o.iter().zip(&outs[0]).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa}: outputs differ");
        }
        check_with(&spec, tol(c.lk), &opts(2, SoftmaxAlgo::TwoPass, isa));
    }
}

/// One compiled model run from two threads at once (each run packs Kt in its own thread's
/// buffer), alternating with a second model of other shapes on the same threads, so that a
/// thread's kept packed operands from one model never leak into another's products.
#[test]
fn concurrent_runs_of_two_models_stay_right() {
    // Heads of 2 blocks (1200 keys: 48 rows) with d = 64 and d = 40, both packing Kt per head.
    let a = Case { qb: &[4], kb: &[4], vb: &[4], lq: 60, lk: 1200, d: 64, dv: 64, bias: 1, scale: 0.125 };
    let b = Case { qb: &[2], kb: &[1], vb: &[2], lq: 50, lk: 1200, d: 40, dv: 24, bias: 0, scale: 0.3 };
    let specs: Vec<(Spec, usize)> =
        [&a, &b].iter().enumerate().map(|(i, c)| (spec_of(c, &mut XRng(0x77 + i as u64)), c.lk)).collect();
    let built: Vec<_> = specs
        .iter()
        .map(|(spec, lk)| {
            let (g, w) = spec.build();
            let want = kiln_ir::eval::run(&g, &w, &spec.inputs).unwrap().remove(0).1;
            let exe =
                kiln_codegen::compile(&g, &w, &opts(2, SoftmaxAlgo::TwoPass, kiln_codegen::Isa::detect())).unwrap();
            let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
            (exe, ins, want, *lk)
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..2 {
            let built = &built;
            s.spawn(move || {
                for r in 0..6 {
                    let (exe, ins, want, lk) = &built[(t + r) % 2];
                    let got = exe.run(ins).unwrap().remove(0);
                    assert_close("y", &got, want, tol(*lk));
                }
            });
        }
    });
}
