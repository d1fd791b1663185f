//! Builds a validated [`Graph`] from declarations in any order, collecting every problem.
//!
//! Frontends (JSON, ONNX, the text form) declare inputs, weights, nodes and outputs with a
//! `location` string each (a JSON path, a line number); `finish` resolves names, orders the nodes,
//! infers every type and reports all problems at once, each at its location, without cascades
//! (a node downstream of a broken one is not reported again).

use crate::dtype::TensorType;
use crate::error::{Diagnostic, Error};
use crate::graph::{Edge, Graph, Node, NodeId, NodeKind, Value, ValueInfo};
use crate::op::Op;
use petgraph::algo::kosaraju_scc;
use petgraph::stable_graph::StableDiGraph;
use std::collections::{HashMap, HashSet};

struct NodeDecl {
    location: String,
    name: String,
    /// `Err` when the frontend could not build the op; the message is reported once and the
    /// node's outputs exist but stay untyped, so users of them are not reported again.
    op: Result<Op, String>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

struct LeafDecl {
    location: String,
    name: String,
    ty: TensorType,
}

/// How many "did you mean" suggestions one build computes (see `finish`).
const MAX_SUGGESTIONS: usize = 20;

#[derive(Default)]
pub struct GraphBuilder {
    name: String,
    inputs: Vec<LeafDecl>,
    weights: Vec<LeafDecl>,
    nodes: Vec<NodeDecl>,
    outputs: Vec<(String, String)>,
    diagnostics: Vec<Diagnostic>,
}

impl GraphBuilder {
    pub fn new(name: impl Into<String>) -> GraphBuilder {
        GraphBuilder { name: name.into(), ..GraphBuilder::default() }
    }

    /// Records a problem the frontend found itself, so that it is reported with the rest.
    pub fn report(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic { location: location.into(), message: message.into() });
    }

    pub fn input(&mut self, location: impl Into<String>, name: impl Into<String>, ty: TensorType) {
        self.inputs.push(LeafDecl { location: location.into(), name: name.into(), ty });
    }

    pub fn weight(&mut self, location: impl Into<String>, name: impl Into<String>, ty: TensorType) {
        self.weights.push(LeafDecl { location: location.into(), name: name.into(), ty });
    }

    pub fn node(
        &mut self,
        location: impl Into<String>,
        name: impl Into<String>,
        op: Result<Op, String>,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) {
        self.nodes.push(NodeDecl { location: location.into(), name: name.into(), op, inputs, outputs });
    }

    pub fn output(&mut self, location: impl Into<String>, tensor: impl Into<String>) {
        self.outputs.push((location.into(), tensor.into()));
    }

    pub fn finish(mut self) -> Result<Graph, Error> {
        let mut dag: StableDiGraph<Node, Edge> = StableDiGraph::new();
        // Where each tensor name is defined: (node, port), plus the declaring location.
        let mut defined: HashMap<String, (NodeId, usize, String)> = HashMap::new();
        let mut diags = std::mem::take(&mut self.diagnostics);
        let mut define = |diags: &mut Vec<Diagnostic>, name: &str, at: (NodeId, usize), location: &str| {
            if let Some((_, _, first)) = defined.get(name) {
                diags.push(Diagnostic {
                    location: location.to_string(),
                    message: format!("tensor '{name}' is already defined at {first}"),
                });
            } else {
                defined.insert(name.to_string(), (at.0, at.1, location.to_string()));
            }
        };

        let mut graph = Graph { name: self.name.clone(), ..Graph::default() };
        // Tensors whose type is unknown because something upstream is broken.
        let mut untyped: HashSet<NodeId> = HashSet::new();
        for (is_input, decls) in [(true, &self.inputs), (false, &self.weights)] {
            for decl in decls {
                let kind = if is_input { NodeKind::Input } else { NodeKind::Weight };
                let what = if is_input { "input" } else { "weight" };
                if decl.name.is_empty() {
                    diags.push(Diagnostic {
                        location: decl.location.clone(),
                        message: format!("{what} has an empty name"),
                    });
                }
                if let Err(e) = decl.ty.check_size() {
                    diags.push(Diagnostic {
                        location: decl.location.clone(),
                        message: format!("{what} '{}': {e}", decl.name),
                    });
                }
                let outputs = vec![ValueInfo { name: decl.name.clone(), ty: decl.ty.clone() }];
                let id = dag.add_node(Node { name: decl.name.clone(), kind, outputs });
                define(&mut diags, &decl.name, (id, 0), &decl.location);
                if is_input { graph.inputs.push(id) } else { graph.weights.push(id) }
            }
        }

        let mut node_names: HashMap<&str, &str> = HashMap::new();
        let mut node_ids = Vec::with_capacity(self.nodes.len());
        for decl in &self.nodes {
            if decl.name.is_empty() {
                diags.push(Diagnostic { location: decl.location.clone(), message: "node has an empty name".into() });
            } else if let Some(first) = node_names.insert(&decl.name, &decl.location) {
                diags.push(Diagnostic {
                    location: decl.location.clone(),
                    message: format!("node name '{}' is already used at {first}", decl.name),
                });
            }
            let kind = match &decl.op {
                Ok(op) => NodeKind::Op(op.clone()),
                // A placeholder that is never inspected: the node stays untyped.
                Err(_) => NodeKind::Op(Op::Identity),
            };
            let outputs =
                decl.outputs.iter().map(|name| ValueInfo { name: name.clone(), ty: TensorType::f32([]) }).collect();
            let id = dag.add_node(Node { name: decl.name.clone(), kind, outputs });
            for (port, out) in decl.outputs.iter().enumerate() {
                if out.is_empty() {
                    diags.push(Diagnostic {
                        location: decl.location.clone(),
                        message: format!("output {port} has an empty name"),
                    });
                }
                define(&mut diags, out, (id, port), &decl.location);
            }
            match &decl.op {
                Err(message) => {
                    diags.push(Diagnostic { location: decl.location.clone(), message: message.clone() });
                    untyped.insert(id);
                }
                Ok(op) if op.num_outputs() != decl.outputs.len() => {
                    diags.push(Diagnostic {
                        location: decl.location.clone(),
                        message: format!(
                            "{} produces {} output(s) but the node names {}",
                            op.name(),
                            op.num_outputs(),
                            decl.outputs.len()
                        ),
                    });
                    untyped.insert(id);
                }
                Ok(_) => {}
            }
            node_ids.push(id);
        }

        // Sorted, so that a tie between equally near names always suggests the same one.
        let mut all_names: Vec<&str> = defined.keys().map(String::as_str).collect();
        all_names.sort_unstable();
        // Each suggestion compares against every name; a hostile file with thousands of undefined
        // references would take minutes, so only the first few get one.
        let hints_left = std::cell::Cell::new(MAX_SUGGESTIONS);
        let undefined = |name: &str| -> String {
            let hint = if hints_left.get() == 0 {
                String::new()
            } else {
                hints_left.set(hints_left.get() - 1);
                crate::suggest::nearest(name, all_names.iter().copied())
                    .map(|s| format!(" (did you mean '{s}'?)"))
                    .unwrap_or_default()
            };
            format!("tensor '{name}' is not defined by any input, weight or node{hint}")
        };
        for (decl, &id) in self.nodes.iter().zip(&node_ids) {
            for (dst_port, input) in decl.inputs.iter().enumerate() {
                match defined.get(input) {
                    Some(&(src, src_port, _)) => {
                        dag.add_edge(src, id, Edge { src_port, dst_port });
                    }
                    None => {
                        diags.push(Diagnostic { location: decl.location.clone(), message: undefined(input) });
                        untyped.insert(id);
                    }
                }
            }
        }
        let mut listed: HashSet<Value> = HashSet::new();
        for (location, tensor) in &self.outputs {
            match defined.get(tensor) {
                Some(&(node, port, _)) => {
                    let value = Value { node, port };
                    if !listed.insert(value) {
                        diags.push(Diagnostic {
                            location: location.clone(),
                            message: format!("output '{tensor}' is listed twice"),
                        });
                    }
                    graph.outputs.push(value);
                }
                None => diags.push(Diagnostic {
                    location: location.clone(),
                    message: format!("graph output '{tensor}' is never produced: {}", undefined(tensor)),
                }),
            }
        }
        if self.outputs.is_empty() {
            diags.push(Diagnostic { location: String::new(), message: "the graph has no outputs".into() });
        }

        // Cycles: report each strongly connected component once, naming its nodes. Kosaraju's
        // algorithm in petgraph is iterative; its Tarjan is recursive and overflows the stack on a
        // chain of some ten thousand nodes.
        let location_of: HashMap<NodeId, &str> =
            self.nodes.iter().zip(&node_ids).map(|(d, &id)| (id, d.location.as_str())).collect();
        let mut in_cycle: HashSet<NodeId> = HashSet::new();
        for scc in kosaraju_scc(&dag) {
            let self_loop = scc.len() == 1 && dag.contains_edge(scc[0], scc[0]);
            if scc.len() > 1 || self_loop {
                let mut names: Vec<&str> = scc.iter().map(|&id| dag[id].name.as_str()).collect();
                names.sort();
                let first = scc.iter().min().copied().unwrap_or(scc[0]);
                let location = location_of.get(&first).map(|l| l.to_string()).unwrap_or_default();
                diags.push(Diagnostic {
                    location,
                    message: format!("the graph has a cycle through nodes {}", names.join(", ")),
                });
                in_cycle.extend(scc);
            }
        }
        for id in in_cycle {
            dag.remove_node(id);
        }

        graph.dag = dag;
        // Type inference in topological order.
        for id in graph.topo_order() {
            let Some(op) = graph.dag[id].op().cloned() else { continue };
            let inputs = graph.node_inputs(id);
            if untyped.contains(&id) || inputs.iter().any(|v| untyped.contains(&v.node)) {
                untyped.insert(id);
                continue;
            }
            let location = location_of.get(&id).copied().unwrap_or_default();
            let name = graph.dag[id].name.clone();
            if let Err(message) = op.check_arity(inputs.len()) {
                diags.push(Diagnostic { location: location.to_string(), message: format!("node '{name}': {message}") });
                untyped.insert(id);
                continue;
            }
            let types: Vec<&TensorType> = inputs.iter().map(|&v| graph.value_type(v)).collect();
            match op.infer(&types) {
                Ok(out_types) => {
                    let outputs = &mut graph.dag[id].outputs;
                    debug_assert_eq!(out_types.len(), outputs.len(), "{name}");
                    let mut too_big = None;
                    for (info, ty) in outputs.iter_mut().zip(out_types) {
                        if let Err(e) = ty.check_size() {
                            too_big = Some(format!("node '{name}' ({}): output '{}': {e}", op.name(), info.name));
                        }
                        info.ty = ty;
                    }
                    if let Some(message) = too_big {
                        diags.push(Diagnostic { location: location.to_string(), message });
                        untyped.insert(id);
                    }
                }
                Err(message) => {
                    let shapes: Vec<String> = types.iter().map(|t| t.to_string()).collect();
                    diags.push(Diagnostic {
                        location: location.to_string(),
                        message: format!("node '{name}' ({}) with inputs {}: {message}", op.name(), shapes.join(", ")),
                    });
                    untyped.insert(id);
                }
            }
        }
        match Error::from_diagnostics(diags) {
            Some(error) => Err(error),
            None => Ok(graph),
        }
    }
}
