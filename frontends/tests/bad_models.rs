//! A catalogue of malformed kiln JSON models and files: each must be refused with a message that
//! says what is wrong and where, and none may panic. Safetensors files are written by hand (8-byte
//! little-endian header length, JSON header, raw data) into a fresh folder under the temp dir.

use kiln_frontends::json::{load_json, parse_json};
use kiln_ir::Model;
use serde_json::{Value, json};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Parses without a base folder; a panic fails the test with the input shown.
fn parse_in(text: &str, dir: Option<&Path>) -> Result<Model, Vec<String>> {
    match catch_unwind(AssertUnwindSafe(|| parse_json(text, dir, "test"))) {
        Ok(result) => result.map_err(|e| e.diagnostics().iter().map(|d| d.to_string()).collect()),
        Err(_) => panic!("the reader panicked on:\n{text}"),
    }
}

fn errors_in(text: &str, dir: Option<&Path>) -> Vec<String> {
    match parse_in(text, dir) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(errors) => errors,
    }
}

fn errors(model: &Value) -> Vec<String> {
    errors_in(&model.to_string(), None)
}

/// Asserts that one reported problem contains every one of `parts`.
#[track_caller]
fn assert_reported(errors: &[String], parts: &[&str]) {
    assert!(
        errors.iter().any(|e| parts.iter().all(|p| e.contains(p))),
        "no problem contains all of {parts:?}; got:\n{}",
        errors.join("\n")
    );
}

/// A valid model without ops (op shape inference lives elsewhere): its output is a weight.
fn leaf_model() -> Value {
    json!({
        "format": "kiln",
        "version": 1,
        "inputs": [{"name": "x", "shape": [2, 4]}],
        "outputs": ["x", "w"],
        "weights": [{"name": "w", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}],
        "nodes": []
    })
}

/// A model with one node.
fn mlp() -> Value {
    json!({
        "format": "kiln",
        "version": 1,
        "name": "mlp",
        "inputs": [{"name": "x", "dtype": "f32", "shape": [2, 4]}],
        "outputs": ["y"],
        "weights": [
            {"name": "w", "shape": [3, 4], "init": {"normal": {"std": 0.5, "seed": 7}}},
            {"name": "b", "shape": [3], "data": [0.1, -0.2, 0.3]}
        ],
        "nodes": [
            {"name": "fc", "op": "Gemm", "inputs": ["x", "w", "b"], "outputs": ["y"], "attributes": {"transB": 1}}
        ]
    })
}

/// A fresh, empty folder for one test's files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-json-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a safetensors file of (name, dtype, shape, raw little-endian bytes) entries.
fn write_safetensors(path: &Path, tensors: &[(&str, &str, &[usize], Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(name.to_string(), json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}));
    }
    let header = Value::Object(header).to_string();
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn i64_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A model whose weight `w` (declared `dtype[shape]`) reads key `key` from `weights.safetensors`.
fn st_model(dtype: &str, shape: &[usize], key: &str) -> Value {
    json!({
        "format": "kiln", "version": 1,
        "inputs": [{"name": "x", "shape": [1]}],
        "outputs": ["w"],
        "safetensors": "weights.safetensors",
        "weights": [{"name": "w", "dtype": dtype, "shape": shape, "safetensors": key}],
        "nodes": []
    })
}

// ---- the file itself -------------------------------------------------------------------------

#[test]
fn not_json() {
    let errors = errors_in("<model/>", None);
    assert_eq!(errors, ["line 1, column 1: invalid JSON: expected value"]);
}

#[test]
fn truncated_file() {
    let text = mlp().to_string();
    let errors = errors_in(&text[..text.len() / 2], None);
    assert_eq!(errors.len(), 1);
    assert_reported(&errors, &["line 1, column", "invalid JSON: EOF while parsing", "is it truncated?"]);
}

#[test]
fn empty_file() {
    assert_eq!(errors_in("", None), ["the file is empty; a kiln model is a JSON object (see docs/model-format.md)"]);
    assert_eq!(errors_in("  \n\t", None).len(), 1);
}

#[test]
fn syntax_error_names_line_and_column() {
    let text = "{\n  \"format\": \"kiln\",\n  \"version\": 1,,\n}";
    assert_eq!(errors_in(text, None), ["line 3, column 16: invalid JSON: key must be a string"]);
}

#[test]
fn bare_nan_and_infinity() {
    let hint = "(JSON has no NaN or Infinity; write \"nan\", \"inf\" or \"-inf\" as strings)";
    for (text, column) in [("[1, NaN]", 5), ("[1,\n -Infinity]", 3), ("[Infinity]", 2)] {
        let errors = errors_in(text, None);
        assert_eq!(errors.len(), 1);
        assert_reported(&errors, &[&format!(", column {column}: invalid JSON: "), hint]);
    }
}

#[test]
fn byte_order_mark_is_skipped() {
    let text = format!("\u{feff}{}", leaf_model());
    assert!(parse_in(&text, None).is_ok());
}

#[test]
fn top_level_not_an_object() {
    assert_eq!(errors(&json!([1, 2])), ["$: a kiln model must be a JSON object, got a list"]);
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_reported(&errors_in(&text, None), &["invalid JSON: recursion limit exceeded"]);
}

#[test]
fn number_out_of_range() {
    let text = mlp().to_string().replace("0.1,", "1e400,");
    assert_reported(&errors_in(&text, None), &["invalid JSON: number out of range"]);
}

#[test]
fn load_json_missing_and_non_utf8_files() {
    let dir = temp_dir("files");
    let missing = dir.join("nope.json");
    let err = load_json(&missing).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: cannot read the model file:", missing.display())), "{err}");
    let binary = dir.join("binary.json");
    std::fs::write(&binary, [b'{', 0xff, 0xfe, b'}']).unwrap();
    let err = load_json(&binary).unwrap_err().to_string();
    assert!(err.ends_with("the file is not UTF-8 text (invalid byte at offset 1)"), "{err}");
}

// ---- the header ------------------------------------------------------------------------------

#[test]
fn wrong_format() {
    let mut m = mlp();
    m["format"] = json!("onnx");
    assert_eq!(errors(&m), ["$.format: format is \"onnx\", but kiln reads only \"kiln\" JSON models"]);
}

#[test]
fn missing_format() {
    let mut m = mlp();
    m.as_object_mut().unwrap().remove("format");
    assert_eq!(errors(&m), ["$: missing key 'format' (a kiln model starts with \"format\": \"kiln\", \"version\": 1)"]);
}

#[test]
fn wrong_version() {
    let mut m = mlp();
    m["version"] = json!(2);
    assert_eq!(errors(&m), ["$.version: unsupported format version 2: this kiln reads version 1"]);
    m["version"] = json!("1");
    assert_eq!(errors(&m), ["$.version: 'version' must be the integer 1, got a string (\"1\")"]);
}

#[test]
fn unknown_top_level_key() {
    let mut m = mlp();
    let weights = m.as_object_mut().unwrap().remove("weights").unwrap();
    m["wieghts"] = weights;
    let errors = errors(&m);
    assert_reported(&errors, &["$.wieghts: unknown key 'wieghts' in the model (did you mean 'weights'?)"]);
}

#[test]
fn missing_required_keys() {
    let m = json!({"format": "kiln", "version": 1});
    let errors = errors(&m);
    assert_reported(&errors, &["$: the model has no 'inputs'"]);
    assert_reported(&errors, &["$: the model has no 'nodes'"]);
    assert_reported(&errors, &["$: the model has no 'outputs'"]);
}

// ---- inputs, weights and their data ----------------------------------------------------------

#[test]
fn negative_dimension() {
    let mut m = leaf_model();
    m["inputs"][0]["shape"] = json!([2, -4]);
    let errors = errors(&m);
    assert_eq!(errors, ["$.inputs[0].shape[1] (input 'x'): dimension 1 is -4; dimensions must be ≥ 1"]);
}

#[test]
fn zero_dimension() {
    let mut m = leaf_model();
    m["weights"][0]["shape"] = json!([0, 3]);
    m["weights"][0]["data"] = json!([]);
    assert_eq!(
        errors(&m),
        ["$.weights[0] (weight 'w'): weight 'w': dimension 0 of f32[0,3] is zero; kiln needs every dimension ≥ 1"]
    );
}

#[test]
fn absurd_size_is_refused_without_allocating() {
    // 10^12 elements would be 4 TB of f32: refused at once, for every kind of source.
    for source in [json!({"init": {"zeros": {}}}), json!({"data": [1.0]}), json!({"init": {"normal": {}}})] {
        let mut m = leaf_model();
        let mut weight = json!({"name": "w", "shape": [1_000_000, 1_000_000]});
        weight.as_object_mut().unwrap().extend(source.as_object().unwrap().clone());
        m["weights"][0] = weight;
        assert_eq!(
            errors(&m),
            ["$.weights[0] (weight 'w'): weight 'w': f32[1000000,1000000] has 1000000000000 elements, \
              more than the limit of 2147483648"]
        );
    }
    let mut m = leaf_model();
    m["inputs"][0]["shape"] = json!([u64::MAX, u64::MAX]);
    assert_reported(&errors(&m), &["$.inputs[0] (input 'x'): input 'x'", "more than the limit"]);
}

#[test]
fn unknown_dtype() {
    let mut m = leaf_model();
    m["inputs"][0]["dtype"] = json!("float32");
    assert_eq!(
        errors(&m),
        ["$.inputs[0].dtype (input 'x'): unknown dtype \"float32\"; kiln's dtypes are f32, i64, bool"]
    );
}

#[test]
fn data_length_differs_from_shape() {
    let mut m = leaf_model();
    m["weights"][0]["data"] = json!([1, 2, 3, 4, 5]);
    assert_eq!(errors(&m), ["$.weights[0].data (weight 'w'): weight 'w' has 5 values in 'data' but f32[2,3] needs 6"]);
    m["weights"][0]["data"] = json!([[1, 2, 3], [4, 5, 6]]);
    assert_reported(&errors(&m), &["has 2 values in 'data' but f32[2,3] needs 6 (as a flat list"]);
}

#[test]
fn data_values_of_the_wrong_kind() {
    let mut m = leaf_model();
    m["weights"][0]["data"] = json!([1, 2, 3, 4, "five", 6]);
    assert_eq!(
        errors(&m),
        ["$.weights[0].data[4] (weight 'w'): value 4 of weight 'w' must be a number within the f32 range, \
          or \"nan\", \"inf\" or \"-inf\", got a string (\"five\")"]
    );
    m["weights"][0]["data"] = json!([1, 2, 3, 4, 5, 1e39]);
    assert_reported(&errors(&m), &["$.weights[0].data[5] (weight 'w'): value 5 of weight 'w' must be a number"]);
    let mut m = leaf_model();
    m["weights"][0]["dtype"] = json!("i64");
    m["weights"][0]["data"] = json!([1, 2, 3.5, 4, 5, 6]);
    assert_reported(&errors(&m), &["$.weights[0].data[2]", "must be a 64-bit integer, got a number (3.5)"]);
    m["weights"][0]["dtype"] = json!("bool");
    m["weights"][0]["data"] = json!([true, false, 1, true, false, true]);
    assert_reported(&errors(&m), &["$.weights[0].data[2]", "must be true or false, got a number (1)"]);
}

#[test]
fn weight_sources_missing_or_doubled() {
    let mut m = leaf_model();
    m["weights"][0] = json!({"name": "w", "shape": [2]});
    assert_eq!(
        errors(&m),
        ["$.weights[0] (weight 'w'): weight 'w' has no source: give one of 'data', 'safetensors' or 'init'"]
    );
    m["weights"][0] = json!({"name": "w", "shape": [2], "data": [1, 2], "init": {"ones": {}}});
    assert_eq!(
        errors(&m),
        ["$.weights[0] (weight 'w'): weight 'w' has several sources ('data', 'init'); give exactly one"]
    );
}

#[test]
fn unknown_weight_key_suggests() {
    let mut m = leaf_model();
    m["weights"][0]["shpae"] = m["weights"][0]["shape"].clone();
    m["weights"][0].as_object_mut().unwrap().remove("shape");
    let errors = errors(&m);
    assert_reported(
        &errors,
        &["$.weights[0].shpae (weight 'w'): unknown key 'shpae' in weight 'w' (did you mean 'shape'?)"],
    );
    assert_reported(&errors, &["$.weights[0] (weight 'w'): weight 'w' has no 'shape'"]);
}

#[test]
fn unknown_init_kind() {
    let mut m = leaf_model();
    m["weights"][0] = json!({"name": "w", "shape": [2], "init": {"gaussian": {"std": 1}}});
    assert_eq!(
        errors(&m),
        ["$.weights[0].init.gaussian (weight 'w'): unknown initializer 'gaussian'; kinds are normal, uniform, \
          constant, zeros, ones, arange"]
    );
    m["weights"][0]["init"] = json!({"nromal": {}});
    assert_reported(&errors(&m), &["unknown initializer 'nromal' (did you mean 'normal'?)"]);
    m["weights"][0]["init"] = json!({"normal": {}, "ones": {}});
    assert_reported(&errors(&m), &["$.weights[0].init (weight 'w'): 'init' must name exactly one initializer"]);
}

#[test]
fn init_with_bad_parameters() {
    let cases = [
        (
            json!({"normal": {"std": -1}}),
            "$.weights[0].init.normal (weight 'w'): the normal initializer's 'std' must be ≥ 0, got -1",
        ),
        (
            json!({"normal": {"sd": 1}}),
            "$.weights[0].init.normal.sd (weight 'w'): 'normal' has no parameter 'sd' (did you mean 'std'?); its parameters: mean, std, seed",
        ),
        (
            json!({"normal": {"seed": -3}}),
            "$.weights[0].init.normal.seed (weight 'w'): 'seed' must be an integer from 0 to 2^64 - 1, got a number (-3)",
        ),
        (json!({"uniform": {"low": 2, "high": 1}}), "the uniform initializer needs low ≤ high, got low = 2, high = 1"),
        (
            json!({"uniform": {"low": "zero"}}),
            "$.weights[0].init.uniform.low (weight 'w'): 'low' must be a number, got a string (\"zero\")",
        ),
        (json!({"constant": {}}), "$.weights[0].init.constant (weight 'w'): 'constant' needs the parameter 'value'"),
        (json!({"zeros": {"value": 0}}), "'zeros' has no parameter 'value'; its parameters: none"),
        (json!({"ones": 1}), "the parameters of 'ones' must be a JSON object, got a number (1)"),
        (
            json!({"constant": {"value": 1e300}}),
            "the constant initializer gives element 0 a value outside the f32 range",
        ),
    ];
    for (init, expected) in cases {
        let mut m = leaf_model();
        m["weights"][0] = json!({"name": "w", "shape": [2], "init": init});
        let errors = errors(&m);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_reported(&errors, &[expected]);
    }
    // Random streams make f32 only.
    let mut m = leaf_model();
    m["weights"][0] = json!({"name": "w", "dtype": "i64", "shape": [2], "init": {"uniform": {}}});
    assert_reported(&errors(&m), &["the uniform initializer makes f32 weights only, not i64"]);
}

#[test]
fn non_string_names() {
    let mut m = leaf_model();
    m["inputs"][0]["name"] = json!(3);
    assert_reported(&errors(&m), &["$.inputs[0].name: the input name must be a string, got a number (3)"]);
    let mut m = mlp();
    m["nodes"][0]["name"] = json!(["fc"]);
    assert_reported(&errors(&m), &["$.nodes[0].name: a node's name must be a string, got a list"]);
    let mut m = mlp();
    m["nodes"][0]["inputs"][1] = json!(null);
    assert_reported(&errors(&m), &["$.nodes[0].inputs[1] (node 'fc'): a tensor name must be a string, got null"]);
}

#[test]
fn nodes_not_an_array() {
    let mut m = mlp();
    m["nodes"] = json!({"fc": {}});
    assert_eq!(errors(&m), ["$.nodes: 'nodes' must be a list, got an object"]);
    m["nodes"] = json!([42]);
    // A node that cannot be read defines nothing, so the output it may have made is missing too.
    assert_eq!(
        errors(&m),
        [
            "$.nodes[0]: a node must be a JSON object, got a number (42)",
            "$.outputs[0]: graph output 'y' is never produced: tensor 'y' is not defined by any input, weight or node \
             (did you mean 'b'?)"
        ]
    );
}

// ---- safetensors -----------------------------------------------------------------------------

#[test]
fn missing_safetensors_file() {
    let dir = temp_dir("missing-st");
    let errors = errors_in(&st_model("f32", &[2], "w").to_string(), Some(&dir));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_reported(
        &errors,
        &[
            "$.safetensors: cannot read the safetensors file '",
            "weights.safetensors' (needed by weight 'w' (key 'w')): ",
        ],
    );
    // Read from text only, no folder to look in.
    assert_reported(&errors_in(&st_model("f32", &[2], "w").to_string(), None), &["the model was not read from a file"]);
}

#[test]
fn safetensors_without_a_file_name() {
    let mut m = st_model("f32", &[2], "w");
    m.as_object_mut().unwrap().remove("safetensors");
    assert_eq!(
        errors(&m),
        ["$.weights[0].safetensors (weight 'w'): weight 'w' reads safetensors key 'w' but the model names no \
          safetensors file (add \"safetensors\": \"FILE\" at the top level)"]
    );
}

#[test]
fn invalid_safetensors_file() {
    let dir = temp_dir("invalid-st");
    std::fs::write(dir.join("weights.safetensors"), b"\x05\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    let errors = errors_in(&st_model("f32", &[2], "w").to_string(), Some(&dir));
    assert_reported(&errors, &["$.safetensors: '", "weights.safetensors' is not a valid safetensors file: "]);
}

#[test]
fn missing_tensor_in_safetensors() {
    let dir = temp_dir("missing-key");
    write_safetensors(&dir.join("weights.safetensors"), &[("fc.weight", "F32", &[2], f32_bytes(&[1.0, 2.0]))]);
    let errors = errors_in(&st_model("f32", &[2], "fc.weight2").to_string(), Some(&dir));
    assert_eq!(errors.len(), 1);
    assert_reported(
        &errors,
        &[
            "$.weights[0].safetensors (weight 'w'): safetensors key 'fc.weight2' for weight 'w' is not in '",
            "(did you mean 'fc.weight'?)",
        ],
    );
}

#[test]
fn wrong_dtype_in_safetensors() {
    let dir = temp_dir("wrong-dtype");
    write_safetensors(&dir.join("weights.safetensors"), &[("w", "F64", &[2], vec![0; 16])]);
    let errors = errors_in(&st_model("f32", &[2], "w").to_string(), Some(&dir));
    assert_reported(
        &errors,
        &[
            "$.weights[0].safetensors (weight 'w'): weight 'w' is declared f32 but key 'w' in '",
            "holds F64 data; store it as F32",
        ],
    );
    write_safetensors(&dir.join("weights.safetensors"), &[("w", "F32", &[2], f32_bytes(&[1.0, 2.0]))]);
    let errors = errors_in(&st_model("i64", &[2], "w").to_string(), Some(&dir));
    assert_reported(&errors, &["weight 'w' is declared i64 but key 'w'", "holds F32 data; store it as I64"]);
}

#[test]
fn wrong_shape_in_safetensors() {
    let dir = temp_dir("wrong-shape");
    write_safetensors(&dir.join("weights.safetensors"), &[("w", "F32", &[3, 2], f32_bytes(&[0.0; 6]))]);
    let errors = errors_in(&st_model("f32", &[2, 3], "w").to_string(), Some(&dir));
    assert_reported(
        &errors,
        &[
            "$.weights[0].safetensors (weight 'w'): weight 'w' is declared f32[2,3] but key 'w' in '",
            "' has shape [3,2]",
        ],
    );
}

// ---- nodes -----------------------------------------------------------------------------------

#[test]
fn unknown_op_suggests() {
    let mut m = mlp();
    m["nodes"][0]["op"] = json!("Gemmm");
    assert_eq!(errors(&m), ["$.nodes[0] (node 'fc'): unknown op 'Gemmm' (did you mean 'Gemm'?)"]);
}

#[test]
fn missing_attribute() {
    let mut m = mlp();
    m["nodes"][0] = json!({"name": "cat", "op": "Concat", "inputs": ["x", "x"], "outputs": ["y"]});
    assert_eq!(errors(&m), ["$.nodes[0] (node 'cat'): Concat needs the int attribute 'axis'"]);
}

#[test]
fn attribute_of_wrong_type() {
    let mut m = mlp();
    m["nodes"][0]["attributes"]["transB"] = json!("yes");
    assert_eq!(
        errors(&m),
        ["$.nodes[0].attributes.transB (node 'fc'): attribute 'transB' of Gemm must be an int, got string \"yes\""]
    );
    m["nodes"][0]["attributes"]["transB"] = json!({"x": 1});
    assert_reported(&errors(&m), &["$.nodes[0].attributes.transB (node 'fc'): attribute 'transB': must be a number"]);
    m["nodes"][0]["attributes"] = json!([1]);
    assert_reported(
        &errors(&m),
        &["$.nodes[0].attributes (node 'fc'): 'attributes' must be a JSON object, got a list"],
    );
}

#[test]
fn unknown_attribute_suggests() {
    let mut m = mlp();
    m["nodes"][0]["attributes"] = json!({"transb": 1});
    assert_eq!(
        errors(&m),
        ["$.nodes[0].attributes.transb (node 'fc'): Gemm has no attribute 'transb' (did you mean 'transB'?)"]
    );
}

#[test]
fn unknown_node_key_suggests() {
    let mut m = mlp();
    m["nodes"][0]["attrs"] = json!({});
    assert_reported(&errors(&m), &["$.nodes[0].attrs (node 'fc'): unknown key 'attrs' in node 'fc'"]);
    let mut m = mlp();
    m["nodes"][0].as_object_mut().unwrap().remove("op");
    assert_reported(&errors(&m), &["$.nodes[0] (node 'fc'): node 'fc' has no 'op'"]);
}

#[test]
fn undefined_input_suggests() {
    let mut m = mlp();
    m["nodes"][0]["inputs"] = json!(["x", "ww", "b"]);
    assert_eq!(
        errors(&m),
        ["$.nodes[0] (node 'fc'): tensor 'ww' is not defined by any input, weight or node (did you mean 'w'?)"]
    );
}

#[test]
fn cycle() {
    let m = json!({
        "format": "kiln", "version": 1,
        "inputs": [{"name": "x", "shape": [2]}],
        "outputs": ["b"],
        "nodes": [
            {"name": "n1", "op": "Add", "inputs": ["x", "b"], "outputs": ["a"]},
            {"name": "n2", "op": "Relu", "inputs": ["a"], "outputs": ["b"]}
        ]
    });
    assert_reported(&errors(&m), &["$.nodes[0] (node 'n1'): the graph has a cycle through nodes n1, n2"]);
}

#[test]
fn duplicate_tensor_names() {
    let mut m = leaf_model();
    m["weights"][0]["name"] = json!("x");
    m["outputs"] = json!(["x"]);
    assert_eq!(errors(&m), ["$.weights[0] (weight 'x'): tensor 'x' is already defined at $.inputs[0] (input 'x')"]);
}

#[test]
fn duplicate_node_names() {
    let m = json!({
        "format": "kiln", "version": 1,
        "inputs": [{"name": "x", "shape": [2]}],
        "outputs": ["b"],
        "nodes": [
            {"name": "act", "op": "Relu", "inputs": ["x"], "outputs": ["a"]},
            {"name": "act", "op": "Relu", "inputs": ["a"], "outputs": ["b"]}
        ]
    });
    assert_reported(
        &errors(&m),
        &["$.nodes[1] (node 'act'): node name 'act' is already used at $.nodes[0] (node 'act')"],
    );
}

#[test]
fn output_never_produced() {
    let mut m = leaf_model();
    m["outputs"] = json!(["x", "ww"]);
    assert_eq!(
        errors(&m),
        ["$.outputs[1]: graph output 'ww' is never produced: tensor 'ww' is not defined by any input, weight or node \
          (did you mean 'w'?)"]
    );
    m["outputs"] = json!([]);
    assert_eq!(errors(&m), ["the graph has no outputs"]);
}

#[test]
fn constant_node_problems() {
    let mut m = leaf_model();
    m["nodes"] = json!([{"name": "c", "op": "Constant", "inputs": ["x"], "outputs": ["k"],
                         "attributes": {"value": {"shape": [2], "data": [1, 2]}}}]);
    assert_eq!(errors(&m), ["$.nodes[0] (node 'c'): Constant 'c' takes no inputs, got 1"]);
    m["nodes"] = json!([{"name": "c", "op": "Constant", "outputs": ["k"],
                         "attributes": {"value": {"shape": [3], "data": [1, 2]}}}]);
    assert_eq!(
        errors(&m),
        [
            "$.nodes[0].attributes.value.data (node 'c'): the value of Constant 'c' has 2 values in 'data' but f32[3] needs 3"
        ]
    );
    m["nodes"] = json!([{"name": "c", "op": "Constant", "outputs": ["k"], "attributes": {}}]);
    assert_reported(&errors(&m), &["$.nodes[0] (node 'c'): Constant 'c' needs exactly one of the attributes 'value'"]);
}

#[test]
fn static_parameter_inputs_must_be_weights_of_the_right_type() {
    let base = |shape_weight: Value, inputs: Value| {
        json!({
            "format": "kiln", "version": 1,
            "inputs": [{"name": "x", "shape": [2, 3]}],
            "outputs": ["y"],
            "weights": [shape_weight],
            "nodes": [{"name": "r", "op": "Reshape", "inputs": inputs, "outputs": ["y"]}]
        })
    };
    let f32_shape = json!({"name": "s", "shape": [2], "data": [3, 2]});
    assert_eq!(
        errors(&base(f32_shape, json!(["x", "s"]))),
        [
            "$.nodes[0].inputs[1] (node 'r'): input 1 of Reshape ('s', its 'shape') must be an i64 tensor of rank 0 or 1, got f32[2]"
        ]
    );
    let i64_shape = json!({"name": "s", "dtype": "i64", "shape": [2], "data": [3, 2]});
    assert_eq!(
        errors(&base(i64_shape.clone(), json!(["x", "x"]))),
        ["$.nodes[0].inputs[1] (node 'r'): input 1 of Reshape ('x', its 'shape') must name a weight whose data kiln \
          reads at load time, but 'x' is a graph input"]
    );
    assert_reported(
        &errors(&base(i64_shape.clone(), json!(["x", "t"]))),
        &["but 't' is not a weight (did you mean 's'?)"],
    );
    assert_eq!(
        errors(&base(i64_shape.clone(), json!(["x", "s", "s"]))),
        ["$.nodes[0].inputs[2] (node 'r'): Reshape has no input 2 in kiln (static parameters: 1: 'shape')"]
    );
    let mut both = base(i64_shape, json!(["x", "s"]));
    both["nodes"][0]["attributes"] = json!({"shape": [6]});
    assert_eq!(
        errors(&both),
        ["$.nodes[0].inputs[1] (node 'r'): Reshape's 'shape' is given both as an attribute and as input 1"]
    );
}

#[test]
fn many_problems_are_reported_at_once() {
    let m = json!({
        "format": "kiln", "version": 1, "nmae": "typo",
        "inputs": [{"name": "x", "shape": [2, -1]}],
        "outputs": ["y", "nowhere"],
        "weights": [
            {"name": "w", "shape": [3, 4], "data": [1, 2]},
            {"name": "v", "shape": [3], "init": {"normal": {"std": -2}}}
        ],
        "nodes": [
            {"name": "fc", "op": "Gemmm", "inputs": ["x", "w"], "outputs": ["h"]},
            {"name": "act", "op": "Relu", "inputs": ["hh"], "outputs": ["y"]},
            {"name": "cat", "op": "Concat", "inputs": ["h", "h"], "outputs": ["z"], "attributes": {"axis": "0"}}
        ]
    });
    let errors = errors(&m);
    let expected = [
        "$.nmae: unknown key 'nmae' in the model (did you mean 'name'?)",
        "$.inputs[0].shape[1] (input 'x'): dimension 1 is -1; dimensions must be ≥ 1",
        "$.weights[0].data (weight 'w'): weight 'w' has 2 values in 'data' but f32[3,4] needs 12",
        "$.weights[1].init.normal (weight 'v'): the normal initializer's 'std' must be ≥ 0, got -2",
        "$.nodes[0] (node 'fc'): unknown op 'Gemmm' (did you mean 'Gemm'?)",
        "$.nodes[1] (node 'act'): tensor 'hh' is not defined by any input, weight or node (did you mean 'h'?)",
        "$.nodes[2].attributes.axis (node 'cat'): attribute 'axis' of Concat must be an int, got string \"0\"",
        "$.outputs[1]: graph output 'nowhere' is never produced",
    ];
    // All of them, in the order of the file, and nothing else: in particular no cascade from the
    // broken input or node.
    assert_eq!(errors.len(), expected.len(), "{}", errors.join("\n"));
    for (got, want) in errors.iter().zip(expected) {
        assert!(got.starts_with(want), "expected {want:?}\n     got {got:?}");
    }
}

// ---- shape inference ---------------------------------------------------------------------------

/// One node `op` over graph inputs (name → shape) producing `y`.
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

#[test]
fn matmul_shape_mismatch() {
    let errors = errors(&one_node(&[("a", &[3, 4]), ("b", &[5, 6])], "MatMul", json!({})));
    assert_eq!(
        errors,
        [
            "$.nodes[0] (node 'n'): node 'n' (MatMul) with inputs f32[3,4], f32[5,6]: inner dimensions differ: [3,4] · [5,6]"
        ]
    );
}

#[test]
fn conv_on_rank_3_input() {
    let mut m = one_node(&[("x", &[1, 3, 8])], "Conv", json!({}));
    m["weights"] = json!([{"name": "w", "shape": [4, 3, 3, 3], "init": {"ones": {}}}]);
    m["nodes"][0]["inputs"] = json!(["x", "w"]);
    assert_eq!(
        errors(&m),
        ["$.nodes[0] (node 'n'): node 'n' (Conv) with inputs f32[1,3,8], f32[4,3,3,3]: Conv supports 2-D convolution \
          only (rank-4 NCHW input), got an input of rank 3"]
    );
}

#[test]
fn broadcast_failure() {
    let errors = errors(&one_node(&[("a", &[2, 3]), ("b", &[4])], "Add", json!({})));
    assert_eq!(
        errors,
        ["$.nodes[0] (node 'n'): node 'n' (Add) with inputs f32[2,3], f32[4]: shapes [2,3] and [4] do not broadcast \
          (dimension 1 of the result: 3 vs 4)"]
    );
}

#[test]
fn shape_errors_do_not_cascade() {
    let mut m = one_node(&[("a", &[2, 3]), ("b", &[4])], "Add", json!({}));
    m["nodes"][0]["outputs"] = json!(["h"]);
    m["nodes"].as_array_mut().unwrap().push(json!({"name": "r", "op": "Relu", "inputs": ["h"], "outputs": ["y"]}));
    assert_eq!(errors(&m).len(), 1);
}

// ---- what loads ------------------------------------------------------------------------------

#[test]
fn valid_leaf_model_loads_with_its_data() {
    let mut m = leaf_model();
    m["weights"] = json!([
        {"name": "w", "shape": [2, 3], "data": [1, 2, 3, 4, "-inf", "nan"]},
        {"name": "i", "dtype": "i64", "shape": [4], "init": {"arange": {"start": 3, "step": -2}}},
        {"name": "b", "dtype": "bool", "shape": [2], "data": [true, false]},
        {"name": "n", "shape": [3], "init": {"normal": {"mean": 1, "std": 0.5, "seed": 7}}}
    ]);
    m["outputs"] = json!(["w", "i", "b", "n"]);
    let model = parse_in(&m.to_string(), None).unwrap();
    assert_eq!(model.graph.name(), "test");
    let w = model.weights.get("w").unwrap().as_f32().unwrap().to_vec();
    assert_eq!(&w[..5], [1.0, 2.0, 3.0, 4.0, f32::NEG_INFINITY]);
    assert!(w[5].is_nan());
    assert_eq!(model.weights.get("i").unwrap().as_i64().unwrap(), [3, 1, -1, -3]);
    assert_eq!(model.weights.get("b").unwrap().as_bool().unwrap(), [true, false]);
    // The f32 bit patterns tools/init_reference.py gives for normal(mean 1, std 0.5, seed 7).
    let bits: Vec<u32> = model.weights.get("n").unwrap().as_f32().unwrap().iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits, [0x3FD75C09, 0x3F4D3EB4, 0x3F8049B4]);
}

#[test]
fn safetensors_weights_load() {
    let dir = temp_dir("st-ok");
    write_safetensors(
        &dir.join("weights.safetensors"),
        &[
            ("a", "F32", &[2, 2], f32_bytes(&[1.5, -2.0, 3.25, 0.0])),
            ("idx", "I64", &[3], i64_bytes(&[7, -1, 1 << 40])),
        ],
    );
    let m = json!({
        "format": "kiln", "version": 1, "name": "st",
        "inputs": [{"name": "x", "shape": [1]}],
        "outputs": ["wa", "wi"],
        "safetensors": "weights.safetensors",
        "weights": [
            {"name": "wa", "shape": [2, 2], "safetensors": "a"},
            {"name": "wi", "dtype": "i64", "shape": [3], "safetensors": "idx"}
        ],
        "nodes": []
    });
    let path = dir.join("model.json");
    std::fs::write(&path, m.to_string()).unwrap();
    let model = load_json(&path).unwrap();
    assert_eq!(model.graph.name(), "st");
    assert_eq!(model.weights.get("wa").unwrap().as_f32().unwrap(), [1.5, -2.0, 3.25, 0.0]);
    assert_eq!(model.weights.get("wi").unwrap().as_i64().unwrap(), [7, -1, 1 << 40]);

    // The graph name defaults to the file name; errors are prefixed with the file's path.
    let mut unnamed = m.clone();
    unnamed.as_object_mut().unwrap().remove("name");
    let path = dir.join("unnamed.json");
    std::fs::write(&path, unnamed.to_string()).unwrap();
    assert_eq!(load_json(&path).unwrap().graph.name(), "unnamed");
    unnamed["weights"][0]["safetensors"] = json!("b");
    std::fs::write(&path, unnamed.to_string()).unwrap();
    let err = load_json(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: $.weights[0].safetensors (weight 'wa'): ", path.display())), "{err}");
}

#[test]
fn constant_nodes_become_weights() {
    let mut m = leaf_model();
    m["nodes"] = json!([
        {"name": "c1", "op": "Constant", "outputs": ["k1"], "attributes": {"value": {"dtype": "i64", "shape": [2], "data": [4, 5]}}},
        {"name": "c2", "op": "Constant", "outputs": ["k2"], "attributes": {"value_float": 0.5}},
        {"name": "c3", "op": "Constant", "outputs": ["k3"], "attributes": {"value_ints": [1, 2, 3]}}
    ]);
    m["outputs"] = json!(["k1", "k2", "k3"]);
    let model = parse_in(&m.to_string(), None).unwrap();
    assert_eq!(model.weights.get("k1").unwrap().as_i64().unwrap(), [4, 5]);
    assert_eq!(model.weights.get("k2").unwrap().shape(), [0usize; 0]);
    assert_eq!(model.weights.get("k2").unwrap().as_f32().unwrap(), [0.5]);
    assert_eq!(model.weights.get("k3").unwrap().as_i64().unwrap(), [1, 2, 3]);
    assert_eq!(model.graph.num_op_nodes(), 0);
}

#[test]
fn duplicate_json_keys() {
    let text = "{\"format\": \"kiln\", \"version\": 1,\n \"inputs\": [{\"name\": \"x\", \"shape\": [2], \"shape\": [3]}],\n \
                \"outputs\": [\"x\"], \"nodes\": [], \"nodes\": []}";
    let errors = errors_in(text, None);
    assert_eq!(
        errors,
        [
            "line 2, column 41: duplicate key \"shape\" (first at line 2, column 27); JSON would keep only the last",
            "line 3, column 33: duplicate key \"nodes\" (first at line 3, column 20); JSON would keep only the last",
        ]
    );
    // The same key in different objects, and key-like strings in values, are fine.
    let text = r#"{"format": "kiln", "version": 1, "inputs": [{"name": "x", "shape": [1]}, {"name": "name", "shape": [1]}],
                   "outputs": ["x", "name"], "nodes": []}"#;
    assert!(parse_in(text, None).is_ok());
}

#[test]
fn constant_and_node_with_the_same_name() {
    let m = json!({
        "format": "kiln", "version": 1,
        "inputs": [{"name": "x", "shape": [2]}],
        "outputs": ["y"],
        "nodes": [
            {"name": "n", "op": "Constant", "outputs": ["k"], "attributes": {"value_floats": [1, 2]}},
            {"name": "n", "op": "Add", "inputs": ["x", "k"], "outputs": ["y"]}
        ]
    });
    assert_reported(&errors(&m), &["$.nodes[1] (node 'n'): node name 'n' is already used at $.nodes[0] (node 'n')"]);
}

/// Every position of a model that uses every feature, replaced by each of a set of wrong values:
/// the reader must return (an error or a model) and never panic.
#[test]
fn no_mutation_panics() {
    let dir = temp_dir("mutations");
    write_safetensors(&dir.join("w.safetensors"), &[("k", "I64", &[2], i64_bytes(&[3, 2]))]);
    let model = json!({
        "format": "kiln", "version": 1, "name": "all",
        "inputs": [{"name": "x", "dtype": "f32", "shape": [2, 3]}],
        "outputs": ["y", "c"],
        "safetensors": "w.safetensors",
        "weights": [
            {"name": "s", "dtype": "i64", "shape": [2], "safetensors": "k"},
            {"name": "n", "shape": [3], "init": {"normal": {"mean": 0, "std": 1, "seed": 1}}},
            {"name": "u", "shape": [3], "init": {"uniform": {"low": -1, "high": 1}}},
            {"name": "a", "dtype": "i64", "shape": [2], "init": {"arange": {"start": 1, "step": 2}}},
            {"name": "d", "shape": [1], "data": ["nan"]}
        ],
        "nodes": [
            {"name": "r", "op": "Reshape", "inputs": ["x", "s"], "outputs": ["h"]},
            {"name": "c0", "op": "Constant", "outputs": ["c"], "attributes": {"value": {"dtype": "f32", "shape": [1], "data": [2]}}},
            {"name": "sm", "op": "Softmax", "inputs": ["h"], "outputs": ["y"], "attributes": {"axis": -1}}
        ]
    });
    let garbage = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(1e300),
        json!(18446744073709551615u64),
        json!("x"),
        json!(""),
        json!([]),
        json!([[]]),
        json!({}),
        json!({"": {}}),
    ];
    fn paths(v: &Value, here: String, out: &mut Vec<String>) {
        out.push(here.clone());
        match v {
            Value::Object(map) => map.iter().for_each(|(k, x)| paths(x, format!("{here}/{k}"), out)),
            Value::Array(items) => items.iter().enumerate().for_each(|(i, x)| paths(x, format!("{here}/{i}"), out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    paths(&model, String::new(), &mut all);
    let mut parsed = 0;
    for path in &all {
        for g in &garbage {
            let mut m = model.clone();
            *m.pointer_mut(path).unwrap() = g.clone();
            let _ = parse_in(&m.to_string(), Some(&dir));
            parsed += 1;
        }
        // Remove the key or element entirely, too.
        if let Some((parent, last)) = path.rsplit_once('/') {
            let mut m = model.clone();
            match m.pointer_mut(parent).unwrap() {
                Value::Object(map) => drop(map.remove(last)),
                Value::Array(items) => drop(items.remove(last.parse::<usize>().unwrap())),
                _ => unreachable!(),
            }
            let _ = parse_in(&m.to_string(), Some(&dir));
        }
    }
    assert!(parsed > 500, "{parsed}");
}

/// Every prefix of a valid model is an error (a truncated download), never a panic.
#[test]
fn every_truncation_is_an_error() {
    let text = serde_json::to_string_pretty(&mlp()).unwrap();
    for end in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
        let errors = errors_in(&text[..end], None);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("invalid JSON") || errors[0].contains("the file is empty"), "{errors:?}");
    }
}

// ---- files a model names: containment, file kinds, sizes (issue 11) ---------------------------

/// `st_model` reading from `file` instead of `weights.safetensors`.
fn st_model_at(file: &str) -> String {
    let mut m = st_model("f32", &[2], "w");
    m["safetensors"] = json!(file);
    m.to_string()
}

/// Issue 11: the safetensors path was joined to the model's folder unchecked, so an absolute path,
/// `..` or a symlink read any file (`/etc/passwd` was opened, `../x/secret.safetensors` loaded as
/// weights) and `/dev/zero` was read until memory ran out.
#[test]
fn safetensors_file_must_stay_inside_the_model_folder() {
    let root = temp_dir("st-escape");
    let dir = root.join("model");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(root.join("x")).unwrap();
    write_safetensors(&root.join("x/secret.safetensors"), &[("w", "F32", &[2], f32_bytes(&[6.0, 7.0]))]);
    write_safetensors(&dir.join("sub/ok.safetensors"), &[("w", "F32", &[2], f32_bytes(&[1.0, 2.0]))]);
    std::os::unix::fs::symlink(root.join("x/secret.safetensors"), dir.join("link.safetensors")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.safetensors")).unwrap();

    let model = parse_in(&st_model_at("sub/ok.safetensors"), Some(&dir)).expect("a file inside the folder loads");
    assert_eq!(model.weights.get("w").and_then(|t| t.as_f32()), Some(&[1.0f32, 2.0][..]));
    for (file, why) in [
        ("../x/secret.safetensors", "must be a relative path inside the model's folder"),
        ("/etc/passwd", "must be a relative path inside the model's folder"),
        ("/dev/zero", "must be a relative path inside the model's folder"),
        ("link.safetensors", "leads outside the model's folder"),
        ("zero.safetensors", "leads outside the model's folder"),
        ("sub", "a directory, not a regular file"),
    ] {
        let errors = errors_in(&st_model_at(file), Some(&dir));
        assert_reported(&errors, &["$.safetensors: cannot read the safetensors file", why]);
    }
}

/// Issue 11: a FIFO in the model's folder would block the reader; it is refused before `open`.
#[test]
fn safetensors_fifo_is_refused() {
    let dir = temp_dir("st-fifo");
    let made = std::process::Command::new("mkfifo").arg(dir.join("weights.safetensors")).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo is needed for this test");
    let errors = errors_in(&st_model("f32", &[2], "w").to_string(), Some(&dir));
    assert_reported(&errors, &["$.safetensors", "a FIFO (named pipe), not a regular file"]);
}

/// Header and data sizes are checked against the file before anything is read.
#[test]
fn safetensors_sizes_are_checked_against_the_file() {
    let dir = temp_dir("st-sizes");
    let path = dir.join("weights.safetensors");
    // A header length of 2^62.
    std::fs::write(&path, [&(1u64 << 62).to_le_bytes()[..], b"{}"].concat()).unwrap();
    assert_reported(&errors_in(&st_model("f32", &[2], "w").to_string(), Some(&dir)), &["header length"]);
    // A header that promises 8 bytes of data the file does not have.
    let header = json!({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).to_string();
    std::fs::write(&path, [&(header.len() as u64).to_le_bytes()[..], header.as_bytes(), &[0u8; 4]].concat()).unwrap();
    assert_reported(&errors_in(&st_model("f32", &[2], "w").to_string(), Some(&dir)), &["weight 'w'", "too few"]);
    // Offsets that do not span the declared type.
    let header = json!({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}).to_string();
    std::fs::write(&path, [&(header.len() as u64).to_le_bytes()[..], header.as_bytes(), &[0u8; 4]].concat()).unwrap();
    assert_reported(&errors_in(&st_model("f32", &[2], "w").to_string(), Some(&dir)), &["spans bytes 0..4"]);
}

/// Issue 11: a seeded `init` weight of 8 GiB aborted the process ("memory allocation of … failed").
/// Weights are claimed against the memory cap before they are generated.
#[test]
fn weights_are_checked_against_the_memory_cap() {
    let mut m = mlp();
    m["weights"][0] = json!({"name": "w", "shape": [3, 4], "init": {"zeros": {}}});
    m["weights"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "huge", "shape": [2048, 1024, 1024], "init": {"normal": {}}}));
    let errors = errors(&m);
    assert_reported(
        &errors,
        &["$.weights[2].init", "weight 'huge' (f32[2048,1024,1024]) needs 8.0 GiB", "memory cap of 4.0 GiB"],
    );

    // The cap is the sum of all weights, inline ones included; a smaller one can be given.
    let limits = kiln_frontends::ReadLimits { memory_cap: 48 + 11 };
    let text = mlp().to_string();
    let result = kiln_frontends::json::parse_json_with(&text, None, "test", &limits);
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("weight 'b' (f32[3]) needs 12 B") && message.contains("48 B of weights"), "{message}");
    let limits = kiln_frontends::ReadLimits { memory_cap: 48 + 12 };
    assert!(kiln_frontends::json::parse_json_with(&text, None, "test", &limits).is_ok());
}
