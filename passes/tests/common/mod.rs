//! Small models for optimizer tests, built with `GraphBuilder`, deterministic pseudo-random data, and
//! the optimised-vs-unoptimised comparison on the reference interpreter.

#![allow(dead_code)]

use kiln_ir::{GraphBuilder, Model, Tensor, TensorType, Weights};
use kiln_passes::{IrOp, OptimizeConfig, OptimizeReport, optimize};

pub struct Build {
    builder: GraphBuilder,
    weights: Weights,
    inputs: Vec<(String, TensorType)>,
    seed: u64,
}

impl Build {
    pub fn new(name: &str) -> Build {
        Build { builder: GraphBuilder::new(name), weights: Weights::new(), inputs: vec![], seed: 0x9E37_79B9_7F4A_7C15 }
    }

    /// Uniform in [lo, hi), from a fixed linear congruential generator.
    pub fn random(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = (self.seed >> 40) as f32 / (1u64 << 24) as f32;
                lo + (hi - lo) * u
            })
            .collect()
    }

    pub fn input(&mut self, name: &str, shape: &[usize]) -> &mut Build {
        let ty = TensorType::f32(shape.to_vec());
        self.builder.input(name, name, ty.clone());
        self.inputs.push((name.to_string(), ty));
        self
    }

    pub fn input_i64(&mut self, name: &str, shape: &[usize]) -> &mut Build {
        let ty = TensorType::new(kiln_ir::DType::I64, shape.to_vec());
        self.builder.input(name, name, ty.clone());
        self.inputs.push((name.to_string(), ty));
        self
    }

    pub fn weight_data(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> &mut Build {
        let t = Tensor::from_f32(shape.to_vec(), data).expect("weight data fits its shape");
        self.builder.weight(name, name, t.ty());
        self.weights.insert(name, t);
        self
    }

    pub fn weight(&mut self, name: &str, shape: &[usize], lo: f32, hi: f32) -> &mut Build {
        let n = shape.iter().product();
        let data = self.random(n, lo, hi);
        self.weight_data(name, shape, data)
    }

    /// A node `op` (in the e-graph text form, e.g. `Conv<pads=[1,1,1,1]>`) named after its output.
    pub fn node(&mut self, out: &str, op: &str, inputs: &[&str]) -> &mut Build {
        let op = op.parse::<IrOp>().map(|o| o.op.clone()).map_err(|e| format!("{op}: {e}"));
        self.builder.node(out, out, op, inputs.iter().map(|s| s.to_string()).collect(), vec![out.to_string()]);
        self
    }

    pub fn output(&mut self, name: &str) -> &mut Build {
        self.builder.output(name, name);
        self
    }

    /// The model and one deterministic random value for each input (ints in [0, vocab)).
    pub fn finish(mut self, vocab: i64) -> (Model, Vec<(String, Tensor)>) {
        let inputs = self.inputs.clone();
        let feeds = inputs
            .into_iter()
            .map(|(name, ty)| {
                let n = ty.num_elements();
                let t = match ty.dtype {
                    kiln_ir::DType::I64 => {
                        let v = self.random(n, 0.0, vocab as f32).into_iter().map(|x| x as i64).collect();
                        Tensor::from_i64(ty.shape.clone(), v).unwrap()
                    }
                    _ => Tensor::from_f32(ty.shape.clone(), self.random(n, -2.0, 2.0)).unwrap(),
                };
                (name, t)
            })
            .collect();
        let graph = self.builder.finish().unwrap_or_else(|e| panic!("test model is invalid:\n{e}"));
        (Model { graph, weights: self.weights }, feeds)
    }
}

/// Optimises and checks every output against the unoptimised model: |a − b| ≤ atol + rtol·|b|.
pub fn optimize_and_compare(
    model: &Model,
    feeds: &[(String, Tensor)],
    rtol: f32,
    atol: f32,
) -> (Model, OptimizeReport) {
    let before_weights = model.weights.clone();
    let (opt, report) = optimize(model, &OptimizeConfig::default()).unwrap_or_else(|e| panic!("optimize: {e}"));
    assert_eq!(model.weights, before_weights, "the original weights must not change");
    assert!(report.cost_after <= report.cost_before, "estimated slower than the input: {report:?}");
    let want = kiln_ir::eval::run(&model.graph, &model.weights, feeds).expect("original runs");
    let got = kiln_ir::eval::run(&opt.graph, &opt.weights, feeds).unwrap_or_else(|e| panic!("optimised runs: {e}"));
    assert_eq!(want.len(), got.len());
    for ((wn, wt), (gn, gt)) in want.iter().zip(&got) {
        assert_eq!(wn, gn, "output names are preserved");
        assert_eq!(wt.ty(), gt.ty(), "output {wn}");
        let (w, g) = (wt.as_f32().unwrap(), gt.as_f32().unwrap());
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!((a - b).abs() <= atol + rtol * b.abs(), "output {wn}[{i}]: optimised {a} vs original {b}");
        }
    }
    (opt, report)
}

pub fn count(model: &Model, op: &str) -> usize {
    model.graph.op_counts().get(op).copied().unwrap_or(0)
}
