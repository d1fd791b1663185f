//! Filetests: every `tests/filetests/<family>/*.kir` is parsed, optimised and printed; the printed
//! graph is an insta snapshot next to it (`snapshots/`), and the optimised graph must compute the
//! same outputs as the original on the reference interpreter (tolerance as in `tests/optimize.rs`:
//! |optimised − original| ≤ 1e-4 + 1e-4·|original|).
//!
//! Weights without inline data get deterministic pseudo-random values (positive for running
//! variances, `var`/`rv`/`phi` in the name). Update snapshots with `INSTA_UPDATE=always` or
//! `cargo insta review`. Kept in its own test binary: `glob!` shares process-wide state.

use kiln_ir::{DType, Model, Tensor};
use kiln_passes::{OptimizeConfig, optimize};

struct Lcg(u64);

impl Lcg {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        lo + (hi - lo) * ((self.0 >> 40) as f32 / (1u64 << 24) as f32)
    }
}

fn fill_missing_weights(model: &mut Model, rng: &mut Lcg) {
    for &id in model.graph.weights() {
        let info = &model.graph.node(id).outputs[0];
        if model.weights.get(&info.name).is_some() {
            continue;
        }
        let positive = ["var", "rv", "phi"].iter().any(|p| info.name.contains(p));
        let (lo, hi) = if positive { (0.5, 2.0) } else { (-1.0, 1.0) };
        let data = (0..info.ty.num_elements()).map(|_| rng.next(lo, hi)).collect();
        model.weights.insert(info.name.clone(), Tensor::from_f32(info.ty.shape.clone(), data).unwrap());
    }
}

fn inputs(model: &Model, rng: &mut Lcg) -> Vec<(String, Tensor)> {
    model
        .graph
        .inputs()
        .iter()
        .map(|&id| {
            let info = &model.graph.node(id).outputs[0];
            let n = info.ty.num_elements();
            let t = match info.ty.dtype {
                DType::I64 => {
                    Tensor::from_i64(info.ty.shape.clone(), (0..n).map(|_| rng.next(0.0, 10.0) as i64).collect())
                }
                _ => Tensor::from_f32(info.ty.shape.clone(), (0..n).map(|_| rng.next(-2.0, 2.0)).collect()),
            };
            (info.name.clone(), t.unwrap())
        })
        .collect()
}

/// The primitives exporters spell LayerNorm, RMSNorm, GELU, SiLU, HardSwish, Mish, Pow and a
/// transposed operand with.
const PATTERN_PRIMITIVES: &[&str] = &[
    "ReduceMean",
    "ReduceSum",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Exp",
    "Log",
    "Clip",
    "Transpose",
    "Div",
];

/// `exported/`: every pattern is recognised, so none of its primitives is left after -O2 (and a
/// Conv's per-channel Add/Mul are gone into it); a `negative_` look-alike keeps primitives and
/// gains no LayerNorm (what the snapshot shows is checked by the numeric comparison above).
fn check_exported_patterns(path: &std::path::Path, opt: &Model) {
    if path.parent().and_then(|p| p.file_name()).is_none_or(|d| d != "exported") {
        return;
    }
    let counts = opt.graph.op_counts();
    let left: usize = PATTERN_PRIMITIVES.iter().map(|op| counts.get(*op).copied().unwrap_or(0)).sum();
    let fused = counts.get("LayerNormalization").copied().unwrap_or(0);
    let negative = path.file_name().is_some_and(|f| f.to_string_lossy().starts_with("negative_"));
    if negative {
        assert!(left > 0 && fused == 0, "{}: a look-alike was fused: {counts:?}", path.display());
    } else {
        assert_eq!(left, 0, "{}: primitives left after -O2: {counts:?}", path.display());
        assert!(!counts.contains_key("Add") || !counts.contains_key("Conv"), "{}: {counts:?}", path.display());
    }
}

#[test]
fn filetests() {
    insta::glob!("filetests/**/*.kir", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let mut model = kiln_ir::text::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut rng = Lcg(0x2545_F491_4F6C_DD1D);
        fill_missing_weights(&mut model, &mut rng);
        let (opt, report) = optimize(&model, &OptimizeConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let feeds = inputs(&model, &mut rng);
        let want = kiln_ir::eval::run(&model.graph, &model.weights, &feeds).unwrap();
        let got = kiln_ir::eval::run(&opt.graph, &opt.weights, &feeds).unwrap();
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            for (i, (a, b)) in g.as_f32().unwrap().iter().zip(w.as_f32().unwrap()).enumerate() {
                assert!((a - b).abs() <= 1e-4 + 1e-4 * b.abs(), "{}: {name}[{i}]: {a} vs {b}", path.display());
            }
        }
        check_exported_patterns(path, &opt);
        // The exported Pre-LN streams (issue 14): every LayerNorm must have become an RMSNorm.
        if path.file_name().is_some_and(|f| f == "vit_patch_embed.kir" || f == "gpt2_conv1d.kir") {
            let counts = opt.graph.op_counts();
            assert!(
                !counts.contains_key("LayerNormalization") && counts.contains_key("RMSNormalization"),
                "{}: {counts:?}",
                path.display()
            );
        }
        let snapshot =
            format!("# ops: {} -> {}\n{}", report.ops_before, report.ops_after, kiln_ir::text::print(&opt.graph));
        insta::assert_snapshot!(snapshot);
    });
}
