//! The tensor graph: a petgraph DAG whose nodes are graph inputs, weights and ops, and whose edges
//! carry one tensor from a producer's output port to a consumer's input port.
//!
//! Invariants (established by [`crate::GraphBuilder`], kept by every pass): every tensor name is
//! unique; every op node's inputs are connected on ports 0..n with no gap; every value has an
//! inferred static type; the graph is acyclic.

use crate::dtype::TensorType;
use crate::op::Op;
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

pub type NodeId = NodeIndex<u32>;

/// One tensor: output `port` of `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    pub node: NodeId,
    pub port: usize,
}

/// A named, typed tensor produced by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueInfo {
    pub name: String,
    pub ty: TensorType,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A graph input, fed at run time.
    Input,
    /// A named weight whose data lives in a [`crate::Weights`] store.
    Weight,
    Op(Op),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// For an op, the node's name; for an input or weight, the tensor's name.
    pub name: String,
    pub kind: NodeKind,
    pub outputs: Vec<ValueInfo>,
}

impl Node {
    pub fn op(&self) -> Option<&Op> {
        match &self.kind {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }
}

/// Which output of the producer feeds which input of the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    pub src_port: usize,
    pub dst_port: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub(crate) name: String,
    pub(crate) dag: StableDiGraph<Node, Edge>,
    pub(crate) inputs: Vec<NodeId>,
    pub(crate) weights: Vec<NodeId>,
    pub(crate) outputs: Vec<Value>,
}

impl Graph {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Graph inputs in declaration order.
    pub fn inputs(&self) -> &[NodeId] {
        &self.inputs
    }

    /// Weights in declaration order.
    pub fn weights(&self) -> &[NodeId] {
        &self.weights
    }

    /// Graph outputs in declaration order.
    pub fn outputs(&self) -> &[Value] {
        &self.outputs
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id]
    }

    /// The underlying petgraph DAG, for algorithms that want it.
    pub fn dag(&self) -> &StableDiGraph<Node, Edge> {
        &self.dag
    }

    pub fn value_info(&self, value: Value) -> &ValueInfo {
        &self.dag[value.node].outputs[value.port]
    }

    pub fn value_name(&self, value: Value) -> &str {
        &self.value_info(value).name
    }

    pub fn value_type(&self, value: Value) -> &TensorType {
        &self.value_info(value).ty
    }

    /// The values a node reads, in input-port order.
    pub fn node_inputs(&self, id: NodeId) -> Vec<Value> {
        let mut edges: Vec<(usize, Value)> = self
            .dag
            .edges_directed(id, Direction::Incoming)
            .map(|e| (e.weight().dst_port, Value { node: e.source(), port: e.weight().src_port }))
            .collect();
        edges.sort_by_key(|&(port, _)| port);
        edges.into_iter().map(|(_, v)| v).collect()
    }

    /// The (consumer, input port) pairs that read a value.
    pub fn users(&self, value: Value) -> Vec<(NodeId, usize)> {
        let mut users: Vec<(NodeId, usize)> = self
            .dag
            .edges_directed(value.node, Direction::Outgoing)
            .filter(|e| e.weight().src_port == value.port)
            .map(|e| (e.target(), e.weight().dst_port))
            .collect();
        users.sort();
        users
    }

    /// Every node in a deterministic topological order: among ready nodes the one added first
    /// goes first, so a graph built in topological order keeps its order.
    pub fn topo_order(&self) -> Vec<NodeId> {
        let mut indegree: HashMap<NodeId, usize> = HashMap::new();
        for id in self.dag.node_indices() {
            indegree.insert(id, self.dag.edges_directed(id, Direction::Incoming).count());
        }
        let mut ready: BinaryHeap<Reverse<NodeId>> =
            indegree.iter().filter(|&(_, &d)| d == 0).map(|(&id, _)| Reverse(id)).collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(Reverse(id)) = ready.pop() {
            order.push(id);
            for e in self.dag.edges_directed(id, Direction::Outgoing) {
                let d = indegree.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.push(Reverse(e.target()));
                }
            }
        }
        order
    }

    /// Op nodes in topological order.
    pub fn op_nodes(&self) -> Vec<NodeId> {
        self.topo_order().into_iter().filter(|&id| self.dag[id].op().is_some()).collect()
    }

    /// How many nodes of each op there are, by op name.
    pub fn op_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for id in self.dag.node_indices() {
            if let Some(op) = self.dag[id].op() {
                *counts.entry(op.name()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Finds a value by its tensor name.
    pub fn find_value(&self, name: &str) -> Option<Value> {
        self.dag.node_indices().find_map(|id| {
            self.dag[id].outputs.iter().position(|v| v.name == name).map(|port| Value { node: id, port })
        })
    }

    pub fn num_op_nodes(&self) -> usize {
        self.dag.node_indices().filter(|&id| self.dag[id].op().is_some()).count()
    }
}

/// Structural equality: same name, same inputs, weights and outputs in the same order, and the same
/// op nodes (matched by name) reading the same tensors. Node ids and insertion order do not matter,
/// so a graph equals its text form parsed back.
impl PartialEq for Graph {
    fn eq(&self, other: &Graph) -> bool {
        let decls = |g: &Graph, ids: &[NodeId]| -> Vec<Node> { ids.iter().map(|&id| g.dag[id].clone()).collect() };
        let outputs = |g: &Graph| -> Vec<String> { g.outputs.iter().map(|&v| g.value_name(v).to_string()).collect() };
        let ops = |g: &Graph| -> BTreeMap<String, (Node, Vec<String>)> {
            g.dag
                .node_indices()
                .filter(|&id| g.dag[id].op().is_some())
                .map(|id| {
                    let inputs = g.node_inputs(id).into_iter().map(|v| g.value_name(v).to_string()).collect();
                    (g.dag[id].name.clone(), (g.dag[id].clone(), inputs))
                })
                .collect()
        };
        self.name == other.name
            && decls(self, &self.inputs) == decls(other, &other.inputs)
            && decls(self, &self.weights) == decls(other, &other.weights)
            && outputs(self) == outputs(other)
            && ops(self) == ops(other)
    }
}
