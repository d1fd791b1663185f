//! kiln's differential tester: seeded random valid graphs over every op of the IR, run on the
//! reference interpreter (the oracle) and on the JIT at -O0 and -O2 with one and two threads,
//! compared within stated tolerances; failing graphs are shrunk and written out as kiln JSON plus
//! `.npy` inputs that `kiln run` reproduces. See docs/robustness.md, "Differential testing".
//!
//! - [`generator`]: the generator (a u64 seed, or fuzzer bytes, gives one case).
//! - [`check`](mod@check): runs a case on every engine and compares (the tolerances are documented there).
//! - [`shrink`]: reduces a failing case.
//! - [`case`]: the case, its model and its files.

pub mod case;
pub mod check;
pub mod generator;
pub mod rng;
pub mod shrink;

pub use case::{Case, NodeSpec};
pub use check::{CheckConfig, Engine, Failure, Kind, check};
pub use generator::{GenConfig, Generated, generate};

use std::path::{Path, PathBuf};

/// What one seed gave.
pub struct SeedResult {
    pub seed: u64,
    pub case: Case,
    pub failures: Vec<Failure>,
    /// Nodes the generator built that `Op::infer` refused (see [`Generated::rejected`]).
    pub rejected: usize,
}

/// Generates and checks one seed.
pub fn run_seed(seed: u64, gen_config: &GenConfig, check_config: &CheckConfig) -> SeedResult {
    let Generated { case, rejected } = generate(seed, gen_config);
    let failures = check(&case, check_config);
    SeedResult { seed, case, failures, rejected: rejected.len() }
}

/// Shrinks a failing case (at most `budget` checks) and writes the reproducer to
/// `out/seed-SEED/`; returns the folder and the shrunk case.
pub fn write_reproducer(
    case: &Case,
    failure: &Failure,
    check_config: &CheckConfig,
    out: &Path,
    budget: usize,
) -> Result<(PathBuf, Case), String> {
    // A slow optimizer makes every check slow: such a case is written as it is.
    let budget = if failure.kind == Kind::OptimizeSlow { 0 } else { budget };
    let small = shrink::shrink(case, failure, check_config, budget);
    // The failure as the shrunk case shows it (the details change while shrinking).
    let now = check::check(&small, check_config)
        .into_iter()
        .find(|f| f.signature() == failure.signature())
        .map_or_else(|| failure.to_string(), |f| f.to_string());
    let dir = out.join(format!("seed-{}", case.seed));
    small.write_to(&dir, &now)?;
    std::fs::write(dir.join("failure.txt"), format!("{now}\n\noriginal: {failure}\n"))
        .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
    Ok((dir, small))
}
