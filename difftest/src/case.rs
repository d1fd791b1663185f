//! One generated test case: a graph (inputs, weights, nodes, outputs) with the data of its inputs
//! and weights. It builds into a `kiln_ir::Model` through `GraphBuilder` (so the graph is exactly
//! as valid as a model file's would be) and writes itself as kiln JSON plus `.npy` inputs, so that
//! `kiln run` reproduces it.

use kiln_ir::{Attr, Error, GraphBuilder, Model, Op, Tensor, TensorData, Weights};
use serde_json::{Map, Value, json};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Case {
    /// The seed the case was generated from (kept through shrinking, for the report).
    pub seed: u64,
    pub inputs: Vec<(String, Tensor)>,
    pub weights: Vec<(String, Tensor)>,
    pub nodes: Vec<NodeSpec>,
    pub outputs: Vec<String>,
}

impl Case {
    /// Builds the model. An error here, for a case the generator made, is a generator bug or a
    /// builder bug: the generator checks every node with `Op::infer` as it goes.
    pub fn model(&self) -> Result<Model, Error> {
        let mut b = GraphBuilder::new(format!("difftest_{}", self.seed));
        for (name, t) in &self.inputs {
            b.input(format!("input '{name}'"), name.clone(), t.ty());
        }
        let mut weights = Weights::new();
        for (name, t) in &self.weights {
            b.weight(format!("weight '{name}'"), name.clone(), t.ty());
            weights.insert(name.clone(), t.clone());
        }
        for n in &self.nodes {
            b.node(format!("node '{}'", n.name), n.name.clone(), Ok(n.op.clone()), n.inputs.clone(), n.outputs.clone());
        }
        for o in &self.outputs {
            b.output(format!("output '{o}'"), o.clone());
        }
        Ok(Model { graph: b.finish()?, weights })
    }

    /// The same case with every tensor a node makes listed as an output (declared outputs first).
    pub fn with_every_output(&self) -> Case {
        let mut all = self.clone();
        let listed: std::collections::HashSet<String> = all.outputs.iter().cloned().collect();
        for n in &self.nodes {
            for o in &n.outputs {
                if !listed.contains(o) {
                    all.outputs.push(o.clone());
                }
            }
        }
        all
    }

    /// Whether any input or weight holds a finite value of magnitude ≥ 1e18. Such values make
    /// f32 overflow depend on evaluation order and precision (the interpreter accumulates in f64,
    /// the JIT in f32; the optimizer reassociates), so finiteness is not compared for them.
    pub fn has_huge_values(&self) -> bool {
        self.inputs.iter().chain(&self.weights).any(|(_, t)| match t.data() {
            TensorData::F32(v) => v.iter().any(|x| x.is_finite() && x.abs() >= crate::check::HUGE),
            _ => false,
        })
    }

    /// The case as a kiln JSON model (docs/model-format.md), weights inline.
    pub fn to_json(&self) -> Value {
        let inputs: Vec<Value> = self
            .inputs
            .iter()
            .map(|(name, t)| json!({"name": name, "dtype": t.dtype().name(), "shape": t.shape()}))
            .collect();
        let weights: Vec<Value> = self
            .weights
            .iter()
            .map(|(name, t)| json!({"name": name, "dtype": t.dtype().name(), "shape": t.shape(), "data": data_json(t)}))
            .collect();
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                let (op, attrs) = n.op.to_parts();
                let mut node = json!({"name": n.name, "op": op, "inputs": n.inputs, "outputs": n.outputs});
                if !attrs.is_empty() {
                    let attrs: Map<String, Value> = attrs.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect();
                    node["attributes"] = Value::Object(attrs);
                }
                node
            })
            .collect();
        json!({
            "format": "kiln",
            "version": 1,
            "name": format!("difftest_{}", self.seed),
            "inputs": inputs,
            "outputs": self.outputs,
            "weights": weights,
            "nodes": nodes,
        })
    }

    /// Writes `model.json`, one `NAME.npy` per input and `repro.sh` (the `kiln run` commands that
    /// reproduce the case on each backend) into `dir`.
    pub fn write_to(&self, dir: &Path, note: &str) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let text = serde_json::to_string_pretty(&self.to_json()).map_err(|e| e.to_string())?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
        };
        write("model.json", &text)?;
        let mut args = String::new();
        for (i, (name, t)) in self.inputs.iter().enumerate() {
            let file = format!("input{i}.npy");
            kiln::npy::write_npy(&dir.join(&file), t)?;
            args.push_str(&format!(" --input '{name}'={file}"));
        }
        let script = format!(
            "#!/bin/sh\n# {note}\n# seed {seed}; run from this folder. Compare the outputs of these runs.\n\
             cd \"$(dirname \"$0\")\"\n\
             kiln run model.json{args} --backend interp -O0 --output-dir out_interp\n\
             kiln run model.json{args} -O0 --threads 1 --output-dir out_jit_O0_t1\n\
             kiln run model.json{args} -O0 --threads 2 --output-dir out_jit_O0_t2\n\
             kiln run model.json{args} -O2 --threads 1 --output-dir out_jit_O2_t1\n\
             kiln run model.json{args} -O2 --threads 2 --output-dir out_jit_O2_t2\n",
            seed = self.seed,
            note = note.replace('\n', "\n# "),
        );
        write("repro.sh", &script)?;
        Ok(())
    }

    /// How many nodes and elements the case has, for shrinking's progress measure.
    pub fn size(&self) -> (usize, usize) {
        let elems = self.inputs.iter().chain(&self.weights).map(|(_, t)| t.len()).sum();
        (self.nodes.len(), elems)
    }
}

fn f32_json(x: f32) -> Value {
    if x.is_nan() {
        json!("nan")
    } else if x.is_infinite() {
        json!(if x > 0.0 { "inf" } else { "-inf" })
    } else {
        // f32 → f64 is exact and serde_json prints the f64 so that it parses back to the same f64,
        // hence the same f32.
        json!(f64::from(x))
    }
}

fn data_json(t: &Tensor) -> Value {
    match t.data() {
        TensorData::F32(v) => Value::Array(v.iter().map(|&x| f32_json(x)).collect()),
        TensorData::I64(v) => json!(v),
        TensorData::Bool(v) => json!(v),
    }
}

fn attr_json(a: &Attr) -> Value {
    match a {
        Attr::Int(v) => json!(v),
        Attr::Float(v) => f32_json(*v),
        Attr::Str(s) => json!(s),
        Attr::Ints(v) => json!(v),
        Attr::Floats(v) => Value::Array(v.iter().map(|&x| f32_json(x)).collect()),
        // No op's `to_parts` produces a tensor attribute; `Constant` nodes become weights.
        Attr::Tensor(t) => json!({"dtype": t.dtype().name(), "shape": t.shape(), "data": data_json(t)}),
    }
}

#[cfg(test)]
mod tests {
    use crate::generator::{GenConfig, generate};

    fn bits(t: &kiln_ir::Tensor) -> Vec<u64> {
        match t.data() {
            kiln_ir::TensorData::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
            kiln_ir::TensorData::I64(v) => v.iter().map(|&x| x as u64).collect(),
            kiln_ir::TensorData::Bool(v) => v.iter().map(|&x| x as u64).collect(),
        }
    }

    /// The reproducer is only as good as its file: what the JSON reader loads back must be the
    /// same graph with bit-identical weights (NaN, ±∞, −0 and subnormals included).
    #[test]
    fn json_files_load_back_as_the_same_model() {
        let config = GenConfig { special_percent: 100, ..GenConfig::default() };
        for seed in 0..200 {
            let case = generate(seed, &config).case;
            let model = case.model().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            let text = serde_json::to_string(&case.to_json()).expect("JSON");
            let back =
                kiln::frontends::json::parse_json(&text, None, "x").unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert_eq!(back.graph, model.graph, "seed {seed}");
            for (name, t) in model.weights.iter() {
                let b = back.weights.get(name).unwrap_or_else(|| panic!("seed {seed}: weight {name} lost"));
                assert_eq!(bits(b), bits(t), "seed {seed}: weight {name}");
            }
        }
    }

    #[test]
    fn a_seed_gives_one_case() {
        for seed in [0, 1, 99, u64::MAX] {
            let a = generate(seed, &GenConfig::default()).case;
            let b = generate(seed, &GenConfig::default()).case;
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "seed {seed}");
        }
        let a = generate(1, &GenConfig::default()).case;
        let b = generate(2, &GenConfig::default()).case;
        assert_ne!(format!("{a:?}"), format!("{b:?}"));
    }
}
