//! Weight data, kept apart from the graph so that the graph stays small and printable.

use crate::error::{Diagnostic, Error};
use crate::graph::Graph;
use crate::tensor::Tensor;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Named weight tensors. Cloning is cheap (tensors are shared); passes that derive new weights
/// add new names and never modify a tensor in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, Arc<Tensor>>,
}

impl Weights {
    pub fn new() -> Weights {
        Weights::default()
    }

    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), Arc::new(tensor));
    }

    /// Adds a tensor without copying it: a weight shared with another store (a pass keeping an
    /// original weight shares it; weights are never modified in place).
    pub fn insert_shared(&mut self, name: impl Into<String>, tensor: Arc<Tensor>) {
        self.tensors.insert(name.into(), tensor);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tensor>> {
        self.tensors.get(name)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Tensor>)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Checks that every weight the graph declares is here with the declared type.
    pub fn check_against(&self, graph: &Graph) -> Result<(), Error> {
        let mut diags = Vec::new();
        for &id in graph.weights() {
            let info = &graph.node(id).outputs[0];
            match self.get(&info.name) {
                None => diags
                    .push(Diagnostic { location: format!("weight '{}'", info.name), message: "has no data".into() }),
                Some(t) if t.ty() != info.ty => diags.push(Diagnostic {
                    location: format!("weight '{}'", info.name),
                    message: format!("is declared {} but its data is {}", info.ty, t.ty()),
                }),
                Some(_) => {}
            }
        }
        match Error::from_diagnostics(diags) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A graph with the data of its weights: what a frontend loads.
#[derive(Debug, Clone)]
pub struct Model {
    pub graph: Graph,
    pub weights: Weights,
}
