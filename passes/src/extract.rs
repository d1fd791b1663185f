//! DAG-aware extraction. egg's `Extractor` minimises a *tree* cost, which counts a shared subterm
//! once per use: it would fold a BatchNorm into a Conv whose output is also needed elsewhere and
//! then pay for both convolutions. Here the objective is the cost of the extracted DAG, every
//! reachable e-class counted once:
//!
//! 1. start from the tree-cost optimum (a fixpoint over e-classes, as egg does);
//! 2. improve it by local search: for each reachable e-class with alternatives, try each node and
//!    keep it when the DAG cost of the whole extraction drops; repeat until no move helps (bounded).
//!
//! `LpExtractor` would be exact but needs the CBC library; this is deterministic and dependency-free.

use crate::analysis::KGraph;
use crate::cost::CostModel;
use crate::lang::Kiln;
use egg::{Id, Language};
use std::collections::{HashMap, HashSet};

/// The chosen node of every e-class the outputs need, and the DAG cost of the choice.
#[derive(Debug, Clone)]
pub struct Extraction {
    pub choice: HashMap<Id, Kiln>,
    pub cost: f64,
    /// The DAG cost of the input program (set by [`extract_no_worse`]; otherwise `cost`).
    pub baseline_cost: f64,
}

/// How many local-search passes to run at most.
const MAX_PASSES: usize = 4;

/// Extracts the cheapest program found; `baseline` (the input program, as a node per e-class) is
/// kept instead when it is at least as cheap, so the result is never worse than the input under the
/// cost model.
pub fn extract_no_worse(
    eg: &KGraph,
    roots: &[Id],
    model: &CostModel,
    baseline: &HashMap<Id, Kiln>,
) -> Result<Extraction, String> {
    let found = extract(eg, roots, model);
    let node_costs = node_costs(eg, model);
    let roots: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    let base_cost = dag_cost(eg, &roots, baseline, &node_costs);
    match found {
        Ok(found) if found.cost < base_cost => Ok(Extraction { baseline_cost: base_cost, ..found }),
        _ if base_cost.is_finite() => {
            let keep = reachable(eg, &roots, baseline);
            let choice = baseline.iter().filter(|(id, _)| keep.contains(id)).map(|(k, v)| (*k, v.clone())).collect();
            Ok(Extraction { choice, cost: base_cost, baseline_cost: base_cost })
        }
        other => other,
    }
}

fn node_costs(eg: &KGraph, model: &CostModel) -> HashMap<Id, Vec<(Kiln, f64)>> {
    let mut node_costs: HashMap<Id, Vec<(Kiln, f64)>> = HashMap::new();
    for class in eg.classes() {
        let nodes = class
            .nodes
            .iter()
            .map(|n| (n.clone(), model.node_cost(eg, class.id, n)))
            .filter(|(_, c)| c.is_finite())
            .collect();
        node_costs.insert(class.id, nodes);
    }
    node_costs
}

pub fn extract(eg: &KGraph, roots: &[Id], model: &CostModel) -> Result<Extraction, String> {
    // Node costs, computed once.
    let node_costs = node_costs(eg, model);

    // 1. Tree-cost fixpoint.
    let mut best: HashMap<Id, (f64, Kiln)> = HashMap::new();
    loop {
        let mut changed = false;
        for class in eg.classes() {
            for (node, cost) in &node_costs[&class.id] {
                let mut total = *cost;
                let mut ok = true;
                for &c in node.children() {
                    match best.get(&eg.find(c)) {
                        Some((cc, _)) => total += cc,
                        None => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    continue;
                }
                let better = best.get(&class.id).is_none_or(|(old, _)| total < *old);
                if better {
                    best.insert(class.id, (total, node.clone()));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut choice: HashMap<Id, Kiln> = best.into_iter().map(|(id, (_, n))| (id, n)).collect();
    let roots: Vec<Id> = roots.iter().map(|&r| eg.find(r)).collect();
    for &r in &roots {
        if !choice.contains_key(&r) {
            return Err(format!("no finite-cost term for e-class {r}: {:?}", eg[r].nodes));
        }
    }

    // 2. Local search on the DAG cost.
    let mut cost = dag_cost(eg, &roots, &choice, &node_costs);
    for _ in 0..MAX_PASSES {
        let mut improved = false;
        let mut candidates: Vec<Id> = reachable(eg, &roots, &choice).into_iter().collect();
        candidates.sort();
        for class in candidates {
            let alternatives = &node_costs[&class];
            if alternatives.len() < 2 {
                continue;
            }
            let current = choice[&class].clone();
            for (node, _) in alternatives {
                if *node == current || !node.children().iter().all(|c| choice.contains_key(&eg.find(*c))) {
                    continue;
                }
                choice.insert(class, node.clone());
                let new_cost = dag_cost(eg, &roots, &choice, &node_costs);
                if new_cost < cost * (1.0 - 1e-9) {
                    cost = new_cost;
                    improved = true;
                    break;
                }
                choice.insert(class, current.clone());
            }
        }
        if !improved {
            break;
        }
    }
    if !cost.is_finite() {
        return Err("extraction found no acyclic finite-cost program".into());
    }
    let keep = reachable(eg, &roots, &choice);
    choice.retain(|id, _| keep.contains(id));
    Ok(Extraction { choice, cost, baseline_cost: cost })
}

fn reachable(eg: &KGraph, roots: &[Id], choice: &HashMap<Id, Kiln>) -> HashSet<Id> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Id> = roots.to_vec();
    while let Some(id) = stack.pop() {
        if seen.insert(id)
            && let Some(node) = choice.get(&id)
        {
            stack.extend(node.children().iter().map(|&c| eg.find(c)));
        }
    }
    seen
}

/// The cost of the extracted DAG (each class once); infinity if it has a cycle.
fn dag_cost(eg: &KGraph, roots: &[Id], choice: &HashMap<Id, Kiln>, costs: &HashMap<Id, Vec<(Kiln, f64)>>) -> f64 {
    // Iterative DFS with colours to detect cycles.
    let mut state: HashMap<Id, u8> = HashMap::new(); // 1 = in progress, 2 = done
    let mut total = 0.0;
    for &root in roots {
        let mut stack: Vec<(Id, bool)> = vec![(root, false)];
        while let Some((id, children_done)) = stack.pop() {
            if children_done {
                state.insert(id, 2);
                continue;
            }
            match state.get(&id) {
                Some(2) => continue,
                Some(1) => return f64::INFINITY,
                _ => {}
            }
            let Some(node) = choice.get(&id) else { return f64::INFINITY };
            state.insert(id, 1);
            total += costs[&id].iter().find(|(n, _)| n == node).map_or(f64::INFINITY, |(_, c)| *c);
            stack.push((id, true));
            for &c in node.children() {
                let c = eg.find(c);
                match state.get(&c) {
                    Some(2) => {}
                    Some(1) => return f64::INFINITY,
                    _ => stack.push((c, false)),
                }
            }
        }
    }
    total
}
