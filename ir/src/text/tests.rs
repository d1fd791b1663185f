//! Tests of the text form: round trips on hand-built graphs, exact error messages, and a fuzz-style
//! check that no input makes the parser panic.

use super::{parse, print, print_model};
use crate::attr::{Attr, Attrs};
use crate::builder::GraphBuilder;
use crate::dtype::{DType, TensorType};
use crate::graph::Graph;
use crate::op::Op;
use crate::tensor::Tensor;
use crate::weights::{Model, Weights};
use proptest::prelude::*;

/// Builds an op from its name and `(attribute, value)` pairs.
fn op(name: &str, attrs: &[(&str, Attr)]) -> Result<Op, String> {
    let attrs: Attrs = attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    Op::from_parts(name, &attrs)
}

fn strs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Adds a node named after its (single) output unless more outputs are given.
fn node(b: &mut GraphBuilder, name: &str, op_: Result<Op, String>, inputs: &[&str], outputs: &[&str]) {
    b.node(format!("node {name}"), name, op_, strs(inputs), strs(outputs));
}

/// Checks both round trips: the graph comes back equal, and printing it again gives the same text.
fn assert_round_trip(graph: &Graph) -> String {
    let text = print(graph);
    let model = parse(&text).unwrap_or_else(|e| panic!("{e}\n--- text ---\n{text}"));
    assert!(model.graph == *graph, "graph differs after a round trip:\n{text}\n---\n{}", print(&model.graph));
    assert_eq!(print(&model.graph), text);
    assert!(model.weights.is_empty(), "print writes no weight data");
    text
}

fn tiny_mlp() -> Graph {
    let mut b = GraphBuilder::new("tiny_mlp");
    b.input("x", "x", TensorType::f32([2, 4]));
    b.weight("w", "fc.weight", TensorType::f32([3, 4]));
    b.weight("b", "fc.bias", TensorType::f32([3]));
    node(&mut b, "fc", op("Gemm", &[("transB", Attr::Int(1))]), &["x", "fc.weight", "fc.bias"], &["h"]);
    node(&mut b, "act", op("Relu", &[]), &["h"], &["y"]);
    b.output("y", "y");
    b.finish().unwrap()
}

#[test]
fn text_prints_tiny_mlp_exactly() {
    let graph = tiny_mlp();
    let text = assert_round_trip(&graph);
    assert_eq!(
        text,
        "kir 1
graph tiny_mlp
input x: f32[2,4]
weight fc.weight: f32[3,4]
weight fc.bias: f32[3]
node fc = Gemm(x, fc.weight, fc.bias) {transB=1} -> h: f32[2,3]
node act = Relu(h) -> y: f32[2,3]
output y
"
    );
}

#[test]
fn text_round_trips_every_attribute_kind() {
    let mut b = GraphBuilder::new("attrs");
    b.input("x", "x", TensorType::f32([2, 3, 4, 4]));
    b.input("idx", "idx", TensorType::new(DType::I64, [2]));
    // Float attributes: a tiny exponent form, a long mantissa, a negative value.
    node(&mut b, "leaky", op("LeakyRelu", &[("alpha", Attr::Float(1e-5))]), &["x"], &["a"]);
    node(&mut b, "clip", op("Clip", &[("min", Attr::Float(-1.0507009)), ("max", Attr::Float(6.0))]), &["a"], &["c"]);
    // String attributes.
    node(&mut b, "gelu", op("Gelu", &[("approximate", Attr::Str("tanh".into()))]), &["c"], &["g"]);
    node(
        &mut b,
        "pad",
        op("Pad", &[("mode", Attr::Str("reflect".into())), ("pads", Attr::Ints(vec![0, 0, 1, 1, 0, 0, 1, 1]))]),
        &["g"],
        &["p"],
    );
    // Int lists, with negative values; negative ints.
    node(&mut b, "reshape", op("Reshape", &[("shape", Attr::Ints(vec![2, 3, -1]))]), &["x"], &["r"]);
    node(&mut b, "concat", op("Concat", &[("axis", Attr::Int(-1))]), &["r", "r"], &["cat"]);
    node(
        &mut b,
        "mean",
        op("ReduceMean", &[("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(0))]),
        &["cat"],
        &["m"],
    );
    node(&mut b, "perm", op("Transpose", &[("perm", Attr::Ints(vec![0, 2, 1, 3]))]), &["x"], &["t"]);
    node(&mut b, "gather", op("Gather", &[("axis", Attr::Int(1))]), &["t", "idx"], &["gt"]);
    // Float lists and more strings.
    node(
        &mut b,
        "resize",
        op(
            "Resize",
            &[
                ("scales", Attr::Floats(vec![1.0, 1.0, 2.0, 2.0])),
                ("coordinate_transformation_mode", Attr::Str("asymmetric".into())),
                ("nearest_mode", Attr::Str("floor".into())),
            ],
        ),
        &["x"],
        &["up"],
    );
    node(
        &mut b,
        "conv",
        op(
            "Conv",
            &[("strides", Attr::Ints(vec![2, 2])), ("pads", Attr::Ints(vec![1, 1, 1, 1])), ("group", Attr::Int(3))],
        ),
        &["x", "cw"],
        &["conv_out"],
    );
    b.weight("cw", "cw", TensorType::f32([3, 1, 3, 3]));
    node(&mut b, "cast", op("Cast", &[("to", Attr::Str("i64".into()))]), &["m"], &["mi"]);
    for out in ["p", "m", "gt", "up", "conv_out", "mi"] {
        b.output(out, out);
    }
    let graph = b.finish().unwrap();
    let text = assert_round_trip(&graph);
    for expected in [
        "{alpha=1e-5}",
        "{max=6.0, min=-1.0507009}",
        "{approximate=\"tanh\"}",
        "{mode=\"reflect\", pads=[0, 0, 1, 1, 0, 0, 1, 1]}",
        "{shape=[2, 3, -1]}",
        "{axis=-1}",
        "{axes=[-1], keepdims=0}",
        "{coordinate_transformation_mode=\"asymmetric\", nearest_mode=\"floor\", scales=[1.0, 1.0, 2.0, 2.0]}",
        "{group=3, pads=[1, 1, 1, 1], strides=[2, 2]}",
        "{to=\"i64\"}",
        "-> mi: i64[2,3]\n",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
}

#[test]
fn text_round_trips_multi_output_split() {
    let mut b = GraphBuilder::new("split");
    b.input("x", "x", TensorType::f32([2, 3]));
    node(
        &mut b,
        "split",
        op("Split", &[("axis", Attr::Int(1)), ("split", Attr::Ints(vec![1, 2]))]),
        &["x"],
        &["a", "b"],
    );
    node(&mut b, "halves", op("Split", &[("num_outputs", Attr::Int(2))]), &["x"], &["top", "bottom"]);
    node(&mut b, "sum", op("Add", &[]), &["top", "bottom"], &["s"]);
    b.output("b", "b");
    b.output("a", "a");
    b.output("s", "s");
    let graph = b.finish().unwrap();
    let text = assert_round_trip(&graph);
    assert!(text.contains("node split = Split(x) {axis=1, split=[1, 2]} -> a: f32[2,1], b: f32[2,2]\n"), "{text}");
    assert!(text.contains("node halves = Split(x) {num_outputs=2} -> top: f32[1,3], bottom: f32[1,3]\n"), "{text}");
    // Output order is kept.
    assert!(text.ends_with("output b\noutput a\noutput s\n"), "{text}");
}

#[test]
fn text_round_trips_names_that_need_quotes() {
    let odd = [
        "input 0",
        "onnx::Conv_12",
        "0starts_with_digit",
        "say \"hi\"",
        "back\\slash",
        "résumé/층",
        "tab\there\nnewline",
        "\u{7}bell",
        "-leading-dash",
        "nan",
    ];
    let mut b = GraphBuilder::new("my graph");
    b.input("x", odd[0], TensorType::f32([2]));
    let mut prev = odd[0];
    for (i, &name) in odd.iter().enumerate().skip(1) {
        let node_name = format!("{name} node");
        b.node(format!("n{i}"), node_name, op("Neg", &[]), strs(&[prev]), strs(&[name]));
        prev = name;
    }
    b.output("out", prev);
    let graph = b.finish().unwrap();
    let text = assert_round_trip(&graph);
    assert!(text.starts_with("kir 1\ngraph \"my graph\"\ninput \"input 0\": f32[2]\n"), "{text}");
    assert!(text.contains(r#"node "onnx::Conv_12 node" = Neg("input 0") -> "onnx::Conv_12": f32[2]"#), "{text}");
    assert!(text.contains(r#"-> "say \"hi\"": f32[2]"#), "{text}");
    assert!(text.contains(r#"-> "back\\slash": f32[2]"#), "{text}");
    assert!(text.contains(r#"-> "résumé/층": f32[2]"#), "{text}");
    assert!(text.contains(r#"-> "tab\there\nnewline": f32[2]"#), "{text}");
    assert!(text.contains(r#"-> "\u{7}bell": f32[2]"#), "{text}");
    // `nan` is a plain name: position tells it from the float.
    assert!(text.ends_with("-> nan: f32[2]\noutput nan\n"), "{text}");
}

#[test]
fn text_round_trips_a_graph_without_ops() {
    // Needs no shape inference, so it checks the plumbing on its own.
    let mut b = GraphBuilder::new("");
    b.input("a", "a", TensorType::new(DType::Bool, [1]));
    b.input("s", "s", TensorType::f32([]));
    b.weight("w", "w", TensorType::new(DType::I64, [2, 2]));
    b.output("w", "w");
    b.output("s", "s");
    let graph = b.finish().unwrap();
    let text = assert_round_trip(&graph);
    assert_eq!(text, "kir 1\ngraph \"\"\ninput a: bool[1]\ninput s: f32[]\nweight w: i64[2,2]\noutput w\noutput s\n");
}

#[test]
fn text_weight_data_round_trips_through_print_model() {
    let text = "kir 1
graph data
input x: f32[2,2]
weight w: f32[2,2] = [1.0, -2.5, 1e-5, 1.0507009]
weight ints: i64[3] = [-9223372036854775808, 0, 9223372036854775807]
weight flags: bool[2] = [true, false]
weight scalar: f32[] = [inf]
weight nodata: f32[2]
output x
";
    let model = parse(text).unwrap();
    let w = model.weights.get("w").unwrap();
    assert_eq!(w.as_f32().unwrap(), &[1.0, -2.5, 1e-5, 1.0507009]);
    assert_eq!(w.shape(), &[2, 2]);
    assert_eq!(model.weights.get("ints").unwrap().as_i64().unwrap(), &[i64::MIN, 0, i64::MAX]);
    assert_eq!(model.weights.get("flags").unwrap().as_bool().unwrap(), &[true, false]);
    assert_eq!(model.weights.get("scalar").unwrap().as_f32().unwrap(), &[f32::INFINITY]);
    assert!(model.weights.get("nodata").is_none(), "a weight without data is absent from the store");
    assert_eq!(model.weights.len(), 4);
    // print_model writes the data back exactly.
    assert_eq!(print_model(&model), text);
    let again = parse(&print_model(&model)).unwrap();
    assert!(again.graph == model.graph);
    assert_eq!(again.weights, model.weights);
    // print leaves the data out.
    assert!(print(&model.graph).contains("\nweight w: f32[2,2]\n"));
}

#[test]
fn text_print_model_matches_a_built_model() {
    let graph = tiny_mlp();
    let mut weights = Weights::new();
    weights.insert("fc.weight", Tensor::from_f32([3, 4], (0..12).map(|i| i as f32 * 0.1 - 0.5).collect()).unwrap());
    weights.insert("fc.bias", Tensor::from_f32([3], vec![0.1, -0.2, 0.3]).unwrap());
    let model = Model { graph, weights };
    let text = print_model(&model);
    assert!(text.contains("weight fc.bias: f32[3] = [0.1, -0.2, 0.3]\n"), "{text}");
    let back = parse(&text).unwrap();
    assert!(back.graph == model.graph);
    assert_eq!(back.weights, model.weights);
    back.weights.check_against(&back.graph).unwrap();
}

#[test]
fn text_accepts_comments_blank_lines_and_any_order() {
    let text = "
# a hand-written file
kir 1   # the header

output y
node act = Relu(h) -> y      # types may be left out
graph tiny_mlp
node fc = Gemm(x, fc.weight, fc.bias) {transB=1} -> h: f32[2,3]
input x: f32[2,4]
weight fc.weight: f32[3,4]
weight fc.bias: f32[3]
";
    let model = parse(text).unwrap();
    assert!(model.graph == tiny_mlp());
}

#[test]
fn text_int_lists_are_accepted_for_float_lists() {
    // `[]` and `[1, 2]` read as ints; float-list attributes accept them.
    let text = "kir 1
input x: f32[1,1,2,2]
node up = Resize(x) {scales=[1, 1, 2, 2]} -> y
output y
";
    let graph = parse(text).unwrap().graph;
    assert!(print(&graph).contains("{scales=[1.0, 1.0, 2.0, 2.0]} -> y: f32[1,1,4,4]"), "{}", print(&graph));
}

/// The error text of parsing `text`, all diagnostics, one a line.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(model) => panic!("parsed without error:\n{}", print(&model.graph)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn text_header_errors() {
    assert_eq!(error(""), "line 1, column 1: expected the header 'kir 1', found end of file");
    assert_eq!(error("# only a comment\n\n"), "line 1, column 1: expected the header 'kir 1', found end of file");
    assert_eq!(error("kiln 1\ninput x: f32[1]"), "line 1, column 1: expected the header 'kir 1', found 'kiln'");
    assert_eq!(error("\n  kir 2\n"), "line 2, column 7: unsupported kir version 2; this kiln reads version 1");
    assert_eq!(error("kir\n"), "line 1, column 4: expected the format version after 'kir', found end of line");
    assert_eq!(error("kir 1 extra"), "line 1, column 7: expected end of line, found 'extra'");
    assert_eq!(error("{\"format\": \"kiln\"}"), "line 1, column 1: expected the header 'kir 1', found '{'");
}

#[test]
fn text_syntax_errors_name_line_and_column() {
    let cases = [
        ("input x: f32[2,@]", "line 2, column 16: unexpected character '@'"),
        ("input \"x: f32[2]", "line 2, column 7: unterminated string"),
        ("node n = Relu(x)", "line 2, column 17: expected '->' and the node's outputs, found end of line"),
        ("node n = Relu(x) y", "line 2, column 18: expected '->' and the node's outputs, found 'y'"),
        ("node n = Relu(x) ->", "line 2, column 20: expected an output tensor name, found end of line"),
        ("node n = Relu(x y) -> z", "line 2, column 17: expected ',' or ')', found 'y'"),
        ("node n = 3(x) -> z", "line 2, column 10: expected an op name, found number 3"),
        (
            "nod n = Relu(x) -> y",
            "line 2, column 1: unknown item 'nod' (did you mean 'node'?); \
             expected graph, input, weight, node or output",
        ),
        ("= x", "line 2, column 1: expected an item (graph, input, weight, node or output), found '='"),
        ("input x: f16[2]", "line 2, column 10: unknown element type 'f16' (expected f32, i64 or bool)"),
        ("input x f32[2]", "line 2, column 9: expected ':' and the input's type, found 'f32'"),
        ("input x: f32[2,-1]", "line 2, column 16: expected a dimension (a whole number), found number -1"),
        ("input x: f32[99999999999999999999]", "line 2, column 14: dimension 99999999999999999999 is too large"),
        ("input 1x: f32[2]", "line 2, column 7: malformed number '1x' (names that start with a digit must be quoted)"),
        ("output y z", "line 2, column 10: expected end of line, found 'z'"),
        ("node n = Relu(x) {a=1, a=2} -> y", "line 2, column 24: attribute 'a' is given twice"),
        (
            "node n = Relu(x) {a=} -> y",
            "line 2, column 21: expected an attribute value (a number, a string or a list), found '}'",
        ),
        ("node n = Relu(x) {a=[1, \"s\"]} -> y", "line 2, column 25: expected a number, found string \"s\""),
        (
            "node n = Relu(x) {a=<tensor f32[2]>} -> y",
            "line 2, column 21: tensor attributes cannot be written in the text form",
        ),
        ("node n = Relu(x) {a=1e99} -> y", "line 2, column 21: 1e99 is out of range for f32"),
        (
            "node n = Relu(x) {a=99999999999999999999} -> y",
            "line 2, column 21: 99999999999999999999 is out of range for i64",
        ),
        ("node n = Relu(x) {a=\"\\q\"} -> y", "line 2, column 22: unknown escape '\\q' in a string"),
        (
            "weight w: f32[2,2] = [1.0, 2.0, 3.0]",
            "line 2, column 22: weight 'w' is declared f32[2,2] but 3 value(s) are written",
        ),
        ("weight w: i64[2] = [1, 2.5]", "line 2, column 24: expected an i64 value, found number 2.5"),
        ("weight w: bool[1] = [1]", "line 2, column 22: expected true or false, found number 1"),
        ("weight w: f32[1] = 1.0", "line 2, column 20: expected '[' and the weight's values, found number 1.0"),
        ("graph a\ngraph b", "line 3, column 1: the graph name is already given at line 2, column 1"),
    ];
    for (line, expected) in cases {
        let text = format!("kir 1\n{line}\n");
        assert_eq!(error(&text), expected, "for {line:?}");
    }
}

#[test]
fn text_reports_every_bad_line_at_once() {
    let text = "kir 1\ninput x: f32[2\nnode n = Relu(x)\n\noutput @\n";
    assert_eq!(
        error(text),
        "line 2, column 15: expected ',' or ']', found end of line
line 3, column 17: expected '->' and the node's outputs, found end of line
line 5, column 8: unexpected character '@'"
    );
}

#[test]
fn text_graph_errors_come_from_the_builder_with_locations() {
    let text = "kir 1
input x: f32[2,3]
node s = Sofmax(x) -> y
node r = Relu(xx) -> w
node r = Neg(x) -> x
output y
";
    assert_eq!(
        error(text),
        "line 3, column 10: unknown op 'Sofmax' (did you mean 'Softmax'?)
line 5, column 1: node name 'r' is already used at line 4, column 1
line 5, column 1: tensor 'x' is already defined at line 2, column 1
line 4, column 1: tensor 'xx' is not defined by any input, weight or node (did you mean 'x'?)"
    );
    let text = "kir 1\ninput x: f32[2]\nnode c = Concat(x) -> y\noutput y\n";
    assert_eq!(error(text), "line 3, column 10: Concat needs the int attribute 'axis'");
    let text = "kir 1\ninput x: f32[2]\nnode c = Softmax(x) {axsi=0} -> y\noutput y\n";
    assert_eq!(error(text), "line 3, column 10: Softmax has no attribute 'axsi' (did you mean 'axis'?)");
}

#[test]
fn text_written_types_are_checked_against_inferred_ones() {
    let text = "kir 1
input x: f32[2,3]
node r = Relu(x) -> y: f32[2,4]
node e = Equal(x, x) -> z: f32[2,3]
output y
output z
";
    assert_eq!(
        error(text),
        "line 3, column 24: node 'r': output 'y' is written f32[2,4] but its inferred type is f32[2,3]
line 4, column 28: node 'e': output 'z' is written f32[2,3] but its inferred type is bool[2,3]"
    );
}

#[test]
fn text_tensor_attributes_print_as_a_marker_the_parser_refuses() {
    let mut attrs = Attrs::new();
    attrs.insert("value".into(), Attr::Tensor(Tensor::from_f32([2], vec![1.0, 2.0]).unwrap()));
    let mut out = String::new();
    super::print::attributes(&mut out, &attrs);
    assert_eq!(out, "value=<tensor f32[2]>");
    let text = format!("kir 1\ninput x: f32[2]\nnode n = Identity(x) {{{out}}} -> y\noutput y\n");
    assert_eq!(error(&text), "line 3, column 29: tensor attributes cannot be written in the text form");
}

/// A valid text with every kind of token, to cut and mutate.
const SAMPLE: &str = "kir 1
graph \"g h\"
input x: f32[2,4]
weight w: f32[3,4] = [1.0, -2.5e-3, nan, -inf, 1, 2, 3, 4, 5, 6, 7, 8]
weight b: i64[3] = [1, -2, 3]
node fc = Gemm(x, w) {alpha=0.5, transB=1} -> h: f32[2,3]   # comment
node s = Split(h) {axis=1, split=[1, 2]} -> a: f32[2,1], \"b \\\"q\\\" \\u{e9}\": f32[2,2]
output a
";

#[test]
fn text_never_panics_on_truncated_text() {
    for (i, _) in SAMPLE.char_indices() {
        let _ = parse(&SAMPLE[..i]);
    }
}

proptest! {
    #[test]
    fn text_never_panics_on_random_text(s in "\\PC*") {
        let _ = parse(&s);
        let _ = parse(&format!("kir 1\n{s}"));
    }

    #[test]
    fn text_never_panics_on_mutated_text(
        cut in 0usize..400,
        insert in proptest::sample::select(vec![
            "\"", "\\", "\\u{", "[", "]", "(", ")", "{", "}", ",", "=", "->", "-", ":", "#", "\n", "1e", "-9",
            "99999999999999999999", "f32[", "nan", "<", "é", " ", "node", "\u{0}",
        ]),
        remove in 0usize..4,
    ) {
        let mut chars: Vec<char> = SAMPLE.chars().collect();
        let at = cut % (chars.len() + 1);
        let end = (at + remove).min(chars.len());
        chars.splice(at..end, insert.chars());
        let text: String = chars.into_iter().collect();
        let _ = parse(&text);
    }
}

#[test]
fn text_docs_example_parses_and_prints_back() {
    let doc = include_str!("../../../docs/ir-text.md");
    let example = doc.split("```\n").nth(1).expect("docs/ir-text.md starts with an example code block");
    let model = parse(example).unwrap_or_else(|e| panic!("{e}\n{example}"));
    // The printer writes the same lines, without the comment.
    let without_comments: String =
        example.lines().map(|l| format!("{}\n", l.split('#').next().unwrap_or("").trim_end())).collect();
    assert_eq!(print_model(&model), without_comments);
    assert_eq!(model.weights.len(), 1);
}
