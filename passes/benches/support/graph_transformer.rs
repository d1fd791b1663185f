//! The depth-N graph transformer used to measure how the optimizer scales with depth: the zoo's
//! post-norm layer (dense masked attention exp(clamp(S))·M / Σ, BatchNorm after each residual, FFN)
//! repeated. Shared by the criterion bench and `examples/optimizer_scale.rs`.

use kiln_ir::init::{Init, generate};
use kiln_ir::{GraphBuilder, Model, Op, TensorType, Weights};

fn op(name: &str, attrs: &[(&str, kiln_ir::Attr)]) -> Result<Op, String> {
    Op::from_parts(name, &attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

/// Builds a graph with seeded weights, for the depth-scaling cases.
struct Builder {
    graph: GraphBuilder,
    weights: Weights,
    seed: u64,
}

impl Builder {
    fn weight(&mut self, name: String, shape: Vec<usize>, init: Init) -> String {
        let ty = TensorType::f32(shape);
        self.weights.insert(name.clone(), generate(&init, &ty).expect("weight"));
        self.graph.weight("bench", name.clone(), ty);
        name
    }

    fn normal(&mut self, name: String, shape: Vec<usize>, std: f64) -> String {
        self.seed += 1;
        self.weight(name, shape, Init::Normal { mean: 0.0, std, seed: self.seed })
    }

    fn uniform(&mut self, name: String, shape: Vec<usize>, low: f64, high: f64) -> String {
        self.seed += 1;
        self.weight(name, shape, Init::Uniform { low, high, seed: self.seed })
    }

    fn node(&mut self, name: String, op: Result<Op, String>, inputs: Vec<String>) -> String {
        self.graph.node("bench", name.clone(), op, inputs, vec![name.clone()]);
        name
    }

    /// x·W + b.
    fn linear(&mut self, name: String, x: String, fan_in: usize, fan_out: usize) -> String {
        let w = self.normal(format!("{name}.w"), vec![fan_in, fan_out], 1.0 / (fan_in as f64).sqrt());
        let bias = self.normal(format!("{name}.b"), vec![fan_out], 0.1);
        let mm = self.node(format!("{name}.mm"), Ok(Op::MatMul), vec![x, w]);
        self.node(name, op("Add", &[]), vec![mm, bias])
    }

    /// Inference BatchNormalization with non-trivial statistics.
    fn batch_norm(&mut self, name: String, x: String, d: usize) -> String {
        let g = self.uniform(format!("{name}.g"), vec![d], 0.5, 1.5);
        let beta = self.uniform(format!("{name}.beta"), vec![d], -0.1, 0.1);
        let mean = self.uniform(format!("{name}.mean"), vec![d], -0.2, 0.2);
        let var = self.uniform(format!("{name}.var"), vec![d], 0.5, 2.0);
        self.node(name, op("BatchNormalization", &[]), vec![x, g, beta, mean, var])
    }
}

/// The zoo's graph transformer layer (dense masked attention exp(clamp(S))·M / Σ, BatchNorm
/// post-residual, FFN), `depth` times, on N = 12 nodes with d = 64 and 8 heads.
pub fn graph_transformer(depth: usize) -> Model {
    use kiln_ir::Attr::{Float, Ints};
    let (n, d, heads) = (12usize, 64usize, 8usize);
    let dh = d / heads;
    let mut b = Builder {
        graph: GraphBuilder::new(format!("graph_transformer_depth{depth}")),
        weights: Weights::new(),
        seed: 0,
    };
    b.graph.input("bench", "h", TensorType::f32([n, d]));
    b.graph.input("bench", "adj", TensorType::f32([n, n]));
    let scale = b.weight("scale".into(), vec![], Init::Constant { value: 1.0 / (dh as f64).sqrt() });
    let mut h = "h".to_string();
    for l in 0..depth {
        let p = |s: &str| format!("l{l}.{s}");
        let heads_of = |b: &mut Builder, name: &str, perm: Vec<i64>| {
            let w = b.normal(p(&format!("W{name}")), vec![d, d], 0.1);
            let t = b.node(p(name), Ok(Op::MatMul), vec![h.clone(), w]);
            let shape = Ints(vec![n as i64, heads as i64, dh as i64]);
            let r = b.node(p(&format!("{name}_heads")), op("Reshape", &[("shape", shape)]), vec![t]);
            b.node(p(&format!("{name}_t")), op("Transpose", &[("perm", Ints(perm))]), vec![r])
        };
        let q = heads_of(&mut b, "Q", vec![1, 0, 2]);
        let k = heads_of(&mut b, "K", vec![1, 2, 0]);
        let v = heads_of(&mut b, "V", vec![1, 0, 2]);
        let qk = b.node(p("QK"), Ok(Op::MatMul), vec![q, k]);
        let s = b.node(p("S"), op("Mul", &[]), vec![qk, scale.clone()]);
        let c = b.node(p("clamp"), op("Clip", &[("min", Float(-5.0)), ("max", Float(5.0))]), vec![s]);
        let e = b.node(p("exp"), op("Exp", &[]), vec![c]);
        let pm = b.node(p("P"), op("Mul", &[]), vec![e, "adj".into()]);
        let z = b.node(p("z"), op("ReduceSum", &[("axes", Ints(vec![-1]))]), vec![pm.clone()]);
        let wv = b.node(p("wV"), Ok(Op::MatMul), vec![pm, v]);
        let att = b.node(p("att"), op("Div", &[]), vec![wv, z]);
        let att = b.node(p("att_t"), op("Transpose", &[("perm", Ints(vec![1, 0, 2]))]), vec![att]);
        let att = b.node(p("concat"), op("Reshape", &[("shape", Ints(vec![n as i64, d as i64]))]), vec![att]);
        let o = b.linear(p("O"), att, d, d);
        let r1 = b.node(p("res1"), op("Add", &[]), vec![h.clone(), o]);
        let n1 = b.batch_norm(p("bn1"), r1, d);
        let f = b.linear(p("ffn1"), n1.clone(), d, 2 * d);
        let f = b.node(p("relu"), op("Relu", &[]), vec![f]);
        let f = b.linear(p("ffn2"), f, 2 * d, d);
        let r2 = b.node(p("res2"), op("Add", &[]), vec![n1, f]);
        h = b.batch_norm(p("bn2"), r2, d);
    }
    b.graph.output("bench", h);
    Model { graph: b.graph.finish().expect("the bench graph is valid"), weights: b.weights }
}
