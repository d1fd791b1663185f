//! How the optimizer scales with depth, phase by phase: optimises the bench's graph transformer at
//! the depths given on the command line (default 4 16 64), best of `KILN_SCALE_RUNS` (default 3)
//! runs each, and prints time per phase, e-graph size, iterations and (with `KILN_SCALE_RULES`)
//! rule counts and the optimised op counts. On a shared machine, long runs suffer from contention
//! far more than short ones: compare like-for-like builds interleaved, or count instructions
//! (`valgrind --tool=callgrind --toggle-collect='kiln_passes::optimize::optimize*'`).
//! `cargo run --release -p kiln-passes --example optimizer_scale -- 4 16 64`.

#[path = "../benches/support/graph_transformer.rs"]
mod graph_transformer;

use kiln_passes::{OptimizeConfig, optimize};
use std::time::Instant;

fn main() {
    let mut depths: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if depths.is_empty() {
        depths = vec![4, 16, 64];
    }
    let runs: usize = std::env::var("KILN_SCALE_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let verbose = std::env::var("KILN_SCALE_RULES").is_ok();
    let config = OptimizeConfig::default();
    let mut totals = Vec::new();
    for &depth in &depths {
        let model = graph_transformer::graph_transformer(depth);
        let mut best: Option<(f64, kiln_passes::OptimizeReport)> = None;
        let mut counts = None;
        for _ in 0..runs.max(1) {
            let start = Instant::now();
            let (optimised, report) = optimize(&model, &config).expect("optimizes");
            let ms = start.elapsed().as_secs_f64() * 1e3;
            counts = Some(optimised.graph.op_counts());
            if best.as_ref().is_none_or(|(b, _)| ms < *b) {
                best = Some((ms, report));
            }
        }
        let Some((ms, report)) = best else { continue };
        let phases: Vec<String> = report.phase_ms.iter().map(|(p, t)| format!("{p} {t:.1}")).collect();
        println!(
            "depth {depth}: {ms:.1} ms [{}]; ops {} -> {}; e-graph {} nodes / {} classes; {} iterations; {}",
            phases.join(", "),
            report.ops_before,
            report.ops_after,
            report.egraph_nodes,
            report.egraph_classes,
            report.iterations,
            report.stop_reason
        );
        if verbose {
            println!("  rules: {:?}", report.rules_fired);
            println!("  ops after: {counts:?}");
        }
        totals.push((depth, ms));
    }
    if let (Some(first), Some(last)) = (totals.first(), totals.last()) {
        println!("depth {} / depth {}: {:.1}x", last.0, first.0, last.1 / first.1);
    }
}
