//! Graphviz output for `kiln compile --emit dot`.

use kiln_ir::{Graph, NodeKind};
use std::fmt::Write;

/// Escapes a string for a double-quoted Graphviz ID.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The graph as a Graphviz digraph: ops as boxes, inputs and outputs as ellipses, weights as notes;
/// each edge is labelled with the tensor's type.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quoted(graph.name()));
    let _ = writeln!(out, "  rankdir=TB;\n  node [fontname=\"Helvetica\", fontsize=10];");
    for id in graph.topo_order() {
        let node = graph.node(id);
        let (label, shape) = match &node.kind {
            NodeKind::Input => (format!("{}\\n{}", node.name, node.outputs[0].ty), "ellipse"),
            NodeKind::Weight => (format!("{}\\n{}", node.name, node.outputs[0].ty), "note"),
            NodeKind::Op(op) => (format!("{}\\n{}", node.name, op.name()), "box"),
        };
        let label = label.replace('"', "\\\"");
        let _ = writeln!(out, "  n{} [label=\"{label}\", shape={shape}];", id.index());
        for value in graph.node_inputs(id) {
            let ty = graph.value_type(value);
            let _ = writeln!(out, "  n{} -> n{} [label=\"{ty}\"];", value.node.index(), id.index());
        }
    }
    for (i, &value) in graph.outputs().iter().enumerate() {
        let name = graph.value_name(value);
        let _ = writeln!(out, "  out{i} [label={}, shape=doubleoctagon];", quoted(name));
        let _ = writeln!(out, "  n{} -> out{i};", value.node.index());
    }
    out.push_str("}\n");
    out
}
