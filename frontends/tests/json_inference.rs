//! JSON models that load only with shape inference: static parameters given as inputs that
//! load-time resolution turns into attributes, and loaded weights reaching the interpreter. (The
//! refusals that shape inference finds are in bad_models.rs.)

use kiln_frontends::json::parse_json;
use kiln_ir::{DType, Model, Op, TensorType, UnaryOp};
use serde_json::{Value, json};

fn parse(model: &Value) -> Result<Model, Vec<String>> {
    parse_json(&model.to_string(), None, "test").map_err(|e| e.diagnostics().iter().map(|d| d.to_string()).collect())
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

#[test]
fn loaded_weights_reach_the_interpreter() {
    // y = relu(x·Wᵀ + b) with W = [[1, 2], [3, 4], [-5, 0]], b = [0.5, 0, 0], x = [1, 1]:
    // x·Wᵀ = [3, 7, -5], + b = [3.5, 7, -5], relu → [3.5, 7, 0] (exact in f32). The reshape of x to
    // [1, 2] takes its target from a weight input.
    let m = json!({
        "format": "kiln", "version": 1,
        "inputs": [{"name": "x", "shape": [2]}],
        "outputs": ["y"],
        "weights": [
            {"name": "W", "shape": [3, 2], "data": [1, 2, 3, 4, -5, 0]},
            {"name": "b", "shape": [3], "data": [0.5, 0, 0]},
            {"name": "row", "dtype": "i64", "shape": [2], "data": [1, -1]}
        ],
        "nodes": [
            {"name": "r", "op": "Reshape", "inputs": ["x", "row"], "outputs": ["x2"]},
            {"name": "fc", "op": "Gemm", "inputs": ["x2", "W", "b"], "outputs": ["h"], "attributes": {"transB": true}},
            {"name": "act", "op": "Relu", "inputs": ["h"], "outputs": ["y"]}
        ]
    });
    let model = parse(&m).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let x = kiln_ir::Tensor::from_f32([2], vec![1.0, 1.0]).unwrap();
    let outputs = kiln_ir::eval::run(&model.graph, &model.weights, &[("x".into(), x)]).unwrap();
    assert_eq!(outputs[0].0, "y");
    assert_eq!(outputs[0].1.as_f32().unwrap(), [3.5, 7.0, 0.0]);
}

/// A chain of 20 000 nodes: graph construction must not recurse per node (petgraph's recursive
/// Tarjan SCC overflowed a test thread's 2 MiB stack here and aborted the process).
#[test]
fn a_long_chain_loads() {
    let n = 20_000;
    let nodes: Vec<Value> = (0..n)
        .map(|i| {
            let input = if i == 0 { "x".to_string() } else { format!("h{}", i - 1) };
            json!({"name": format!("n{i}"), "op": "Relu", "inputs": [input], "outputs": [format!("h{i}")]})
        })
        .collect();
    let m = json!({
        "format": "kiln", "version": 1,
        "inputs": [{"name": "x", "shape": [2]}],
        "outputs": [format!("h{}", n - 1)],
        "nodes": nodes
    });
    let model = parse(&m).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    assert_eq!(model.graph.num_op_nodes(), n);
}
