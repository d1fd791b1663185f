//! Shared helpers: build small graphs, run them on the interpreter and the JIT, compare.

#![allow(dead_code)]

use kiln_codegen::{CodegenOptions, Executable, SoftmaxAlgo, compile};
use kiln_ir::{DType, Graph, GraphBuilder, Op, Tensor, TensorData, TensorType, Weights};

/// A tiny deterministic generator (xorshift64*), so proptest only has to shrink a seed.
pub struct XRng(pub u64);

impl XRng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [lo, hi).
    pub fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_f32(shape.to_vec(), (0..n).map(|_| self.f32(lo, hi)).collect()).unwrap()
    }
}

/// Declarative graph: inputs, weights, nodes (name, op, inputs, outputs), outputs.
pub struct Spec {
    pub inputs: Vec<(String, Tensor)>,
    pub weights: Vec<(String, Tensor)>,
    pub nodes: Vec<(String, Op, Vec<String>, Vec<String>)>,
    pub outputs: Vec<String>,
}

impl Spec {
    pub fn new() -> Spec {
        Spec { inputs: vec![], weights: vec![], nodes: vec![], outputs: vec![] }
    }
    pub fn input(&mut self, name: &str, t: Tensor) -> &mut Self {
        self.inputs.push((name.into(), t));
        self
    }
    pub fn weight(&mut self, name: &str, t: Tensor) -> &mut Self {
        self.weights.push((name.into(), t));
        self
    }
    pub fn node(&mut self, name: &str, op: Op, ins: &[&str], outs: &[&str]) -> &mut Self {
        self.nodes.push((
            name.into(),
            op,
            ins.iter().map(|s| s.to_string()).collect(),
            outs.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }
    pub fn output(&mut self, name: &str) -> &mut Self {
        self.outputs.push(name.into());
        self
    }

    pub fn build(&self) -> (Graph, Weights) {
        let mut b = GraphBuilder::new("t");
        for (n, t) in &self.inputs {
            b.input(format!("input {n}"), n.clone(), t.ty());
        }
        let mut w = Weights::new();
        for (n, t) in &self.weights {
            b.weight(format!("weight {n}"), n.clone(), t.ty());
            w.insert(n.clone(), t.clone());
        }
        for (n, op, ins, outs) in &self.nodes {
            b.node(format!("node {n}"), n.clone(), Ok(op.clone()), ins.clone(), outs.clone());
        }
        for o in &self.outputs {
            b.output(format!("output {o}"), o.clone());
        }
        let g = b.finish().unwrap_or_else(|e| panic!("graph does not build: {e}"));
        (g, w)
    }
}

/// |jit − ref| ≤ abs + rel·|ref|; NaN only where the reference is NaN; bool and i64 exact.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub abs: f32,
    pub rel: f32,
}

/// Every ISA this CPU runs, the portable one first.
pub fn isas() -> Vec<kiln_codegen::Isa> {
    use kiln_codegen::Isa;
    let mut v = vec![Isa::Generic];
    for isa in [Isa::Avx2Fma, Isa::Avx512] {
        if Isa::supported(isa) == isa {
            v.push(isa);
        }
    }
    v
}

pub fn options(threads: usize) -> CodegenOptions {
    CodegenOptions { threads, softmax: SoftmaxAlgo::TwoPass, ..Default::default() }
}

pub fn compile_spec(spec: &Spec, opts: &CodegenOptions) -> Executable {
    let (g, w) = spec.build();
    compile(&g, &w, opts).unwrap_or_else(|e| panic!("compile failed: {e}"))
}

pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, tol: Tol) {
    assert_eq!(got.ty(), want.ty(), "{name}: type");
    match (got.data(), want.data()) {
        (TensorData::F32(g), TensorData::F32(w)) => {
            for (i, (&a, &b)) in g.iter().zip(w).enumerate() {
                if b.is_nan() {
                    assert!(a.is_nan(), "{name}[{i}]: got {a}, want NaN");
                } else if b.is_infinite() {
                    assert_eq!(a, b, "{name}[{i}]");
                } else {
                    let err = (a - b).abs();
                    assert!(
                        err <= tol.abs + tol.rel * b.abs(),
                        "{name}[{i}]: got {a:e}, want {b:e} (err {err:e}, tol {tol:?})"
                    );
                }
            }
        }
        (g, w) => assert_eq!(g, w, "{name}"),
    }
}

/// Runs both and compares every output.
pub fn check(spec: &Spec, tol: Tol) -> Executable {
    check_with(spec, tol, &options(2))
}

pub fn check_with(spec: &Spec, tol: Tol, opts: &CodegenOptions) -> Executable {
    let (g, w) = spec.build();
    let want = kiln_ir::eval::run(&g, &w, &spec.inputs).unwrap_or_else(|e| panic!("interpreter failed: {e}"));
    let exe = compile(&g, &w, opts).unwrap_or_else(|e| panic!("compile failed: {e}"));
    let ins = kiln_ir::eval::check_inputs(&g, &spec.inputs).unwrap();
    let got = exe.run(&ins).unwrap_or_else(|e| panic!("run failed: {e}"));
    assert_eq!(got.len(), want.len());
    for (g, (name, w)) in got.iter().zip(&want) {
        assert_close(name, g, w, tol);
    }
    exe
}

pub fn f32_ty(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape.to_vec())
}

/// Number of steps in the schedule.
pub fn steps(exe: &Executable) -> usize {
    exe.schedule_text().lines().count()
}
