//! The reductions, index and along-axis ops of issue 12 on the JIT against the reference
//! interpreter: ReduceMin/ReduceProd (generated reduce kernels, f32 and i64), ArgMax/ArgMin,
//! CumSum, TopK, GatherElements, GatherND, ScatterND, ScatterElements (Rust host steps), Tile
//! (a table-driven copy); at 1 and 2 threads; and out-of-range indices as run-time errors.
//!
//! Tolerances: the host steps compute exactly what the reference computes (same f64 CumSum,
//! same comparisons, bit copies), so they must match exactly; ReduceMin is exact; ReduceProd
//! accumulates in f32 in the kernel and f64 in the reference: relative error ≤ n·2⁻²⁴ for the
//! ≤ 216 factors here (values in [0.5, 1.5], so no overflow), 2e-5 relative covers it.

mod common;

use common::*;
use kiln_ir::{Op, ReduceKind, ScatterReduction, Tensor};
use proptest::prelude::*;

const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };
const PROD: Tol = Tol { abs: 1e-30, rel: 2e-5 };

fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..7, 1..4)
}

fn cfg() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Checks at 1 and 2 threads.
fn check_threads(spec: &Spec, tol: Tol) {
    for threads in [1, 2] {
        check_with(spec, tol, &options(threads));
    }
}

/// Small integers as f32, so that ties are common (ArgMax/TopK tie-breaking).
fn ties(rng: &mut XRng, s: &[usize]) -> Tensor {
    let n: usize = s.iter().product();
    Tensor::from_f32(s, (0..n).map(|_| (rng.next() % 4) as f32).collect()).unwrap()
}

fn ints(rng: &mut XRng, s: &[usize], range: i64) -> Tensor {
    let n: usize = s.iter().product();
    Tensor::from_i64(s, (0..n).map(|_| (rng.next() % (2 * range as u64)) as i64 - range).collect()).unwrap()
}

/// Random indices valid for an axis of `d`, negative ones included.
fn indices(rng: &mut XRng, s: &[usize], d: usize) -> Tensor {
    let n: usize = s.iter().product();
    Tensor::from_i64(s, (0..n).map(|_| (rng.next() % (2 * d as u64)) as i64 - d as i64).collect()).unwrap()
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn reduce_min_prod(s in shape(), seed in any::<u64>(), mask in any::<u8>(), keep in any::<bool>()) {
        let mut rng = XRng(seed | 1);
        let axes: Vec<i64> = (0..s.len() as i64).filter(|&a| mask & (1 << a) != 0).collect();
        for (kind, tol) in [(ReduceKind::Min, EXACT), (ReduceKind::Prod, PROD)] {
            let op = Op::Reduce { kind, axes: Some(axes.clone()), keepdims: keep, noop_with_empty_axes: false };
            let mut spec = Spec::new();
            spec.input("x", rng.tensor(&s, 0.5, 1.5)).input("i", ints(&mut rng, &s, 3))
                .node("r", op.clone(), &["x"], &["y"]).node("ri", op, &["i"], &["yi"]).output("y").output("yi");
            check_threads(&spec, tol);
        }
    }

    #[test]
    fn arg_cumsum_topk(s in shape(), seed in any::<u64>(), flags in any::<u8>()) {
        let mut rng = XRng(seed | 1);
        let axis = (rng.next() % s.len() as u64) as i64 - if flags & 1 != 0 { s.len() as i64 } else { 0 };
        let d = s[axis.rem_euclid(s.len() as i64) as usize];
        let k = 1 + (rng.next() % d as u64) as usize;
        let (b0, b1, b2) = (flags & 2 != 0, flags & 4 != 0, flags & 8 != 0);
        let mut spec = Spec::new();
        spec.input("x", ties(&mut rng, &s)).input("i", ints(&mut rng, &s, 2))
            .node("amax", Op::ArgReduce { max: true, axis, keepdims: b0, select_last_index: b1 }, &["x"], &["amax"])
            .node("amin", Op::ArgReduce { max: false, axis, keepdims: b1, select_last_index: b2 }, &["i"], &["amin"])
            .node("cs", Op::CumSum { axis, exclusive: b0, reverse: b2 }, &["x"], &["cs"])
            .node("csi", Op::CumSum { axis, exclusive: b1, reverse: b0 }, &["i"], &["csi"])
            .node("tk", Op::TopK { k, axis, largest: b2, sorted: true }, &["x"], &["tv", "ti"])
            .node("tki", Op::TopK { k, axis, largest: !b2, sorted: true }, &["i"], &["tvi", "tii"])
            .output("amax").output("amin").output("cs").output("csi").output("tv").output("ti").output("tvi").output("tii");
        check_threads(&spec, EXACT);
    }

    #[test]
    fn gather_scatter_elements(s in shape(), seed in any::<u64>(), red in 0usize..5) {
        let mut rng = XRng(seed | 1);
        let r = s.len();
        let axis = (rng.next() % r as u64) as usize;
        // Indices no larger than the data off the axis, any length along it.
        let is: Vec<usize> = s.iter().enumerate()
            .map(|(j, &d)| if j == axis { 1 + (rng.next() % 5) as usize } else { 1 + (rng.next() % d as u64) as usize })
            .collect();
        let reduction = [ScatterReduction::None, ScatterReduction::Add, ScatterReduction::Mul,
            ScatterReduction::Max, ScatterReduction::Min][red];
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&s, -2.0, 2.0)).input("idx", indices(&mut rng, &is, s[axis]))
            .input("u", rng.tensor(&is, -2.0, 2.0)).input("xi", ints(&mut rng, &s, 5)).input("ui", ints(&mut rng, &is, 5))
            .node("ge", Op::GatherElements { axis: axis as i64 }, &["x", "idx"], &["ge"])
            .node("gei", Op::GatherElements { axis: axis as i64 - r as i64 }, &["xi", "idx"], &["gei"])
            .node("se", Op::ScatterElements { axis: axis as i64, reduction }, &["x", "idx", "u"], &["se"])
            .node("sei", Op::ScatterElements { axis: axis as i64, reduction }, &["xi", "idx", "ui"], &["sei"])
            .output("ge").output("gei").output("se").output("sei");
        // Add/Mul of duplicates are applied in the same order as the reference: exact.
        check_threads(&spec, EXACT);
    }

    #[test]
    fn gather_scatter_nd(s in shape(), seed in any::<u64>(), red in 0usize..5, bd in 0usize..3) {
        let mut rng = XRng(seed | 1);
        let r = s.len();
        let b = bd.min(r - 1);
        let last = 1 + (rng.next() % (r - b) as u64) as usize;
        // Index shape: batch dims, one free dim, the tuple.
        let free = 1 + (rng.next() % 4) as usize;
        let mut is: Vec<usize> = s[..b].to_vec();
        is.push(free);
        is.push(last);
        let n: usize = is.iter().product();
        let idx: Vec<i64> = (0..n).map(|t| {
            let d = s[b + t % last] as u64;
            (rng.next() % (2 * d)) as i64 - d as i64
        }).collect();
        let idx = Tensor::from_i64(is.clone(), idx).unwrap();
        let reduction = [ScatterReduction::None, ScatterReduction::Add, ScatterReduction::Mul,
            ScatterReduction::Max, ScatterReduction::Min][red];
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&s, -2.0, 2.0)).input("idx", idx.clone())
            .node("g", Op::GatherND { batch_dims: b }, &["x", "idx"], &["g"]).output("g");
        if b == 0 {
            let mut us = is[..is.len() - 1].to_vec();
            us.extend_from_slice(&s[last..]);
            spec.input("u", rng.tensor(&us, -2.0, 2.0))
                .node("sc", Op::ScatterND { reduction }, &["x", "idx", "u"], &["sc"]).output("sc");
        }
        check_threads(&spec, EXACT);
    }

    #[test]
    fn tile(s in shape(), seed in any::<u64>()) {
        let mut rng = XRng(seed | 1);
        let repeats: Vec<usize> = s.iter().map(|_| 1 + (rng.next() % 3) as usize).collect();
        let mut spec = Spec::new();
        spec.input("x", rng.tensor(&s, -1.0, 1.0)).input("i", ints(&mut rng, &s, 9))
            .node("t", Op::Tile { repeats: repeats.clone() }, &["x"], &["t"])
            .node("ti", Op::Tile { repeats }, &["i"], &["ti"]).output("t").output("ti");
        check_threads(&spec, EXACT);
    }
}

/// NaN never wins ArgMax/ArgMin and sorts above every number in TopK, in both engines.
#[test]
fn nan_and_infinities_follow_the_reference() {
    let v = vec![1.0, f32::NAN, 3.0, f32::NAN, f32::NEG_INFINITY, f32::INFINITY, -0.0, 0.0];
    let x = Tensor::from_f32([2, 4], v).unwrap();
    for max in [true, false] {
        for last in [true, false] {
            let mut spec = Spec::new();
            spec.input("x", x.clone())
                .node("a", Op::ArgReduce { max, axis: 1, keepdims: true, select_last_index: last }, &["x"], &["a"])
                .node("t", Op::TopK { k: 3, axis: 1, largest: max, sorted: true }, &["x"], &["tv", "ti"])
                .node(
                    "m",
                    Op::Reduce {
                        kind: ReduceKind::Min,
                        axes: Some(vec![1]),
                        keepdims: false,
                        noop_with_empty_axes: false,
                    },
                    &["x"],
                    &["m"],
                )
                .node("c", Op::CumSum { axis: 1, exclusive: false, reverse: last }, &["x"], &["c"])
                .output("a")
                .output("tv")
                .output("ti")
                .output("m")
                .output("c");
            check_threads(&spec, EXACT);
        }
    }
}

/// An index outside [−size, size) fails the run with a message naming the index, in every
/// index op, instead of reading or writing out of bounds; an i64 CumSum or ReduceProd that
/// overflows fails too.
#[test]
fn bad_indices_and_overflow_are_run_time_errors() {
    let x = Tensor::from_f32([2, 3], vec![0.0; 6]).unwrap();
    let cases: Vec<(Op, Vec<(&str, Tensor)>)> = vec![
        (Op::GatherElements { axis: 1 }, vec![("idx", Tensor::from_i64([1, 1], vec![3]).unwrap())]),
        (Op::GatherND { batch_dims: 0 }, vec![("idx", Tensor::from_i64([1, 2], vec![0, -4]).unwrap())]),
        (
            Op::ScatterElements { axis: 0, reduction: ScatterReduction::None },
            vec![
                ("idx", Tensor::from_i64([1, 1], vec![i64::MIN]).unwrap()),
                ("u", Tensor::from_f32([1, 1], vec![1.0]).unwrap()),
            ],
        ),
        (
            Op::ScatterND { reduction: ScatterReduction::Add },
            vec![
                ("idx", Tensor::from_i64([1, 1], vec![2]).unwrap()),
                ("u", Tensor::from_f32([1, 3], vec![1.0; 3]).unwrap()),
            ],
        ),
    ];
    for (op, extra) in cases {
        let mut spec = Spec::new();
        spec.input("x", x.clone());
        let mut names = vec!["x"];
        for (n, t) in &extra {
            spec.input(n, t.clone());
            names.push(n);
        }
        spec.node("op", op.clone(), &names, &["y"]).output("y");
        let (g, w) = spec.build();
        let want = kiln_ir::eval::run(&g, &w, &spec.inputs).unwrap_err();
        assert!(want.to_string().contains("out of range"), "{op:?}: {want}");
        let exe = compile_spec(&spec, &options(2));
        let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
        let err = exe.run(&ins).unwrap_err().to_string();
        assert!(err.contains("out of range") && err.contains("'op'"), "{op:?}: {err}");
    }
    for op in [
        Op::CumSum { axis: 0, exclusive: false, reverse: false },
        Op::Reduce { kind: ReduceKind::Prod, axes: None, keepdims: false, noop_with_empty_axes: false },
    ] {
        let mut spec = Spec::new();
        spec.input("i", Tensor::from_i64([3], vec![i64::MAX - 1, 3, 1]).unwrap())
            .node("op", op.clone(), &["i"], &["y"])
            .output("y");
        let (g, w) = spec.build();
        assert!(kiln_ir::eval::run(&g, &w, &spec.inputs).is_err());
        let exe = compile_spec(&spec, &options(1));
        let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
        let err = exe.run(&ins).unwrap_err().to_string();
        assert!(err.contains("overflows"), "{op:?}: {err}");
    }
}
