//! Runs one case on every engine and compares each with the oracle.
//!
//! The oracle is the reference interpreter on the graph as written (`Backend::Interp`, -O0). The
//! others: the JIT at -O0 with 1 and 2 threads, and the -O2 graph (optimized once, as
//! `kiln::compile` does) on the interpreter (which isolates optimizer bugs from codegen bugs) and
//! on the JIT with 1 and 2 threads.
//!
//! A failure is: a panic anywhere (caught); an error from one engine where the oracle succeeded
//! (or the reverse); an output of another name, type or shape; or a value outside the tolerance.
//!
//! Tolerance, per output tensor: with `scale` = max(1, largest finite |oracle value|),
//! `|got − want| ≤ atol·scale + rtol·|want|`, NaN matching NaN, an infinity matching the same
//! infinity, i64 and bool exact.
//! - -O0 (the JIT against the interpreter): atol 5e-4, rtol 1e-3. The JIT's transcendental
//!   functions are within 4e-7 relative (codegen/src/math_tests.rs) and ~2e-7 absolute in
//!   composed tails (Gelu of −6); it accumulates sums and dot products in f32 where the
//!   interpreter uses f64, an error of about K·2^-24 of the summands' magnitude for K terms
//!   (K ≤ 128: 1e-5 of `scale`; a graph with longer sums — a MatMul over k = 4096, a ReduceSum
//!   over 10⁴ elements, a global pool — gets atol scaled by K/128, see [`longest_sum`]: the bound
//!   grows linearly in K); a normalization divides such errors by √(var + ε), up to
//!   1000× with ε = 1e-6 and a near-constant row (seen: Gelu tails into InstanceNorm, 1.9e-4).
//!   Gross bugs (wrong element, wrong row, a missed epilogue, a rounding mode) are off by O(1).
//! - -O2: atol 1e-3, rtol 1e-2. The optimizer reassociates and folds constants ((x·a)·b →
//!   x·(ab), BatchNorm into Conv weights, divisions into multiplications by a reciprocal), each a
//!   rounding step, and the chains above amplify them; still 100× tighter than a wrong answer.
//! - f32 values are not compared in cases where an input, a weight or any value the oracle
//!   computes is huge (finite, |v| ≥ 1e18): squares of such values overflow f32, so a variance, an
//!   L2 norm or a long dot product is ∞ (and a normalized output 0 or NaN) in the JIT's f32 where
//!   the interpreter's f64 is finite, and whether a sum overflows depends on the summation order.
//!   Such cases still check for panics, errors, shapes and i64/bool outputs. The rule applies to
//!   the interpreter on the -O2 graph as well: the optimizer reassociates constant arithmetic
//!   ((x·a)·b → x·(ab), (x+a)+b → x+(a+b)), which at these magnitudes changes whether an
//!   intermediate overflows or cancels (docs/ops.md); that a fold never creates a non-finite
//!   constant is checked at fold time and by passes/tests/regressions.rs.
//! - Ill-conditioned elements are not compared: the oracle runs twice more with every f32 value
//!   (inputs, weights, each op's outputs) perturbed by up to 4 ulps relative ([`PERTURB`], the
//!   JIT's stated error for its transcendental functions plus a rounding), and an element that
//!   this perturbation alone moves outside the tolerance — a normalization of a near-constant
//!   row, a cancelling sum divided by zero, a rounding difference times an infinite weight — is
//!   one whose value any f32 evaluation may legitimately change (seeds 86011104, 50007722,
//!   50025074); in other rows the tolerance is widened by 4× the row's largest move under the
//!   perturbation (`rounding_spread`). Well-conditioned elements are still compared, so a wrong
//!   kernel is still found; a case whose every element is ill-conditioned checks only errors,
//!   shapes and integer outputs.
//! - A recognised softmax at -O2 subtracts the row maximum, so it may be finite where the graph
//!   as written overflows to NaN (the lead's decision, docs/ops.md): at -O2 only, an oracle NaN
//!   may come out finite, and only when the optimizer introduced a softmax-family op (Softmax,
//!   LogSoftmax, MaskedSoftmax, Attention) that the source graph did not have as many of. In
//!   such cases the converse is excused too: a row holding +∞ is NaN after recognition (∞ − ∞),
//!   where the written form gives 0 for its finite elements.

use crate::case::Case;
use kiln::{Backend, Model, OptLevel, Options, Tensor, TensorData};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// The engines a case runs on, besides the oracle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    InterpO2,
    Jit { opt: Level, threads: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    O0,
    O2,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::InterpO2 => write!(f, "interp -O2"),
            Engine::Jit { opt, threads } => write!(f, "jit -{opt:?} --threads {threads}"),
        }
    }
}

/// Which engines to run and how.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub engines: Vec<Engine>,
    /// An optimizer slower than this on a generated graph (a few dozen nodes, optimized in
    /// milliseconds) is a failure: a runaway saturation. Generous, so that a loaded machine does
    /// not make it flaky.
    pub optimize_time_limit: Duration,
}

impl Default for CheckConfig {
    fn default() -> CheckConfig {
        CheckConfig {
            engines: vec![
                Engine::Jit { opt: Level::O0, threads: 1 },
                Engine::Jit { opt: Level::O0, threads: 2 },
                Engine::InterpO2,
                Engine::Jit { opt: Level::O2, threads: 1 },
                Engine::Jit { opt: Level::O2, threads: 2 },
            ],
            optimize_time_limit: Duration::from_secs(10),
        }
    }
}

/// What went wrong, without the details: the shrinker keeps a candidate only if it fails with the
/// same stage and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// The generated case does not build (a generator or builder bug).
    Build,
    /// The oracle refused the case (a generator bug, or an interpreter bug).
    OracleError,
    /// The oracle panicked.
    OraclePanic,
    /// The optimizer returned an error.
    OptimizeError,
    /// The optimizer took longer than the limit.
    OptimizeSlow,
    /// An engine returned an error (at compile or run time) where the oracle succeeded.
    Error,
    /// An engine panicked.
    Panic,
    /// Outputs differ in count, name, type or shape.
    Shape,
    /// Values differ beyond the tolerance.
    Mismatch,
    /// Runs of one JIT executable at different thread counts differ in some bit (a run may use
    /// fewer threads than compiled for, so its results must not depend on the count).
    ThreadsDiffer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The engine at fault (`None` for the oracle, the build and the optimizer).
    pub engine: Option<Engine>,
    pub kind: Kind,
    pub detail: String,
}

impl Failure {
    /// What the shrinker preserves.
    pub fn signature(&self) -> (Option<Engine>, Kind) {
        (self.engine, self.kind)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.engine {
            Some(e) => write!(f, "{:?} on {e}: {}", self.kind, self.detail),
            None => write!(f, "{:?}: {}", self.kind, self.detail),
        }
    }
}

type Outputs = Vec<(String, Tensor)>;

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic)".into()
    }
}

/// Compiles and runs `runs` times; the outputs of the first run, and where a later run's differ
/// from them in any bit. `Err(Ok(msg))` is an error, `Err(Err(msg))` a panic.
fn run_engine_repeated(
    model: Model,
    options: &Options,
    inputs: &Outputs,
    runs: usize,
) -> Result<(Outputs, Option<String>), Result<String, String>> {
    match catch_unwind(AssertUnwindSafe(|| -> Result<_, kiln::Error> {
        let compiled = kiln::compile(model, options)?;
        let first = compiled.run(inputs)?;
        for run in 1..runs {
            if let Some(d) = bit_difference(&first, &compiled.run(inputs)?) {
                return Ok((first, Some(format!("run {run} of one executable: {d}"))));
            }
        }
        Ok((first, None))
    })) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(Ok(e.to_string())),
        Err(p) => Err(Err(panic_message(p))),
    }
}

/// Compiles and runs once; `Err(Ok(msg))` is an error, `Err(Err(msg))` a panic.
fn run_engine(model: Model, options: &Options, inputs: &Outputs) -> Result<Outputs, Result<String, String>> {
    run_engine_repeated(model, options, inputs, 1).map(|(out, _)| out)
}

/// Softmax-family ops in a graph, for the narrow softmax exemption.
fn softmax_ops(model: &Model) -> usize {
    let counts = model.graph.op_counts();
    ["Softmax", "LogSoftmax", "MaskedSoftmax", "Attention"].iter().map(|n| counts.get(n).copied().unwrap_or(0)).sum()
}

/// Runs the case everywhere; returns every failure (empty: the case passes).
pub fn check(case: &Case, config: &CheckConfig) -> Vec<Failure> {
    let fail = |engine, kind, detail: String| Failure { engine, kind, detail };
    let model = match catch_unwind(AssertUnwindSafe(|| case.model())) {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return vec![fail(None, Kind::Build, e.to_string())],
        Err(p) => return vec![fail(None, Kind::Build, format!("panic: {}", panic_message(p)))],
    };
    let inputs: Outputs = case.inputs.clone();
    let interp = Options { backend: Backend::Interp, opt_level: OptLevel::O0, threads: Some(1), ..Default::default() };
    // The oracle runs with every tensor as an output, so that the huge-value rule below can look
    // at the intermediates too; the declared outputs are picked out of them.
    let everything = match catch_unwind(AssertUnwindSafe(|| case.with_every_output().model())) {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return vec![fail(None, Kind::Build, format!("with every tensor as an output: {e}"))],
        Err(p) => return vec![fail(None, Kind::Build, format!("panic: {}", panic_message(p)))],
    };
    let oracle = match run_engine(everything, &interp, &inputs) {
        Ok(o) => Some(o),
        Err(Ok(e)) => {
            // The oracle refused: every other engine must refuse too; report the refusal itself
            // as well, since the generator means to make only cases that run.
            let mut failures = vec![fail(None, Kind::OracleError, e)];
            for &engine in config.engines.iter().filter(|e| matches!(e, Engine::Jit { opt: Level::O0, .. })) {
                let Engine::Jit { threads, .. } = engine else { continue };
                let options = Options {
                    backend: Backend::Jit,
                    opt_level: OptLevel::O0,
                    threads: Some(threads),
                    ..Default::default()
                };
                match run_engine(model.clone(), &options, &inputs) {
                    Ok(_) => {
                        failures.push(fail(Some(engine), Kind::Error, "succeeded where the interpreter refused".into()))
                    }
                    Err(Err(p)) => failures.push(fail(Some(engine), Kind::Panic, p)),
                    Err(Ok(_)) => {}
                }
            }
            return failures;
        }
        Err(Err(p)) => return vec![fail(None, Kind::OraclePanic, p)],
    };
    let Some(all_values) = oracle else { return Vec::new() };
    let huge = case.has_huge_values() || all_values.iter().any(|(_, t)| has_huge(t));
    let mut by_name: std::collections::HashMap<String, Tensor> = all_values.into_iter().collect();
    let oracle: Outputs = case
        .outputs
        .iter()
        .map(|o| (o.clone(), by_name.remove(o).unwrap_or_else(|| Tensor::scalar_f32(f32::NAN))))
        .collect();
    let noisy = perturbed_oracles(&model, &inputs);
    let mut failures = Vec::new();

    // The -O2 graph, made once, as kiln::compile makes it.
    let needs_o2 = config.engines.iter().any(|e| matches!(e, Engine::InterpO2 | Engine::Jit { opt: Level::O2, .. }));
    let mut optimized: Option<Model> = None;
    let mut softmax_rules_fired = false;
    if needs_o2 {
        let start = Instant::now();
        let cpu_start = thread_cpu_time();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let opt_config = kiln_passes::OptimizeConfig::from_lookup(|name| std::env::var(name).ok())?;
            kiln_passes::optimize(&model, &opt_config)
        }));
        // The optimizer's own CPU time where the OS reports it: on a loaded (or stopped) machine
        // the wall clock also counts the time spent waiting for a core (a 2-node graph once
        // "took 31.6 s" while the soak was SIGSTOPped).
        let elapsed = match (cpu_start, thread_cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => start.elapsed(),
        };
        match result {
            Ok(Ok((m, report))) => {
                // A softmax recognised and then folded away (every operand a constant) leaves no
                // op to count, so the rules that fired say it too.
                softmax_rules_fired = report
                    .rules_fired
                    .keys()
                    .any(|r| matches!(r.as_str(), "softmax-plain" | "masked-softmax") || r.starts_with("attention"));
                optimized = Some(m)
            }
            Ok(Err(e)) => failures.push(fail(None, Kind::OptimizeError, e.to_string())),
            Err(p) => failures.push(fail(None, Kind::Panic, format!("optimizer panicked: {}", panic_message(p)))),
        }
        if elapsed > config.optimize_time_limit {
            failures.push(fail(None, Kind::OptimizeSlow, format!("optimizing took {:.1} s", elapsed.as_secs_f64())));
        }
    }
    let softmax_added = softmax_rules_fired || optimized.as_ref().is_some_and(|m| softmax_ops(m) > softmax_ops(&model));
    let terms = longest_sum(&model.graph);

    for &engine in &config.engines {
        let (source, options, tol) = match engine {
            Engine::InterpO2 => (
                optimized.clone(),
                Options { backend: Backend::Interp, opt_level: OptLevel::O0, threads: Some(1), ..Default::default() },
                O2,
            ),
            Engine::Jit { opt, threads } => {
                let options = Options {
                    backend: Backend::Jit,
                    opt_level: OptLevel::O0,
                    threads: Some(threads),
                    // Its first runs alternate between all threads and one (see `runs` below).
                    adaptive_threads: true,
                    ..Default::default()
                };
                match opt {
                    Level::O0 => (Some(model.clone()), options, O0),
                    Level::O2 => (optimized.clone(), options, O2),
                }
            }
        };
        // The optimizer failed: already reported.
        let Some(source) = source else { continue };
        // A multi-threaded JIT engine runs through its thread choice's warm-up and samples,
        // which alternate between all threads and one and may try a per-step plan
        // (`kiln::threads`): the same executable runs each way and must give the same bits.
        let runs = match engine {
            Engine::Jit { threads, .. } if threads > 1 => kiln::threads::MAX_UNDECIDED_RUNS,
            _ => 1,
        };
        let got = match run_engine_repeated(source, &options, &inputs, runs) {
            Ok((o, None)) => o,
            Ok((o, Some(detail))) => {
                failures.push(fail(Some(engine), Kind::ThreadsDiffer, detail));
                o
            }
            Err(Ok(e)) => {
                failures.push(fail(Some(engine), Kind::Error, e));
                continue;
            }
            Err(Err(p)) => {
                failures.push(fail(Some(engine), Kind::Panic, p));
                continue;
            }
        };
        let exempt_softmax = softmax_added && tol.level == Level::O2;
        let tol = tol.for_sums_of(terms);
        // The huge-value rule covers the interpreter on the -O2 graph too: the optimizer may
        // reassociate constant arithmetic ((x·a)·b → x·(ab), (x+a)+b → x+(a+b), scales into
        // weights), which changes whether an intermediate near the f32 limit overflows or cancels
        // (docs/ops.md, "Finiteness under optimisation"). A fold that makes a non-finite constant
        // is ruled out at fold time and tested in passes/tests/regressions.rs.
        if let Err((kind, detail)) = compare(&oracle, &got, &noisy, tol, huge, exempt_softmax) {
            failures.push(fail(Some(engine), kind, detail));
        }
    }
    failures
}

/// Where two runs of the same graph differ, or `None`: f32 compared as bits (−0 against +0
/// counts), except that any NaN matches any NaN — a map kernel's vector body and its scalar tail
/// make NaNs of different payloads, and where a chunk ends decides which one an element goes
/// through (seen with Silu: 4 of 20000 graphs).
fn bit_difference(a: &Outputs, b: &Outputs) -> Option<String> {
    if a.len() != b.len() {
        return Some(format!("{} outputs against {}", b.len(), a.len()));
    }
    for ((name, x), (_, y)) in a.iter().zip(b) {
        let at = match (x.data(), y.data()) {
            (TensorData::F32(p), TensorData::F32(q)) if p.len() == q.len() => p
                .iter()
                .zip(q)
                .position(|(u, v)| u.to_bits() != v.to_bits() && !(u.is_nan() && v.is_nan()))
                .map(|i| format!(" at element {i}: {:e} against {:e}", q[i], p[i])),
            _ => (x != y).then(String::new),
        };
        if let Some(at) = at {
            return Some(format!("output '{name}' differs between thread counts{at}"));
        }
    }
    None
}

/// Size of the oracle's perturbation: 2^-20 ≈ 9.5e-7, eight f32 ulps (the JIT's transcendental
/// functions are within 4e-7 relative, codegen/src/math_tests.rs; a composed op such as a cubic
/// Resize rounds its coefficients and its 4-term sum).
pub const PERTURB: f64 = 9.5367431640625e-7;

/// Ops whose f32 result sums terms: their rounding error is relative to the largest term, not to
/// the result (a cubic Resize of 0 and 1 giving 0.1, a dot product that cancels).
fn accumulates(op: &kiln_ir::Op) -> bool {
    use kiln_ir::ops::{Family, family};
    use kiln_ir::{Op, ReduceKind};
    match family(op) {
        Family::Elementwise | Family::Movement | Family::Index => false,
        // The family also holds Pad and nearest Resize, which copy.
        Family::Conv => matches!(op, Op::Conv { .. } | Op::ConvTranspose { .. }),
        Family::Pool => !matches!(op, Op::MaxPool(_)),
        Family::Reduce => match op {
            Op::Reduce { kind, .. } => !matches!(kind, ReduceKind::Max | ReduceKind::Min),
            other => matches!(other, Op::CumSum { .. }),
        },
        Family::Linalg | Family::Resize | Family::Norm | Family::Fused => true,
    }
}

/// The oracle on the graph as written, twice, with every f32 value perturbed (fixed seeds: the
/// check is deterministic): each element x becomes x·(1 + δ), and the nonzero outputs of an op
/// that [`accumulates`] move by δ·max|t| (finite elements) as well, δ uniform in ±[`PERTURB`].
/// Exact zeros, infinities and NaNs stay as they are (the JIT computes them exactly too: 0·∞ =
/// NaN cases keep being checked), and so do integer inputs and weights. A run that fails is
/// left out.
fn perturbed_oracles(model: &Model, inputs: &Outputs) -> Vec<Outputs> {
    [0x9E37_79B9_7F4A_7C15u64, 0xD1B5_4A32_D192_ED03]
        .into_iter()
        .filter_map(|seed| {
            let mut state = seed;
            let mut uniform = move || {
                // xorshift64*: 24 random bits → δ in ±PERTURB.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let u = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f64 / (1u64 << 24) as f64;
                PERTURB * (2.0 * u - 1.0)
            };
            let mut perturb = |op: Option<&kiln_ir::Op>, t: Tensor| -> Tensor {
                let Some(v) = t.as_f32() else { return t };
                let sums = op.is_some_and(accumulates);
                let absolute = if sums {
                    v.iter().filter(|x| x.is_finite()).fold(0.0f64, |m, &x| m.max(f64::from(x).abs()))
                } else {
                    0.0
                };
                let data = v
                    .iter()
                    .map(|&x| {
                        // Integer inputs and weights stay exact: sums of them are exact in f32
                        // too, and ops that check their values (RegionNorm's 0/1 mask, seed
                        // 95046598) would refuse 1 + δ, losing the run.
                        let integer = x == x.trunc() && x.abs() < 16_777_216.0;
                        if x == 0.0 || !x.is_finite() || (integer && op.is_none()) {
                            return x;
                        }
                        let x = f64::from(x);
                        (x + uniform() * x + uniform() * absolute) as f32
                    })
                    .collect();
                Tensor::from_f32(t.shape().to_vec(), data).unwrap_or(t)
            };
            let run = || kiln_ir::eval::run_perturbed(&model.graph, &model.weights, inputs, &mut perturb);
            catch_unwind(AssertUnwindSafe(run)).ok()?.ok()
        })
        .collect()
}

/// Which elements of output `k` (values `want`, last axis `row`) are ill-conditioned: every
/// element of a last-axis row in which some perturbed oracle puts some element outside the
/// tolerance of the oracle's value. Whole rows, because the ops that amplify rounding work on
/// rows (a normalization, a softmax, x − max(x)) and a sample of perturbations can leave one
/// element of such a row unmoved (the row's maximum in every run) where an f32 evaluation moves it.
fn ill_conditioned(noisy: &[Outputs], k: usize, want: &[f32], row: usize, scale: f64, tol: Tolerance) -> Vec<bool> {
    let mut ill = vec![false; want.len()];
    for n in noisy {
        let Some(v) = n.get(k).and_then(|(_, t)| t.as_f32()).filter(|v| v.len() == want.len()) else { continue };
        for (i, (&w, &x)) in want.iter().zip(v).enumerate() {
            ill[i] |= !close(w, x, scale, tol, false, false);
        }
    }
    for r in ill.chunks_mut(row.max(1)) {
        if r.contains(&true) {
            r.fill(true);
        }
    }
    ill
}

/// How far the perturbed oracles moved each element's last-axis row at most (finite values only):
/// an f32 evaluation may differ from the oracle by a few times that. Below the tolerance (so not
/// [`ill_conditioned`]) it can still be most of it, and a sample of two perturbations can
/// understate it (seed 95046598: a 34-term f32 sum into a RegionNorm of two near-equal pixels,
/// the JIT 9e-4 off where the tolerance was 8e-4 and the perturbations moved it 4e-4).
fn rounding_spread(noisy: &[Outputs], k: usize, want: &[f32], row: usize) -> Vec<f64> {
    let mut spread = vec![0.0f64; want.len()];
    for n in noisy {
        let Some(v) = n.get(k).and_then(|(_, t)| t.as_f32()).filter(|v| v.len() == want.len()) else { continue };
        for (i, (&w, &x)) in want.iter().zip(v).enumerate() {
            if w.is_finite() && x.is_finite() {
                spread[i] = spread[i].max((f64::from(x) - f64::from(w)).abs());
            }
        }
    }
    for r in spread.chunks_mut(row.max(1)) {
        let most = r.iter().copied().fold(0.0, f64::max);
        r.fill(most);
    }
    spread
}

/// An element within the tolerance widened by this many times its row's [`rounding_spread`] is
/// not a mismatch: the perturbation is 8 ulps per value, about what the JIT's own rounding is, and
/// the margin covers a sample that drew small.
const SPREAD_MARGIN: f64 = 4.0;

/// Whether a tensor holds a finite value of magnitude ≥ 1e18 (see [`Case::has_huge_values`]).
fn has_huge(t: &Tensor) -> bool {
    t.as_f32().is_some_and(|v| v.iter().any(|x| x.is_finite() && x.abs() >= HUGE))
}

/// Values from here up make f32 results depend on precision and order: their squares (variance,
/// L2, x·x) pass 1e36 and sums of a few hundred of them overflow f32, where the interpreter's
/// f64 does not.
pub const HUGE: f32 = 1e18;

#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
    level: Level,
}

/// The JIT against the interpreter, graph as written (see the module comment).
pub const O0: Tolerance = Tolerance { atol: 5e-4, rtol: 1e-3, level: Level::O0 };
/// The optimized graph against the graph as written (see the module comment).
pub const O2: Tolerance = Tolerance { atol: 1e-3, rtol: 1e-2, level: Level::O2 };

impl Tolerance {
    /// The tolerance for a graph whose longest f32 sum has `terms` terms: atol as stated up to 128
    /// terms, then proportional to the count (the worst-case bound of f32 accumulation against
    /// the interpreter's f64 grows linearly in it). A wrong element is still off by O(1)·scale.
    pub fn for_sums_of(self, terms: usize) -> Tolerance {
        Tolerance { atol: self.atol * (terms as f64 / 128.0).max(1.0), ..self }
    }
}

/// The most terms any single output element of `graph` sums (or averages, or normalizes over):
/// a MatMul/Gemm/Einsum's contracted length (bounded by the longest last axis of an input), a
/// convolution's C_in/groups·kh·kw (its weight's elements per output channel), and for
/// reductions, pools and normalizations the input elements per output element (or the last axis).
pub fn longest_sum(graph: &kiln_ir::Graph) -> usize {
    let mut most = 1usize;
    for id in graph.topo_order() {
        let node = graph.node(id);
        let Some(op) = node.op() else { continue };
        let ins: Vec<&kiln_ir::TensorType> = graph.node_inputs(id).into_iter().map(|v| graph.value_type(v)).collect();
        let out = node.outputs.first().map(|o| o.ty.num_elements()).unwrap_or(1).max(1);
        for (k, t) in ins.iter().enumerate() {
            most = most.max(t.shape.last().copied().unwrap_or(1));
            if k == 0 {
                most = most.max(t.num_elements() / out);
            }
        }
        if matches!(op.name(), "Conv" | "ConvTranspose")
            && let Some(w) = ins.get(1)
        {
            // Conv: [C_out, C_in/g, kh, kw] sums C_in/g·kh·kw terms; ConvTranspose: [C_in, C_out/g,
            // kh, kw] sums at most C_in/g·kh·kw ≤ C_in·kh·kw (elements per C_out/g slice).
            let per = if op.name() == "Conv" { w.shape.first() } else { w.shape.get(1) };
            most = most.max(w.num_elements() / per.copied().unwrap_or(1).max(1));
        }
    }
    most
}

fn compare(
    want: &Outputs,
    got: &Outputs,
    noisy: &[Outputs],
    tol: Tolerance,
    huge: bool,
    exempt_softmax: bool,
) -> Result<(), (Kind, String)> {
    if want.len() != got.len() {
        return Err((Kind::Shape, format!("{} outputs, expected {}", got.len(), want.len())));
    }
    for (k, ((wn, w), (gn, g))) in want.iter().zip(got).enumerate() {
        if wn != gn || w.ty() != g.ty() {
            return Err((Kind::Shape, format!("output '{gn}' is {}, expected '{wn}' {}", g.ty(), w.ty())));
        }
        let mut differing = 0;
        let bad = match (w.data(), g.data()) {
            (TensorData::F32(wv), TensorData::F32(gv)) => {
                let scale = wv.iter().filter(|x| x.is_finite()).fold(1.0f64, |m, &x| m.max(f64::from(x).abs()));
                let row = w.shape().last().copied().unwrap_or(1);
                let ill = ill_conditioned(noisy, k, wv, row, scale, tol);
                let spread = rounding_spread(noisy, k, wv, row);
                let within_spread = |i: usize| {
                    let (w, g) = (f64::from(wv[i]), f64::from(gv[i]));
                    w.is_finite()
                        && g.is_finite()
                        && (w - g).abs() <= tol.atol * scale + tol.rtol * w.abs() + SPREAD_MARGIN * spread[i]
                };
                let differs: Vec<usize> = (0..wv.len())
                    .filter(|&i| !ill[i] && !close(wv[i], gv[i], scale, tol, huge, exempt_softmax) && !within_spread(i))
                    .collect();
                differing = differs.len();
                differs.first().copied()
            }
            (TensorData::I64(w), TensorData::I64(g)) => w.iter().zip(g).position(|(w, g)| w != g),
            (TensorData::Bool(w), TensorData::Bool(g)) => w.iter().zip(g).position(|(w, g)| w != g),
            _ => Some(0),
        };
        if let Some(i) = bad {
            let show = |t: &Tensor| match t.data() {
                TensorData::F32(v) => format!("{:e}", v[i]),
                TensorData::I64(v) => v[i].to_string(),
                TensorData::Bool(v) => v[i].to_string(),
            };
            let count = differing;
            return Err((
                Kind::Mismatch,
                format!(
                    "output '{wn}' {} element {i} (of {}; {count} differ): got {}, expected {}",
                    w.ty(),
                    w.len(),
                    show(g),
                    show(w)
                ),
            ));
        }
    }
    Ok(())
}

fn close(want: f32, got: f32, scale: f64, tol: Tolerance, huge: bool, exempt_softmax: bool) -> bool {
    if huge {
        return true;
    }
    if want.is_nan() {
        return got.is_nan() || (exempt_softmax && got.is_finite());
    }
    if got.is_nan() && exempt_softmax {
        // A row holding +∞: the fused op computes x − max = ∞ − ∞ (NaN for the row, as ONNX
        // Runtime's Softmax gives) where the written exp(x)/Σexp(x) gives 0 for the finite ones.
        return true;
    }
    if want.is_infinite() || got.is_infinite() || got.is_nan() {
        return want == got;
    }
    let (w, g) = (f64::from(want), f64::from(got));
    (w - g).abs() <= tol.atol * scale + tol.rtol * w.abs()
}

/// CPU time of the calling thread so far (user + system, from /proc/thread-self/stat at
/// 100 ticks per second, Linux's USER_HZ), or `None` where that file does not exist or parse.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name (which may contain spaces): utime and stime
    // are fields 14 and 15 of the line, the 12th and 13th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

#[cfg(test)]
mod tests {
    /// Runs at two thread counts must agree in every bit (−0 against +0 counts), NaN payloads aside.
    #[test]
    fn bit_difference_sees_every_bit() {
        use kiln::Tensor;
        let out = |v: Vec<f32>| vec![("y".to_string(), Tensor::from_f32(vec![v.len()], v).unwrap())];
        let base = out(vec![1.0, 0.0, f32::NAN]);
        assert_eq!(super::bit_difference(&base, &base.clone()), None);
        let next = f32::from_bits(1.0f32.to_bits() + 1);
        let other_nan = f32::from_bits(f32::NAN.to_bits() | 1);
        for (i, v) in
            [vec![next, 0.0, f32::NAN], vec![1.0, -0.0, f32::NAN], vec![1.0, 0.0, 2.0]].into_iter().enumerate()
        {
            let d = super::bit_difference(&base, &out(v)).expect("a difference");
            assert!(d.contains(&format!("at element {i}")), "{d}");
        }
        assert_eq!(super::bit_difference(&base, &out(vec![1.0, 0.0, other_nan])), None);
        let ints = |v: Vec<i64>| vec![("k".to_string(), Tensor::from_i64(vec![v.len()], v).unwrap())];
        assert!(super::bit_difference(&ints(vec![1, 2]), &ints(vec![1, 3])).is_some());
    }

    /// The optimizer's time limit counts CPU time: a busy loop shows in it, a sleep does not.
    #[test]
    fn thread_cpu_time_counts_work_not_waiting() {
        let Some(t0) = super::thread_cpu_time() else { return };
        std::thread::sleep(std::time::Duration::from_millis(300));
        let t1 = super::thread_cpu_time().unwrap();
        assert!(t1 - t0 <= std::time::Duration::from_millis(100), "slept: {:?}", t1 - t0);
        // Spin until 50 ms of CPU time show (however loaded the machine), for at most 20 s.
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        let mut t2 = t1;
        while t2 - t1 < std::time::Duration::from_millis(50) && spin.elapsed() < std::time::Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            t2 = super::thread_cpu_time().unwrap();
        }
        assert!(t2 - t1 >= std::time::Duration::from_millis(50), "spun {:?} wall: {:?} CPU", spin.elapsed(), t2 - t1);
    }

    use super::*;

    #[test]
    fn closeness_rules() {
        let t = O0;
        assert!(close(f32::NAN, f32::NAN, 1.0, t, false, false));
        assert!(!close(f32::NAN, 1.0, 1.0, t, false, false));
        assert!(close(f32::NAN, 1.0, 1.0, O2, false, true), "softmax exemption");
        assert!(close(1.0, f32::NAN, 1.0, O2, false, true), "a row holding +inf is NaN after recognition");
        assert!(!close(1.0, f32::NAN, 1.0, O2, false, false), "only where a softmax was introduced");
        assert!(close(f32::INFINITY, f32::INFINITY, 1.0, t, false, false));
        assert!(!close(f32::INFINITY, f32::NEG_INFINITY, 1.0, t, false, false));
        assert!(!close(1.0, f32::INFINITY, 1.0, t, false, false));
        assert!(close(1.0, f32::INFINITY, 1.0, t, true, false), "huge cases skip f32 values");
        assert!(close(1000.0, 1000.5, 1000.0, t, false, false));
        assert!(close(0.0273, 0.0275, 1.0, t, false, false), "amplified rounding in a norm");
        assert!(!close(1.0, 1.01, 1.0, t, false, false));
    }

    fn load_json(json: &str) -> Model {
        let path = std::env::temp_dir().join(format!("kiln-difftest-ill-{}-{}.json", std::process::id(), json.len()));
        std::fs::write(&path, json).unwrap();
        let m = kiln::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_file(&path);
        m
    }

    /// Seed 86011104's shape: a cubic Resize of one value is constant along the last axis in the
    /// oracle's f64 (LayerNorm then gives exactly 0) and varies by an ulp or two in any f32
    /// evaluation, which the LayerNorm amplifies ~1000× (ε = 1e-6). The perturbed oracles find
    /// those rows; the well-conditioned output of the same graph (x + 1) has none.
    #[test]
    fn perturbation_finds_the_amplified_rows_and_only_them() {
        let m = load_json(
            r#"{"format": "kiln", "version": 1, "name": "ill",
                "inputs": [{"name": "x", "dtype": "f32", "shape": [1, 1, 1]}],
                "nodes": [{"name": "r", "op": "Resize", "inputs": ["x"], "outputs": ["t"],
                           "attributes": {"mode": "cubic", "sizes": [7, 9, 4],
                                          "coordinate_transformation_mode": "half_pixel_symmetric"}},
                          {"name": "ln", "op": "LayerNormalization", "inputs": ["t", "g"], "outputs": ["y"],
                           "attributes": {"epsilon": 1e-6}},
                          {"name": "a", "op": "Add", "inputs": ["x", "one"], "outputs": ["z"]}],
                "outputs": ["y", "z"],
                "weights": [{"name": "g", "dtype": "f32", "shape": [], "data": [3.0]},
                            {"name": "one", "dtype": "f32", "shape": [], "data": [1.0]}]}"#,
        );
        let inputs = vec![("x".to_string(), Tensor::from_f32(vec![1, 1, 1], vec![1.0]).unwrap())];
        let noisy = perturbed_oracles(&m, &inputs);
        assert_eq!(noisy.len(), 2);
        let want = kiln_ir::eval::run(&m.graph, &m.weights, &inputs).unwrap();
        let y = want[0].1.as_f32().unwrap();
        assert!(y.iter().all(|&v| v == 0.0), "the oracle's LayerNorm of constant rows is 0");
        let ill = ill_conditioned(&noisy, 0, y, 4, 1.0, O0);
        let rows = ill.chunks(4).filter(|r| r[0]).count();
        assert!(rows >= 50, "{rows} of the 63 LayerNorm rows found ill-conditioned");
        let z = want[1].1.as_f32().unwrap();
        assert!(!ill_conditioned(&noisy, 1, z, 1, 2.0, O0)[0], "x + 1 is well-conditioned");
        // So an f32-rounded JIT result passes; a wrong x + 1 does not.
        // The JIT's f32 result: outside the plain tolerance (this is the false mismatch the
        // perturbation removes), inside once the ill-conditioned rows are set aside; a wrong x + 1
        // is still found.
        let jit = Options { backend: Backend::Jit, opt_level: OptLevel::O0, threads: Some(1), ..Default::default() };
        let mut got = kiln::compile(m.clone(), &jit).unwrap().run(&inputs).unwrap();
        assert!(compare(&want, &got, &[], O0, false, false).is_err(), "the JIT's rounding, amplified, exceeds atol");
        compare(&want, &got, &noisy, O0, false, false).unwrap();
        got[1].1 = Tensor::from_f32(vec![1, 1, 1], vec![1.8]).unwrap();
        let err = compare(&want, &got, &noisy, O0, false, false).unwrap_err();
        assert_eq!(err.0, Kind::Mismatch);
        assert!(err.1.contains("output 'z'"), "{}", err.1);
    }

    /// Perturbation leaves zeros, infinities and NaNs alone, so 0·∞ = NaN stays checked: a JIT that
    /// gave 0 (or ∞) for 0·∞ is still a mismatch.
    #[test]
    fn exact_specials_are_still_compared() {
        let m = load_json(
            r#"{"format": "kiln", "version": 1, "name": "zinf",
                "inputs": [{"name": "x", "dtype": "f32", "shape": [3]}],
                "nodes": [{"name": "m", "op": "Mul", "inputs": ["x", "w"], "outputs": ["y"]}],
                "outputs": ["y"],
                "weights": [{"name": "w", "dtype": "f32", "shape": [3], "data": [0.0, 2.0, 0.0]}]}"#,
        );
        let inputs = vec![("x".to_string(), Tensor::from_f32(vec![3], vec![f32::INFINITY, 1.0, 3.0]).unwrap())];
        let noisy = perturbed_oracles(&m, &inputs);
        let want = kiln_ir::eval::run(&m.graph, &m.weights, &inputs).unwrap();
        assert!(want[0].1.as_f32().unwrap()[0].is_nan());
        let got = vec![("y".to_string(), Tensor::from_f32(vec![3], vec![0.0, 2.0, 0.0]).unwrap())];
        let err = compare(&want, &got, &noisy, O0, false, false).unwrap_err();
        assert!(err.1.contains("element 0"), "{}", err.1);
    }

    /// Long sums widen atol in proportion; short ones keep the stated tolerance, and a wrong
    /// element (off by O(1)·scale) stays out even for a 4096-term sum.
    #[test]
    fn tolerance_grows_with_the_longest_sum() {
        let model = |json: &str| {
            let path =
                std::env::temp_dir().join(format!("kiln-difftest-sum-{}-{}.json", std::process::id(), json.len()));
            std::fs::write(&path, json).unwrap();
            let m = kiln::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let _ = std::fs::remove_file(&path);
            m
        };
        let matmul = model(
            r#"{"format": "kiln", "version": 1, "name": "m",
                "inputs": [{"name": "a", "dtype": "f32", "shape": [2, 4096]},
                           {"name": "b", "dtype": "f32", "shape": [4096, 3]}],
                "nodes": [{"name": "mm", "op": "MatMul", "inputs": ["a", "b"], "outputs": ["y"]}],
                "outputs": ["y"], "weights": []}"#,
        );
        assert_eq!(longest_sum(&matmul.graph), 4096);
        let reduce = model(
            r#"{"format": "kiln", "version": 1, "name": "r",
                "inputs": [{"name": "x", "dtype": "f32", "shape": [300, 2, 5]}],
                "nodes": [{"name": "s", "op": "ReduceSum", "inputs": ["x"], "outputs": ["y"],
                           "attributes": {"axes": [0], "keepdims": 0}}],
                "outputs": ["y"], "weights": []}"#,
        );
        assert_eq!(longest_sum(&reduce.graph), 300);
        assert_eq!(O0.for_sums_of(64).atol, O0.atol);
        let wide = O0.for_sums_of(4096);
        assert_eq!(wide.atol, O0.atol * 32.0);
        assert!(close(1.0, 1.01, 1.0, wide, false, false));
        assert!(!close(1.0, 1.5, 1.0, wide, false, false));
    }
}
