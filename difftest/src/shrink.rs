//! The shrinker: reduces a failing case to a small one that fails the same way (same engine, same
//! kind of failure), by greedy steps, each kept only if the failure stays:
//! - drop an output, then every node, input and weight that no output needs;
//! - cut a node: its outputs become graph inputs holding the values the oracle computed for them,
//!   which removes everything upstream that nothing else needs;
//! - bypass a node: its users read one of its inputs of the same type instead;
//! - shrink shapes: cut every input and weight that has size d on the same axis (counted from the
//!   right, as broadcasting aligns them) to 1 or d/2 entries there, kept if the case still builds;
//! - simplify values: a whole tensor to 1 (or 0), or to its values rounded to one decimal, or
//!   single elements of small tensors to 0 (keeping NaN, ∞ and huge values where they matter).

use crate::case::{Case, NodeSpec};
use crate::check::{CheckConfig, Failure, check};
use kiln::{Backend, OptLevel, Options, Tensor, TensorData};
use std::collections::{HashMap, HashSet};

/// Shrinks `case`, which fails with `failure`, with at most `budget` runs of the check.
pub fn shrink(case: &Case, failure: &Failure, config: &CheckConfig, budget: usize) -> Case {
    let target = failure.signature();
    let runs = std::cell::Cell::new(0usize);
    let out_of_budget = || runs.get() >= budget;
    let still_fails = |c: &Case| -> bool {
        runs.set(runs.get() + 1);
        check(c, config).iter().any(|f| f.signature() == target)
    };
    let mut best = prune(case.clone());
    if best != *case && !still_fails(&best) {
        best = case.clone();
    }
    loop {
        let before = best.clone();
        // Outputs, one at a time.
        let mut i = 0;
        while best.outputs.len() > 1 && i < best.outputs.len() && !out_of_budget() {
            let mut c = best.clone();
            c.outputs.remove(i);
            let c = prune(c);
            if still_fails(&c) { best = c } else { i += 1 }
        }
        // Cut nodes, earliest first: the front of the graph goes.
        if let Some(values) = intermediate_values(&best) {
            let mut k = 0;
            while k < best.nodes.len() && !out_of_budget() {
                let c = prune(cut(&best, k, &values));
                if c.nodes.len() < best.nodes.len() && still_fails(&c) {
                    best = c;
                } else {
                    k += 1;
                }
            }
        }
        // Bypass nodes.
        let mut k = 0;
        while k < best.nodes.len() && !out_of_budget() {
            match bypass(&best, k) {
                Some(c) if still_fails(&c) => best = c,
                _ => k += 1,
            }
        }
        // Shrink shapes: every input and weight with size d on the k-th axis from the right (the
        // axes that broadcast together) cut to its first 1 or d/2 entries there, all at once.
        let mut dims: Vec<(usize, usize)> = best
            .inputs
            .iter()
            .chain(&best.weights)
            .flat_map(|(_, t)| t.shape().iter().rev().enumerate().map(|(k, &d)| (k, d)).collect::<Vec<_>>())
            .filter(|&(_, d)| d > 1)
            .collect();
        dims.sort_unstable();
        dims.dedup();
        for (k, d) in dims {
            for new in [1, d / 2] {
                if out_of_budget() || new == 0 || new == d {
                    continue;
                }
                if let Some(c) = cut_axis(&best, k, d, new)
                    && c.model().is_ok()
                    && still_fails(&c)
                {
                    best = c;
                    break;
                }
            }
        }
        // Simplify values.
        let leaves = best.inputs.len() + best.weights.len();
        for j in 0..leaves {
            for simplify in [Simplify::Ones, Simplify::Zeros, Simplify::Round] {
                if out_of_budget() {
                    break;
                }
                let c = simplified(&best, j, simplify);
                if c != best && still_fails(&c) {
                    best = c;
                    break;
                }
            }
            let len = leaf(&best, j).map_or(0, Tensor::len);
            if len <= 64 {
                for e in 0..len {
                    if out_of_budget() {
                        break;
                    }
                    let c = simplified(&best, j, Simplify::ElementZero(e));
                    if c != best && still_fails(&c) {
                        best = c;
                    }
                }
            }
        }
        if best == before || out_of_budget() {
            return best;
        }
    }
}

/// Removes nodes no output needs, and inputs and weights nothing reads.
pub fn prune(mut case: Case) -> Case {
    let mut needed: HashSet<String> = case.outputs.iter().cloned().collect();
    let mut keep = vec![false; case.nodes.len()];
    for (i, n) in case.nodes.iter().enumerate().rev() {
        if n.outputs.iter().any(|o| needed.contains(o)) {
            keep[i] = true;
            needed.extend(n.inputs.iter().cloned());
        }
    }
    // Nodes are in topological order (the generator and every step here keep them so).
    let mut it = keep.iter();
    case.nodes.retain(|_| *it.next().unwrap_or(&false));
    case.inputs.retain(|(n, _)| needed.contains(n));
    case.weights.retain(|(n, _)| needed.contains(n));
    case
}

/// Every tensor's value on the oracle, by name.
fn intermediate_values(case: &Case) -> Option<HashMap<String, Tensor>> {
    let all = case.with_every_output();
    let model = all.model().ok()?;
    let options = Options { backend: Backend::Interp, opt_level: OptLevel::O0, threads: Some(1), ..Default::default() };
    let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kiln::compile(model, &options).and_then(|c| c.run(&all.inputs))
    }))
    .ok()?
    .ok()?;
    Some(outputs.into_iter().collect())
}

/// Node `k` replaced by graph inputs holding its outputs' values.
fn cut(case: &Case, k: usize, values: &HashMap<String, Tensor>) -> Case {
    let mut c = case.clone();
    let node = c.nodes.remove(k);
    for o in &node.outputs {
        match values.get(o) {
            Some(t) => c.inputs.push((o.clone(), t.clone())),
            None => return case.clone(),
        }
    }
    // An output that is now an input makes the graph trivial for that output; drop such outputs
    // unless nothing else remains.
    let inputs: HashSet<&String> = c.inputs.iter().map(|(n, _)| n).collect();
    let outs: Vec<String> = c.outputs.iter().filter(|o| !inputs.contains(o)).cloned().collect();
    if outs.is_empty() {
        return case.clone();
    }
    c.outputs = outs;
    c
}

/// Node `k` removed, its single output replaced by one of its inputs of the same type.
fn bypass(case: &Case, k: usize) -> Option<Case> {
    let node: &NodeSpec = &case.nodes[k];
    if node.outputs.len() != 1 {
        return None;
    }
    let model = case.model().ok()?;
    let graph = &model.graph;
    let ty = |name: &str| graph.find_value(name).map(|v| graph.value_type(v).clone());
    let out_ty = ty(&node.outputs[0])?;
    let replacement = node.inputs.iter().find(|i| ty(i).as_ref() == Some(&out_ty))?.clone();
    let old = node.outputs[0].clone();
    let mut c = case.clone();
    c.nodes.remove(k);
    for n in &mut c.nodes {
        for i in &mut n.inputs {
            if *i == old {
                *i = replacement.clone();
            }
        }
    }
    // An output that is now an input or weight, or listed twice, would make the graph trivial or
    // invalid: drop it.
    let leaves: HashSet<&String> = c.inputs.iter().chain(&c.weights).map(|(n, _)| n).collect();
    let mut seen = HashSet::new();
    let outs: Vec<String> = c
        .outputs
        .iter()
        .map(|o| if *o == old { replacement.clone() } else { o.clone() })
        .filter(|o| !leaves.contains(o) && seen.insert(o.clone()))
        .collect();
    if outs.is_empty() {
        return None;
    }
    c.outputs = outs;
    Some(prune(c))
}

/// Every input and weight whose k-th axis from the right has size `d`, cut to its first `new`
/// entries along that axis.
fn cut_axis(case: &Case, k: usize, d: usize, new: usize) -> Option<Case> {
    let mut c = case.clone();
    let mut changed = false;
    for (_, t) in c.inputs.iter_mut().chain(c.weights.iter_mut()) {
        let shape = t.shape().to_vec();
        if shape.len() <= k || shape[shape.len() - 1 - k] != d {
            continue;
        }
        let axis = shape.len() - 1 - k;
        let inner: usize = shape[axis + 1..].iter().product();
        let outer: usize = shape[..axis].iter().product();
        let keep = |i: usize| (i / inner) % d < new;
        let data = match t.data() {
            TensorData::F32(v) => {
                TensorData::F32(v.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, x)| *x).collect())
            }
            TensorData::I64(v) => {
                TensorData::I64(v.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, x)| *x).collect())
            }
            TensorData::Bool(v) => {
                TensorData::Bool(v.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(_, x)| *x).collect())
            }
        };
        let mut new_shape = shape.clone();
        new_shape[axis] = new;
        debug_assert_eq!(data.len(), outer * new * inner);
        *t = Tensor::new(new_shape, data).ok()?;
        changed = true;
    }
    changed.then_some(c)
}

#[derive(Debug, Clone, Copy)]
enum Simplify {
    Ones,
    Zeros,
    Round,
    ElementZero(usize),
}

fn leaf(case: &Case, j: usize) -> Option<&Tensor> {
    case.inputs.iter().chain(&case.weights).nth(j).map(|(_, t)| t)
}

fn simplified(case: &Case, j: usize, how: Simplify) -> Case {
    let mut c = case.clone();
    let n_inputs = c.inputs.len();
    let slot = if j < n_inputs { &mut c.inputs[j].1 } else { &mut c.weights[j - n_inputs].1 };
    let shape = slot.shape().to_vec();
    let data = match (slot.data(), how) {
        (TensorData::F32(v), Simplify::Ones) => TensorData::F32(vec![1.0; v.len()]),
        (TensorData::F32(v), Simplify::Zeros) => TensorData::F32(vec![0.0; v.len()]),
        (TensorData::F32(v), Simplify::Round) => TensorData::F32(
            v.iter().map(|x| if x.is_finite() && x.abs() < 1e6 { (x * 10.0).round() / 10.0 } else { *x }).collect(),
        ),
        (TensorData::F32(v), Simplify::ElementZero(e)) => {
            let mut v = v.clone();
            v[e] = 0.0;
            TensorData::F32(v)
        }
        // Integer and bool data index and select; changing them is rarely smaller and often
        // invalid (a Gather index, a divisor), so it is left alone.
        _ => return c,
    };
    if let Ok(t) = Tensor::new(shape, data) {
        *slot = t;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Op, UnaryOp};

    #[test]
    fn prune_drops_what_no_output_needs() {
        let x = Tensor::from_f32([2], vec![1.0, 2.0]).unwrap();
        let node = |name: &str, input: &str, out: &str| NodeSpec {
            name: name.into(),
            op: Op::Unary(UnaryOp::Neg),
            inputs: vec![input.into()],
            outputs: vec![out.into()],
        };
        let case = Case {
            seed: 0,
            inputs: vec![("x".into(), x.clone()), ("unused".into(), x)],
            weights: vec![],
            nodes: vec![node("a", "x", "ta"), node("b", "ta", "tb"), node("c", "x", "tc")],
            outputs: vec!["tb".into()],
        };
        let pruned = prune(case);
        assert_eq!(pruned.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(pruned.inputs.len(), 1);
    }
}
