//! The reference interpreter: runs any graph node by node with each op's reference `eval`. It is the
//! oracle that every optimisation and every generated kernel is checked against.

use crate::error::{Error, ErrorKind, Result};
use crate::graph::{Graph, NodeKind, Value};
use crate::op::Op;
use crate::tensor::Tensor;
use crate::weights::Weights;
use std::collections::HashMap;
use std::sync::Arc;

/// Checks run-time inputs against the graph's declared inputs: every input given once, by name,
/// with the declared element type and shape. Returns them in the graph's input order.
pub fn check_inputs<'a>(graph: &Graph, inputs: &'a [(String, Tensor)]) -> Result<Vec<&'a Tensor>> {
    check_inputs_in_order(graph, inputs).map_err(|e| e.with_kind(ErrorKind::Input))
}

fn check_inputs_in_order<'a>(graph: &Graph, inputs: &'a [(String, Tensor)]) -> Result<Vec<&'a Tensor>> {
    let mut by_name: HashMap<&str, &Tensor> = HashMap::new();
    for (name, tensor) in inputs {
        if by_name.insert(name.as_str(), tensor).is_some() {
            return Err(Error::new(format!("input '{name}'"), "is given twice"));
        }
    }
    let mut ordered = Vec::with_capacity(graph.inputs().len());
    for &id in graph.inputs() {
        let info = &graph.node(id).outputs[0];
        let Some(tensor) = by_name.remove(info.name.as_str()) else {
            return Err(Error::new(format!("input '{}'", info.name), format!("is missing (expected {})", info.ty)));
        };
        if tensor.ty() != info.ty {
            return Err(Error::new(
                format!("input '{}'", info.name),
                format!("expected {} but was given {}", info.ty, tensor.ty()),
            ));
        }
        ordered.push(tensor);
    }
    if let Some(name) = by_name.keys().min() {
        let known: Vec<&str> = graph.inputs().iter().map(|&id| graph.node(id).name.as_str()).collect();
        return Err(Error::new(
            format!("input '{name}'"),
            format!("is not an input of the model (inputs: {})", known.join(", ")),
        ));
    }
    Ok(ordered)
}

/// Runs the graph on the reference interpreter. Returns the outputs in declaration order, by name.
pub fn run(graph: &Graph, weights: &Weights, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
    run_impl(graph, weights, inputs, None)
}

/// A hook [`run_perturbed`] passes each value through, with the op that made it.
pub type Perturb<'a> = dyn FnMut(Option<&Op>, Tensor) -> Tensor + 'a;

/// Runs the graph with every value — each input, each weight, each op's outputs — passed through
/// `perturb` (with the op that made it, `None` for inputs and weights) before anything reads it. The differential tester perturbs f32 values by a few ulps
/// to find the outputs that rounding alone can change beyond its tolerance (ill-conditioned:
/// a normalization of a near-constant row, a cancelling sum divided by zero), which it then does
/// not compare.
pub fn run_perturbed(
    graph: &Graph,
    weights: &Weights,
    inputs: &[(String, Tensor)],
    perturb: &mut Perturb<'_>,
) -> Result<Vec<(String, Tensor)>> {
    run_impl(graph, weights, inputs, Some(perturb))
}

fn run_impl(
    graph: &Graph,
    weights: &Weights,
    inputs: &[(String, Tensor)],
    mut perturb: Option<&mut Perturb<'_>>,
) -> Result<Vec<(String, Tensor)>> {
    let given = check_inputs(graph, inputs)?;
    weights.check_against(graph)?;
    let mut values: HashMap<Value, Arc<Tensor>> = HashMap::new();
    for (&id, tensor) in graph.inputs().iter().zip(given) {
        let tensor = match perturb.as_mut() {
            Some(p) => p(None, tensor.clone()),
            None => tensor.clone(),
        };
        values.insert(Value { node: id, port: 0 }, Arc::new(tensor));
    }
    // How many more reads each value has, so that dead intermediates are freed early.
    let mut remaining_reads: HashMap<Value, usize> = HashMap::new();
    for id in graph.op_nodes() {
        for v in graph.node_inputs(id) {
            *remaining_reads.entry(v).or_insert(0) += 1;
        }
    }
    for &v in graph.outputs() {
        *remaining_reads.entry(v).or_insert(0) += 1;
    }
    for id in graph.topo_order() {
        let node = graph.node(id);
        match &node.kind {
            NodeKind::Input => {}
            NodeKind::Weight => {
                let tensor = weights
                    .get(&node.name)
                    .cloned()
                    .ok_or_else(|| Error::new(format!("weight '{}'", node.name), "has no data"))?;
                let tensor = match perturb.as_mut() {
                    Some(p) => Arc::new(p(None, tensor.as_ref().clone())),
                    None => tensor,
                };
                values.insert(Value { node: id, port: 0 }, tensor);
            }
            NodeKind::Op(op) => {
                let input_values = graph.node_inputs(id);
                let args: Vec<Arc<Tensor>> = input_values
                    .iter()
                    .map(|v| {
                        values.get(v).cloned().ok_or_else(|| {
                            Error::new(format!("node '{}'", node.name), "reads a value that was never computed")
                        })
                    })
                    .collect::<Result<_>>()?;
                let arg_refs: Vec<&Tensor> = args.iter().map(|t| t.as_ref()).collect();
                let outputs =
                    op.eval(&arg_refs).map_err(|e| Error::new(format!("node '{}' ({})", node.name, op.name()), e))?;
                if outputs.len() != node.outputs.len() {
                    return Err(Error::new(
                        format!("node '{}'", node.name),
                        format!("produced {} outputs, expected {}", outputs.len(), node.outputs.len()),
                    ));
                }
                for (port, (tensor, info)) in outputs.into_iter().zip(&node.outputs).enumerate() {
                    if tensor.ty() != info.ty {
                        return Err(Error::new(
                            format!("node '{}' ({})", node.name, op.name()),
                            format!(
                                "internal error: output '{}' evaluated to {} but was inferred as {}",
                                info.name,
                                tensor.ty(),
                                info.ty
                            ),
                        ));
                    }
                    let tensor = match perturb.as_mut() {
                        Some(p) => p(Some(op), tensor),
                        None => tensor,
                    };
                    values.insert(Value { node: id, port }, Arc::new(tensor));
                }
                for v in input_values {
                    if let Some(n) = remaining_reads.get_mut(&v) {
                        *n -= 1;
                        if *n == 0 {
                            values.remove(&v);
                        }
                    }
                }
            }
        }
    }
    graph
        .outputs()
        .iter()
        .map(|&v| {
            let name = graph.value_name(v).to_string();
            let tensor = values
                .get(&v)
                .map(|t| t.as_ref().clone())
                .ok_or_else(|| Error::new(format!("output '{name}'"), "was never computed"))?;
            Ok((name, tensor))
        })
        .collect()
}
