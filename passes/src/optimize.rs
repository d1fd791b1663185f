//! The optimizer's entry point: lift the graph into an e-graph, saturate in stages under explicit
//! limits, extract by the cost model, lower back into a new graph with new weights.

use crate::convert::{LowerError, lift, lower_named};
use crate::cost::CostModel;
use crate::extract::{Extraction, IdMap, extract_no_worse, extract_no_worse_without};
use crate::lang::Kiln;
use crate::rules;
use egg::{BackoffScheduler, Runner, StopReason};
use kiln_ir::{Error, Model};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Limits and switches, set by the caller (`kiln::Options::optimizer`); the library reads no
/// environment variables. The `kiln` command maps its variables onto them through
/// [`OptimizeConfig::from_lookup`]: `KILN_EGRAPH_NODE_LIMIT`, `KILN_EGRAPH_ITER_LIMIT`,
/// `KILN_EGRAPH_TIME_LIMIT_MS` (the whole optimizer), `KILN_LN_TO_RMS` (0 disables Pre-LN →
/// Pre-RMSNorm), `KILN_FUSED_OPS` (0: no MaskedSoftmax/Attention in the output), `KILN_CRMS` (0
/// disables Pre-RMSNorm → Pre-CRMSNorm; 2 applies it wherever it is sound, whatever the cost model
/// estimates).
///
/// **Determinism.** Saturation is bounded by deterministic budgets only: e-nodes, iterations, and
/// matches per rule per iteration. The same model and configuration give the same graph on every
/// machine, loaded or idle. The wall clock is a last-resort safety, never a budget: a stage that
/// runs past `time_limit` makes [`optimize`] return an *error* (never a different partial graph).
///
/// **Memory bound.** Rules check the node budget before every single application
/// ([`crate::rules::KApplier`]), so the e-graph never holds more than
/// `lifted graph + node_limit + MAX_NODES_PER_APPLICATION` (64) e-nodes, whatever the input (egg's
/// own checks only run between rules, which let one rule overshoot by orders of magnitude). The matches a search holds per rule per iteration are bounded by
/// `match_limit(n) = clamp(8·n, 1,000, 8·budget)` for an e-graph of n nodes, doubled at most
/// once per ban of that rule (at most 3 bans in 30 iterations, so ≤ 8× that). Measured (dev
/// profile, `optimizer_scale` example, whole process): the 256-layer bench graph transformer stops
/// its fold stage at 42,037 e-nodes (lifted graph + 30,000) and peaks at 124 MB RSS; the 512-layer
/// one at 54,072 e-nodes and 230 MB.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizeConfig {
    /// Most e-nodes a stage may add to the lifted graph (exceeded by at most one rule
    /// application). Relative, so that a model of any size is optimised (a 100k-node model had
    /// been extracted untouched under the former absolute limit) while memory stays linear in it.
    pub node_limit: usize,
    /// Most iterations per stage.
    pub iter_limit: usize,
    /// Wall-clock safety for the whole optimizer: exceeding it is an error, never a different
    /// result. Generous by default; the budgets above stop saturation long before.
    pub time_limit: Duration,
    /// Run the Pre-LN → Pre-RMSNorm rules.
    pub ln_to_rms: bool,
    /// Introduce the kiln-domain fused ops MaskedSoftmax and Attention (turn off for a backend
    /// that does not implement them).
    pub kiln_ops: bool,
    /// Store zero-mean residual streams in d − 1 dimensions with CRMSNorm ([`crate::crms`]) where
    /// the cost model finds it pays.
    pub crms: bool,
    /// Convert every stream that qualifies even where the cost model estimates no gain
    /// (`KILN_CRMS=2`; for measuring the estimate against the machine).
    pub crms_always: bool,
    pub cost_model: CostModel,
    /// Explain every change ([`OptimizeReport::explanation`], [`crate::explain`]): logs each rule
    /// application. Changes nothing that is optimised.
    pub explain: bool,
}

impl Default for OptimizeConfig {
    fn default() -> OptimizeConfig {
        OptimizeConfig {
            node_limit: 30_000,
            iter_limit: 30,
            time_limit: Duration::from_secs(120),
            ln_to_rms: true,
            kiln_ops: true,
            crms: true,
            crms_always: false,
            cost_model: CostModel::default(),
            explain: false,
        }
    }
}

impl OptimizeConfig {
    /// The defaults with overrides from `lookup`, which maps the variable names above to their
    /// values (the `kiln` command passes the environment); a malformed value is an error naming
    /// the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<OptimizeConfig, Error> {
        let mut config = OptimizeConfig::default();
        let read =
            |name: &str| -> Result<Option<u64>, Error> {
                match lookup(name) {
                    Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                        Error::new(format!("environment variable {name}"), format!("{v:?} is not a number"))
                    }),
                    None => Ok(None),
                }
            };
        if let Some(v) = read("KILN_EGRAPH_NODE_LIMIT")? {
            config.node_limit = v as usize;
        }
        if let Some(v) = read("KILN_EGRAPH_ITER_LIMIT")? {
            config.iter_limit = v as usize;
        }
        if let Some(v) = read("KILN_EGRAPH_TIME_LIMIT_MS")? {
            config.time_limit = Duration::from_millis(v);
        }
        if let Some(v) = read("KILN_LN_TO_RMS")? {
            config.ln_to_rms = v != 0;
        }
        if let Some(v) = read("KILN_FUSED_OPS")? {
            config.kiln_ops = v != 0;
        }
        if let Some(v) = read("KILN_CRMS")? {
            config.crms = v != 0;
            config.crms_always = v == 2;
        }
        Ok(config)
    }
}

/// What the optimizer did, for `kiln compile --emit stats`.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizeReport {
    pub ops_before: usize,
    pub ops_after: usize,
    /// Rewrites applied per rule, over all stages (applied, not necessarily extracted).
    pub rules_fired: BTreeMap<String, usize>,
    /// E-graph size at the end of saturation.
    pub egraph_nodes: usize,
    /// The largest the e-graph's hash-cons (its e-nodes, before rebuilding merges them) grew.
    pub egraph_peak_nodes: usize,
    /// Unions refused per rule because the new term's type differed from the matched e-class's
    /// (a rule condition too weak; see [`crate::rules::KApplier`]). Empty when every rule is sound.
    pub rules_refused: BTreeMap<String, usize>,
    pub egraph_classes: usize,
    /// Iterations over all stages.
    pub iterations: usize,
    /// Why each stage stopped, `stage: reason`, joined with "; ".
    pub stop_reason: String,
    /// Wall time per phase in milliseconds, in order.
    pub phase_ms: Vec<(String, f64)>,
    /// Estimated run time in seconds by the cost model, of the input and of the output; the output
    /// is never estimated slower than the input.
    pub cost_before: f64,
    pub cost_after: f64,
    /// Why each changed input node changed, when [`OptimizeConfig::explain`] is set.
    pub explanation: Option<crate::explain::Explanation>,
    /// What the Pre-CRMSNorm pass converted and refused (`None` when it is switched off).
    pub crms: Option<crate::crms::CrmsReport>,
}

/// Extractions tried after a fold overflowed, before the input program is kept.
const MAX_REFOLDS: usize = 8;

/// Matches per rule per iteration before egg's backoff scheduler bans the rule for a while. Rules
/// that match once per layer (affine-lower, …) exceed egg's default (1,000) on deep models, and
/// banning them stretches saturation over more iterations, each searching the whole e-graph: the
/// limit scales with the e-graph, within a fixed multiple of the node budget (so that the matches
/// held in memory stay bounded too).
fn match_limit(egraph: &crate::analysis::KGraph, budget: usize) -> usize {
    (8 * egraph.total_number_of_nodes()).clamp(1_000, 8 * budget.max(125))
}

fn describe(reason: &Option<StopReason>) -> String {
    match reason {
        Some(StopReason::Saturated) => "saturated".into(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit {n}"),
        Some(StopReason::NodeLimit(n)) => format!("node limit {n}"),
        Some(StopReason::TimeLimit(s)) => format!("time limit {s}s"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "not run".into(),
    }
}

/// Optimises a model: returns a new graph and a new weight store (original weights are shared,
/// never modified; folded weights get new names) with the same inputs and outputs (names, types
/// and values up to floating-point reassociation).
pub fn optimize(model: &Model, config: &OptimizeConfig) -> Result<(Model, OptimizeReport), Error> {
    let mut phase_ms = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |name: &str, phase_ms: &mut Vec<(String, f64)>| {
        phase_ms.push((name.to_string(), clock.elapsed().as_secs_f64() * 1e3));
        clock = Instant::now();
    };
    let ops_before = model.graph.num_op_nodes();
    let mut lifted = lift(model)?;
    let lift_end = lifted.egraph.nodes().len();
    if config.explain {
        lifted.egraph.analysis.applications = Some(Vec::new());
    }
    lap("lift", &mut phase_ms);

    let mut rules_fired: BTreeMap<String, usize> = BTreeMap::new();
    let mut iterations = 0;
    let mut reasons = Vec::new();
    let start = Instant::now();
    // The node budget of both stages: the lifted graph plus `node_limit`.
    let budget = lifted.egraph.total_size().saturating_add(config.node_limit);
    let stages = [("recognise", rules::recognise(config.kiln_ops)), ("fold", rules::fold(config.ln_to_rms))];
    for (stage, rules) in stages {
        let mut egraph = std::mem::take(&mut lifted.egraph);
        egraph.analysis.node_budget = budget;
        let runner = Runner::default()
            .with_scheduler(BackoffScheduler::default().with_initial_match_limit(match_limit(&egraph, budget)))
            .with_egraph(egraph)
            .with_node_limit(budget)
            .with_iter_limit(config.iter_limit)
            .with_time_limit(config.time_limit.saturating_sub(start.elapsed()))
            .run(&rules);
        if let Some(StopReason::TimeLimit(secs)) = runner.stop_reason {
            return Err(Error::new(
                format!("optimizer stage '{stage}'"),
                format!(
                    "ran past the wall-clock safety limit ({secs:.1} s of {:?}) before its node budget \
                     ({}) or iteration budget ({}) stopped it; the result would depend on machine load, \
                     so no graph is returned (raise OptimizeConfig::time_limit — KILN_EGRAPH_TIME_LIMIT_MS for the \
                     kiln command — or lower node_limit, KILN_EGRAPH_NODE_LIMIT)",
                    config.time_limit, budget, config.iter_limit
                ),
            )
            .with_kind(kiln_ir::ErrorKind::ResourceLimit));
        }
        for it in &runner.iterations {
            for (rule, n) in &it.applied {
                *rules_fired.entry(rule.to_string()).or_insert(0) += n;
            }
        }
        iterations += runner.iterations.len();
        reasons.push(format!("{stage}: {}", describe(&runner.stop_reason)));
        lifted.egraph = runner.egraph;
        lap(stage, &mut phase_ms);
    }
    lifted.egraph.rebuild();
    let baseline = lifted.original_choice();
    // A fold that overflows (a created constant non-finite from finite inputs) is found when the
    // extracted constants are evaluated; extraction then runs again without that node. Each round
    // bans at least one node; after `MAX_REFOLDS` the input program (the baseline, which folds
    // nothing the input graph did not compute) is lowered instead.
    let mut banned: IdMap<Vec<Kiln>> = IdMap::default();
    let mut refolds = 0;
    let (mut extract_ms, mut lower_ms) = (0.0, 0.0);
    let ((optimised, names), extraction) = loop {
        let t = Instant::now();
        let extraction = if refolds < MAX_REFOLDS {
            extract_no_worse_without(&lifted.egraph, &lifted.outputs, &config.cost_model, &baseline, &banned)
                .map_err(|e| Error::new("optimizer extraction", e))?
        } else {
            let cost = extract_no_worse(&lifted.egraph, &lifted.outputs, &config.cost_model, &baseline)
                .map_err(|e| Error::new("optimizer extraction", e))?
                .baseline_cost;
            Extraction { choice: baseline.clone(), cost, baseline_cost: cost }
        };
        extract_ms += t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let lowered = lower_named(model, &lifted, &extraction);
        lower_ms += t.elapsed().as_secs_f64() * 1e3;
        match lowered {
            Ok(m) => break (m, extraction),
            Err(LowerError::NonFinite { class, node }) if refolds < MAX_REFOLDS => {
                banned.entry(lifted.egraph.find(class)).or_default().push(node);
                refolds += 1;
            }
            Err(LowerError::NonFinite { class, node }) => {
                return Err(Error::new("constant folding", format!("{node} (e-class {class}) of the input program")));
            }
            Err(LowerError::Error(e)) => return Err(e),
        }
    };
    phase_ms.push(("extract".to_string(), extract_ms));
    phase_ms.push(("lower".to_string(), lower_ms));
    let explanation = config.explain.then(|| {
        let t = Instant::now();
        let e = crate::explain::explain(model, &lifted, lift_end, &extraction.choice, &names, &optimised);
        phase_ms.push(("explain".to_string(), t.elapsed().as_secs_f64() * 1e3));
        e
    });
    let mut optimised = optimised;
    let mut crms = None;
    let mut cost_after = extraction.cost;
    if config.crms {
        let t = Instant::now();
        let (compressed, report) = crate::crms::compress(&optimised, &config.cost_model, config.crms_always)?;
        if !report.converted.is_empty() {
            rules_fired.insert("crms-norm".to_string(), report.converted.len());
            cost_after -= report.cost_before - report.cost_after;
            optimised = compressed;
        }
        phase_ms.push(("crms".to_string(), t.elapsed().as_secs_f64() * 1e3));
        crms = Some(report);
    }
    let report = OptimizeReport {
        ops_before,
        ops_after: optimised.graph.num_op_nodes(),
        rules_fired,
        egraph_nodes: lifted.egraph.total_number_of_nodes(),
        egraph_peak_nodes: lifted.egraph.analysis.peak_size.max(lifted.egraph.total_size()),
        rules_refused: lifted.egraph.analysis.refused.clone(),
        egraph_classes: lifted.egraph.number_of_classes(),
        iterations,
        stop_reason: reasons.join("; "),
        phase_ms,
        cost_before: extraction.baseline_cost,
        cost_after,
        explanation,
        crms,
    };
    Ok((optimised, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_environment() {
        let env = |name: &str| match name {
            "KILN_EGRAPH_NODE_LIMIT" => Some("123".to_string()),
            "KILN_EGRAPH_TIME_LIMIT_MS" => Some(" 250 ".to_string()),
            "KILN_LN_TO_RMS" => Some("0".to_string()),
            "KILN_FUSED_OPS" => Some("0".to_string()),
            _ => None,
        };
        let config = OptimizeConfig::from_lookup(env).unwrap();
        assert_eq!(config.node_limit, 123);
        assert_eq!(config.time_limit, Duration::from_millis(250));
        assert!(!config.ln_to_rms && !config.kiln_ops);
        assert_eq!(config.iter_limit, OptimizeConfig::default().iter_limit);
        let err = OptimizeConfig::from_lookup(|_| Some("lots".into())).unwrap_err();
        assert!(err.to_string().contains("KILN_EGRAPH_NODE_LIMIT"), "{err}");
    }
}
