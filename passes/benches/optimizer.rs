//! The optimizer alone: time per zoo model, and scaling with depth on a post-norm graph
//! transformer (the zoo's layer, repeated). `cargo bench -p kiln-passes --bench optimizer`; each
//! case also prints its e-graph size once. Numbers go to docs/benchmarks.md.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kiln_ir::Model;
use kiln_passes::{OptimizeConfig, optimize};
use std::hint::black_box;
use std::path::Path;

#[path = "support/graph_transformer.rs"]
mod graph_transformer;
use graph_transformer::graph_transformer;

fn optimizer(c: &mut Criterion) {
    let config = OptimizeConfig::default();
    let mut group = c.benchmark_group("optimize");
    group.sample_size(10);
    let models_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut zoo: Vec<_> = std::fs::read_dir(&models_dir)
        .expect("models/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| !p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().ends_with("_bench"))
        .collect();
    zoo.sort();
    let mut cases: Vec<(String, Model)> = zoo
        .iter()
        .map(|p| {
            let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            (name, kiln_frontends::json::load_json(p).expect("zoo model loads"))
        })
        .collect();
    for depth in [4, 16, 64] {
        cases.push((format!("graph_transformer_depth{depth}"), graph_transformer(depth)));
    }
    for (name, model) in &cases {
        let (_, report) = optimize(model, &config).expect("optimizes");
        println!(
            "{name}: ops {} -> {}, e-graph {} nodes / {} classes, {} iterations, {}",
            report.ops_before,
            report.ops_after,
            report.egraph_nodes,
            report.egraph_classes,
            report.iterations,
            report.stop_reason
        );
        group.bench_with_input(BenchmarkId::from_parameter(name), model, |b, m| {
            b.iter(|| optimize(black_box(m), &config).expect("optimizes"))
        });
    }
    group.finish();
}

criterion_group!(benches, optimizer);
criterion_main!(benches);
