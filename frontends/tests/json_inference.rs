//! JSON models whose acceptance or refusal depends on shape inference: shape mismatches reported
//! with the node's path and input types, and static parameters given as inputs that load-time
//! resolution turns into attributes.

use kiln_frontends::json::parse_json;
use kiln_ir::{DType, Model, Op, TensorType, UnaryOp};
use serde_json::{Value, json};

fn parse(model: &Value) -> Result<Model, Vec<String>> {
    parse_json(&model.to_string(), None, "test").map_err(|e| e.diagnostics().iter().map(|d| d.to_string()).collect())
}

fn errors(model: &Value) -> Vec<String> {
    match parse(model) {
        Ok(_) => panic!("expected an error for {model}"),
        Err(errors) => errors,
    }
}

#[track_caller]
fn assert_reported(errors: &[String], parts: &[&str]) {
    assert!(
        errors.iter().any(|e| parts.iter().all(|p| e.contains(p))),
        "no problem contains all of {parts:?}; got:\n{}",
        errors.join("\n")
    );
}

/// One node `op` over the given inputs (name → shape) producing `y`.
fn one_node(inputs: &[(&str, &[usize])], op: &str, attributes: Value) -> Value {
    let inputs_json: Vec<Value> = inputs.iter().map(|(n, s)| json!({"name": n, "shape": s})).collect();
    let names: Vec<&str> = inputs.iter().map(|(n, _)| *n).collect();
    json!({
        "format": "kiln", "version": 1,
        "inputs": inputs_json,
        "outputs": ["y"],
        "nodes": [{"name": "n", "op": op, "inputs": names, "outputs": ["y"], "attributes": attributes}]
    })
}

fn output_type(model: &Model, name: &str) -> TensorType {
    let value = model.graph.find_value(name).unwrap_or_else(|| panic!("no value {name}"));
    model.graph.value_type(value).clone()
}

/// The op of the only op node.
fn only_op(model: &Model) -> Op {
    let ids = model.graph.op_nodes();
    assert_eq!(ids.len(), 1);
    model.graph.node(ids[0]).op().unwrap().clone()
}

#[test]
fn doc_example_loads() {
    let model = json!({
      "format": "kiln",
      "version": 1,
      "name": "tiny_mlp",
      "inputs": [{"name": "x", "dtype": "f32", "shape": [2, 4]}],
      "outputs": ["y"],
      "weights": [
        {"name": "fc.weight", "dtype": "f32", "shape": [3, 4], "init": {"normal": {"std": 0.5, "seed": 7}}},
        {"name": "fc.bias", "shape": [3], "data": [0.1, -0.2, 0.3]}
      ],
      "nodes": [
        {"name": "fc", "op": "Gemm", "inputs": ["x", "fc.weight", "fc.bias"], "outputs": ["h"],
         "attributes": {"transB": 1}},
        {"name": "act", "op": "Relu", "inputs": ["h"], "outputs": ["y"]}
      ]
    });
    let model = parse(&model).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(model.graph.name(), "tiny_mlp");
    assert_eq!(output_type(&model, "y"), TensorType::f32([2, 3]));
    assert_eq!(model.weights.len(), 2);
}

#[test]
fn matmul_shape_mismatch() {
    let errors = errors(&one_node(&[("a", &[3, 4]), ("b", &[5, 6])], "MatMul", json!({})));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_reported(&errors, &["$.nodes[0] (node 'n'): node 'n' (MatMul) with inputs f32[3,4], f32[5,6]: "]);
}

#[test]
fn conv_on_rank_3_input() {
    let mut m = one_node(&[("x", &[1, 3, 8])], "Conv", json!({}));
    m["weights"] = json!([{"name": "w", "shape": [4, 3, 3, 3], "init": {"ones": {}}}]);
    m["nodes"][0]["inputs"] = json!(["x", "w"]);
    let errors = errors(&m);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_reported(&errors, &["$.nodes[0] (node 'n'): node 'n' (Conv) with inputs f32[1,3,8], f32[4,3,3,3]: "]);
}

#[test]
fn broadcast_failure() {
    let errors = errors(&one_node(&[("a", &[2, 3]), ("b", &[4])], "Add", json!({})));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_reported(&errors, &["$.nodes[0] (node 'n'): node 'n' (Add) with inputs f32[2,3], f32[4]: "]);
}

#[test]
fn shape_errors_do_not_cascade() {
    let mut m = one_node(&[("a", &[2, 3]), ("b", &[4])], "Add", json!({}));
    m["nodes"][0]["outputs"] = json!(["h"]);
    m["nodes"].as_array_mut().unwrap().push(json!({"name": "r", "op": "Relu", "inputs": ["h"], "outputs": ["y"]}));
    assert_eq!(errors(&m).len(), 1);
}

#[test]
fn reshape_shape_from_a_weight_becomes_an_attribute() {
    let mut m = one_node(&[("x", &[2, 3])], "Reshape", json!({}));
    m["weights"] = json!([{"name": "s", "dtype": "i64", "shape": [2], "data": [3, -1]}]);
    m["nodes"][0]["inputs"] = json!(["x", "s"]);
    let model = parse(&m).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(only_op(&model), Op::Reshape { shape: vec![3, -1], allowzero: false });
    assert_eq!(output_type(&model, "y"), TensorType::f32([3, 2]));
    // Folded into the attribute: no longer a weight of the graph.
    assert!(model.weights.get("s").is_none());
    assert!(model.graph.weights().is_empty());
}

#[test]
fn a_static_weight_also_used_as_data_stays() {
    let mut m = one_node(&[("x", &[2])], "Unsqueeze", json!({}));
    m["weights"] = json!([{"name": "ax", "dtype": "i64", "shape": [1], "data": [0]}]);
    m["nodes"][0]["inputs"] = json!(["x", "ax"]);
    m["outputs"] = json!(["y", "ax"]);
    let model = parse(&m).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(only_op(&model), Op::Unsqueeze { axes: vec![0] });
    assert_eq!(output_type(&model, "y"), TensorType::f32([1, 2]));
    assert_eq!(model.weights.get("ax").unwrap().as_i64().unwrap(), [0]);
}

#[test]
fn slice_parameters_from_constant_nodes() {
    let m = json!({
        "format": "kiln", "version": 1,
        "inputs": [{"name": "x", "shape": [4, 6]}],
        "outputs": ["y"],
        "nodes": [
            {"name": "starts", "op": "Constant", "outputs": ["st"], "attributes": {"value_ints": [1]}},
            {"name": "ends", "op": "Constant", "outputs": ["en"],
             "attributes": {"value": {"dtype": "i64", "shape": [1], "data": [5]}}},
            {"name": "sl", "op": "Slice", "inputs": ["x", "st", "en", "", ""], "outputs": ["y"]},
        ]
    });
    let m2 = {
        let mut m2 = m.clone();
        m2["nodes"][2]["inputs"] = json!(["x", "st", "en"]);
        m2
    };
    for m in [m, m2] {
        let model = parse(&m).unwrap_or_else(|e| panic!("{}", e.join("\n")));
        assert_eq!(only_op(&model), Op::Slice { starts: vec![1], ends: vec![5], axes: None, steps: None });
        // Axes default to 0..: rows 1 to 5, clamped to the 4 rows there are.
        assert_eq!(output_type(&model, "y"), TensorType::f32([3, 6]));
        assert!(model.weights.is_empty());
    }
}

#[test]
fn clip_bounds_with_an_omitted_min() {
    let mut m = one_node(&[("x", &[3])], "Clip", json!({}));
    m["weights"] = json!([{"name": "hi", "shape": [], "data": [6]}]);
    m["nodes"][0]["inputs"] = json!(["x", "", "hi"]);
    let model = parse(&m).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(only_op(&model), Op::Unary(UnaryOp::Clip { min: None, max: Some(6.0) }));
}

#[test]
fn reduce_axes_from_an_init_weight() {
    let mut m = one_node(&[("x", &[2, 3, 4])], "ReduceSum", json!({"keepdims": 0}));
    m["weights"] = json!([{"name": "axes", "dtype": "i64", "shape": [2], "init": {"arange": {"start": 1}}}]);
    m["nodes"][0]["inputs"] = json!(["x", "axes"]);
    let model = parse(&m).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(output_type(&model, "y"), TensorType::f32([2]));
}

#[test]
fn i64_weight_through_gather() {
    let mut m = one_node(&[("x", &[5, 2])], "Gather", json!({"axis": 0}));
    m["weights"] = json!([{"name": "idx", "dtype": "i64", "shape": [3], "data": [4, 0, -1]}]);
    m["nodes"][0]["inputs"] = json!(["x", "idx"]);
    let model = parse(&m).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(output_type(&model, "y"), TensorType::f32([3, 2]));
    assert_eq!(model.graph.value_type(model.graph.find_value("idx").unwrap()).dtype, DType::I64);
}
