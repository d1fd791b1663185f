//! The differential tester in CI: random valid graphs (kiln-difftest's generator) on the
//! interpreter, the JIT at -O0 and -O2 with 1 and 2 threads, compared within the tolerances
//! documented in difftest/src/check.rs. A failing graph is shrunk and written to
//! target/difftest-failures/seed-S/ (model.json, inputs, repro.sh) and the test fails naming it.
//!
//! `DIFFTEST_GRAPHS` and `DIFFTEST_SEED` change the count and the first seed (for a longer local
//! run; the soak binary, `cargo run --release -p kiln-difftest`, is for ≥ 100k graphs, and it
//! names the seed of a crash, which here aborts the test process). `DIFFTEST_AVOID_KNOWN=1`
//! generates none of issue 11's defects (`GenConfig::avoid_known_defects`), for a tree that still
//! has them.

use kiln_difftest::{CheckConfig, GenConfig, run_seed, write_reproducer};
use std::path::PathBuf;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn random_graphs_agree_on_every_engine() {
    let graphs = env_u64("DIFFTEST_GRAPHS", 2000);
    let first = env_u64("DIFFTEST_SEED", 0);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("difftest-failures");
    let threads = 2u64;
    let start = std::time::Instant::now();
    // Two threads of seeds: the machine has two cores and the engines run one at a time.
    let results: Vec<(Vec<String>, usize, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let out = out.clone();
                s.spawn(move || {
                    let avoid_known_defects = std::env::var("DIFFTEST_AVOID_KNOWN").is_ok_and(|v| v == "1");
                    let gen_config = GenConfig { avoid_known_defects, ..GenConfig::default() };
                    let check_config = CheckConfig::default();
                    let mut failures = Vec::new();
                    let (mut nodes, mut rejected) = (0, 0);
                    for seed in (first + t..first + graphs).step_by(threads as usize) {
                        let r = run_seed(seed, &gen_config, &check_config);
                        nodes += r.case.nodes.len();
                        rejected += r.rejected;
                        if let Some(f) = r.failures.first() {
                            let place = match write_reproducer(&r.case, f, &check_config, &out, 150) {
                                Ok((dir, small)) => format!("{} ({} nodes)", dir.display(), small.nodes.len()),
                                Err(e) => format!("not written: {e}"),
                            };
                            failures.push(format!("seed {seed}: {f}\n    reproducer: {place}"));
                        }
                    }
                    (failures, nodes, rejected)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a difftest thread panicked outside catch_unwind")).collect()
    });
    let failures: Vec<String> = results.iter().flat_map(|r| r.0.clone()).collect();
    let nodes: usize = results.iter().map(|r| r.1).sum();
    let rejected: usize = results.iter().map(|r| r.2).sum();
    println!(
        "difftest: {graphs} graphs, seeds {first}..{}, {nodes} nodes, {rejected} generator rejections, {} failures, {:.1} s",
        first + graphs,
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{} of {graphs} graphs failed:\n{}", failures.len(), failures.join("\n"));
}

/// The interpreter/JIT disagreements the tester found (difftest/repro/, see its README), each
/// fixed: the JIT at -O0 with 1 and 2 threads gives the interpreter's values (NaN where it gives
/// NaN) on every reproducer.
#[test]
fn found_reproducers_agree_between_interpreter_and_jit() {
    let repro = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("difftest/repro");
    let cases = [
        ("conv_pad_times_inf_weight/model.json", "x.npy"),
        ("masked_softmax_masked_max/model.json", "x.npy"),
        ("resize_sizes_rounding/model.json", "x.npy"),
        ("resize_sizes_rounding/model2.json", "x2.npy"),
    ];
    for (model, input) in cases {
        let path = repro.join(model);
        let x = kiln::read_tensor_file(&path.with_file_name(input)).unwrap_or_else(|e| panic!("{model}: {e}"));
        let inputs = vec![("x".to_string(), x)];
        let run = |backend, threads| {
            let options =
                kiln::Options { backend, opt_level: kiln::OptLevel::O0, threads: Some(threads), ..Default::default() };
            let model = kiln::load(&path).unwrap_or_else(|e| panic!("{model}: {e}"));
            let compiled = kiln::compile(model, &options).unwrap_or_else(|e| panic!("{e}"));
            compiled.run(&inputs).unwrap_or_else(|e| panic!("{e}"))
        };
        let want = run(kiln::Backend::Interp, 1);
        for threads in [1, 2] {
            let got = run(kiln::Backend::Jit, threads);
            for ((name, w), (_, g)) in want.iter().zip(&got) {
                let (w, g) = (w.as_f32().unwrap_or_default(), g.as_f32().unwrap_or_default());
                assert_eq!(w.len(), g.len(), "{model}: {name}");
                for (a, b) in w.iter().zip(g) {
                    assert!(
                        a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                        "{model}, {threads} threads: {name} is {g:?} on the JIT, {w:?} on the interpreter"
                    );
                }
            }
        }
    }
}
