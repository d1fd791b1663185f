//! The optimizer's entry point: lift the graph into an e-graph, saturate in stages under explicit
//! limits, extract by the cost model, lower back into a new graph with new weights.

use crate::convert::{lift, lower};
use crate::cost::CostModel;
use crate::extract::extract_no_worse;
use crate::rules;
use egg::{BackoffScheduler, Runner, StopReason};
use kiln_ir::{Error, Model};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Limits and switches. Every limit can be overridden by an environment variable (read by
/// [`OptimizeConfig::from_env`]): `KILN_EGRAPH_NODE_LIMIT`, `KILN_EGRAPH_ITER_LIMIT`,
/// `KILN_EGRAPH_TIME_LIMIT_MS` (per stage), `KILN_LN_TO_RMS` (0 disables Pre-LN → Pre-RMSNorm),
/// `KILN_FUSED_OPS` (0: no MaskedSoftmax/Attention in the output).
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizeConfig {
    /// Most e-nodes per stage.
    pub node_limit: usize,
    /// Most iterations per stage.
    pub iter_limit: usize,
    /// Most wall time per stage.
    pub time_limit: Duration,
    /// Run the Pre-LN → Pre-RMSNorm rules.
    pub ln_to_rms: bool,
    /// Introduce the kiln-domain fused ops MaskedSoftmax and Attention (turn off for a backend
    /// that does not implement them).
    pub kiln_ops: bool,
    pub cost_model: CostModel,
}

impl Default for OptimizeConfig {
    fn default() -> OptimizeConfig {
        OptimizeConfig {
            node_limit: 30_000,
            iter_limit: 30,
            time_limit: Duration::from_secs(10),
            ln_to_rms: true,
            kiln_ops: true,
            cost_model: CostModel::default(),
        }
    }
}

impl OptimizeConfig {
    /// The defaults with any environment overrides applied; a malformed value is an error naming
    /// the variable.
    pub fn from_env() -> Result<OptimizeConfig, Error> {
        OptimizeConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// The defaults with overrides from `lookup` (the environment in [`Self::from_env`]).
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
    lap("lift", &mut phase_ms);

    let mut rules_fired: BTreeMap<String, usize> = BTreeMap::new();
    let mut iterations = 0;
    let mut reasons = Vec::new();
    // Tracked: e-classes the rules create remember where (for naming the nodes of the output).
    let stages = [
        ("recognise", rules::tracked(rules::recognise(config.kiln_ops))),
        ("fold", rules::tracked(rules::fold(config.ln_to_rms))),
    ];
    for (stage, rules) in stages {
        let egraph = std::mem::take(&mut lifted.egraph);
        // Rules that match once per layer (affine-lower, …) exceed egg's default per-iteration
        // match limit (1,000) on deep models; banning them stretches saturation over more
        // iterations, each searching the whole e-graph. Scale the limit with the model instead.
        let match_limit = 1_000.max(8 * egraph.total_number_of_nodes());
        let scheduler = BackoffScheduler::default().with_initial_match_limit(match_limit);
        let runner = Runner::default()
            .with_scheduler(scheduler)
            .with_egraph(egraph)
            .with_node_limit(config.node_limit)
            .with_iter_limit(config.iter_limit)
            .with_time_limit(config.time_limit)
            .run(&rules);
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
    let extraction = extract_no_worse(&lifted.egraph, &lifted.outputs, &config.cost_model, &baseline)
        .map_err(|e| Error::new("optimizer extraction", e))?;
    lap("extract", &mut phase_ms);
    let optimised = lower(model, &lifted, &extraction)?;
    lap("lower", &mut phase_ms);
    let report = OptimizeReport {
        ops_before,
        ops_after: optimised.graph.num_op_nodes(),
        rules_fired,
        egraph_nodes: lifted.egraph.total_number_of_nodes(),
        egraph_classes: lifted.egraph.number_of_classes(),
        iterations,
        stop_reason: reasons.join("; "),
        phase_ms,
        cost_before: extraction.baseline_cost,
        cost_after: extraction.cost,
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
