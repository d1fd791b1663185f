//! The printer: one item a line, inputs and weights in declaration order, nodes in
//! [`Graph::topo_order`], outputs last. Deterministic, so printed graphs make stable snapshots.

use super::{VERSION, name};
use crate::attr::{Attr, Attrs, fmt_f32};
use crate::graph::{Graph, NodeKind, ValueInfo};
use crate::tensor::TensorData;
use crate::weights::{Model, Weights};
use std::fmt::Write;

/// The graph as `.kir` text. Weights are declared by name and type; their data is not printed
/// (see [`print_model`]).
pub fn print(graph: &Graph) -> String {
    print_with(graph, None)
}

/// The graph as `.kir` text with the data of every weight the store holds written inline, so that
/// [`super::parse`] gives the whole model back. Meant for small models (filetests, bug reports).
pub fn print_model(model: &Model) -> String {
    print_with(&model.graph, Some(&model.weights))
}

fn print_with(graph: &Graph, weights: Option<&Weights>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "kir {VERSION}");
    let _ = writeln!(out, "graph {}", name(graph.name()));
    for &id in graph.inputs() {
        for info in &graph.node(id).outputs {
            let _ = writeln!(out, "input {}", typed(info));
        }
    }
    for &id in graph.weights() {
        for info in &graph.node(id).outputs {
            let _ = write!(out, "weight {}", typed(info));
            if let Some(tensor) = weights.and_then(|w| w.get(&info.name)) {
                out.push_str(" = ");
                data(&mut out, tensor.data());
            }
            out.push('\n');
        }
    }
    for id in graph.topo_order() {
        let node = graph.node(id);
        let NodeKind::Op(op) = &node.kind else { continue };
        let (op_name, attrs) = op.to_parts();
        let inputs: Vec<String> = graph.node_inputs(id).into_iter().map(|v| name(graph.value_name(v))).collect();
        let _ = write!(out, "node {} = {op_name}({})", name(&node.name), inputs.join(", "));
        if !attrs.is_empty() {
            out.push_str(" {");
            attributes(&mut out, &attrs);
            out.push('}');
        }
        let outputs: Vec<String> = node.outputs.iter().map(typed).collect();
        let _ = writeln!(out, " -> {}", outputs.join(", "));
    }
    for &value in graph.outputs() {
        let _ = writeln!(out, "output {}", name(graph.value_name(value)));
    }
    out
}

fn typed(info: &ValueInfo) -> String {
    format!("{}: {}", name(&info.name), info.ty)
}

pub(super) fn attributes(out: &mut String, attrs: &Attrs) {
    for (i, (key, value)) in attrs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}=", name(key));
        match value {
            Attr::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Attr::Float(v) => out.push_str(&fmt_f32(*v)),
            Attr::Str(s) => out.push_str(&super::quote(s)),
            Attr::Ints(v) => list(out, v.iter().map(|x| x.to_string())),
            Attr::Floats(v) => list(out, v.iter().map(|&x| fmt_f32(x))),
            // No op has a tensor attribute; this keeps the printer total, and the parser refuses it.
            Attr::Tensor(t) => {
                let _ = write!(out, "<tensor {}>", t.ty());
            }
        }
    }
}

fn data(out: &mut String, data: &TensorData) {
    match data {
        TensorData::F32(v) => list(out, v.iter().map(|&x| fmt_f32(x))),
        TensorData::I64(v) => list(out, v.iter().map(|x| x.to_string())),
        TensorData::Bool(v) => list(out, v.iter().map(|x| x.to_string())),
    }
}

fn list(out: &mut String, items: impl Iterator<Item = String>) {
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&item);
    }
    out.push(']');
}
