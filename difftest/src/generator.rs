//! The generator: random *valid* graphs over every op of the IR.
//!
//! It keeps a pool of the tensors made so far and, step by step, picks an op, picks operands from
//! the pool (preferring the newest, which makes chains: elementwise ops after MatMul, Gemm, Conv and
//! the norms, which the JIT fuses into epilogues) or makes new inputs and weights of fitting shapes,
//! and picks attributes that suit the shapes. Every node is checked with `Op::infer` before it is
//! kept; a node the generator meant to be valid but `infer` refuses is counted
//! ([`Generated::rejected`]) so that the generator's own mistakes stay visible.
//!
//! Shapes favour vector tails (sizes 1..9 and 4k+1..4k+3) and, in some cases, sizes large enough
//! for the executor to split a step over two threads (≥ 2^15 elements, GEMMs of ≥ 2^20 flops).
//! Values are mostly uniform in [−3, 3); in "special" cases some are NaN, ±∞, ±0, subnormal, tiny
//! or huge.

#[path = "gen_elementwise.rs"]
mod gen_elementwise;

use crate::case::{Case, NodeSpec};

// Issue 12's reductions, index and along-axis ops (a child module: it extends `Gen`).
#[path = "gen_data.rs"]
mod gen_data;
use crate::rng::{Draw, Source, SplitMix};
use kiln_ir::{
    BinaryOp, CoordTransform, DType, NearestMode, Op, PadMode, ReduceKind, Tensor, TensorData, TensorType, UnaryOp,
};

#[path = "gen_spatial.rs"]
mod gen_spatial;

/// Knobs of the generator.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Most op-generating steps (a pattern step adds several nodes).
    pub max_steps: usize,
    /// Percent of cases whose shapes are large enough for two-thread splits.
    pub big_percent: u32,
    /// Percent of cases that have NaN/∞/huge/tiny values in inputs and weights.
    pub special_percent: u32,
    /// Whether to make chains of constant arithmetic such as (x·2)/2 that once sent the optimizer
    /// into a runaway (issue 11). Off only to run on a tree that still has that defect.
    pub const_chains: bool,
    /// Generate none of the defects listed in issue 11 that are still open (1-D MatMul operands,
    /// Pad shifts, ReduceL2 with `noop_with_empty_axes`, Resize `align_corners`, constant chains,
    /// division by a subnormal constant, Pow of special values, a row division feeding a MatMul),
    /// so that a run on a tree with those defects finds the others.
    pub avoid_known_defects: bool,
}

impl Default for GenConfig {
    fn default() -> GenConfig {
        GenConfig { max_steps: 8, big_percent: 8, special_percent: 25, const_chains: true, avoid_known_defects: false }
    }
}

/// A generated case and what the generator learned while making it.
pub struct Generated {
    pub case: Case,
    /// Nodes the generator built but `Op::infer` refused, with the reason (generator bugs).
    pub rejected: Vec<String>,
}

#[derive(Clone)]
struct Val {
    name: String,
    ty: TensorType,
    /// Computed without rounding from inputs and weights (movement, Neg, Abs, Max, …): safe to
    /// compare for equality or cast to integers, which rounding differences would flip.
    exact: bool,
}

/// Generates the case of one seed.
pub fn generate(seed: u64, config: &GenConfig) -> Generated {
    Gen::new(SplitMix(seed), SplitMix(seed ^ 0x5EED_DA7A), seed, config).run()
}

/// Generates a case whose structure comes from `choices` (a fuzzer's bytes) and whose values come
/// from a stream seeded by `value_seed`.
pub fn generate_from(choices: &mut dyn Source, value_seed: u64, config: &GenConfig) -> Generated {
    Gen::new(choices, SplitMix(value_seed), value_seed, config).run()
}

impl Source for &mut dyn Source {
    fn next_u64(&mut self) -> u64 {
        (**self).next_u64()
    }
}

const SMALL_DIMS: &[usize] = &[1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5, 6, 7, 13, 17, 1, 2, 3];

const SPECIALS: &[f32] = &[
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    1e-39,
    -1e-39,
    1e-30,
    -1e-30,
    1e20,
    -1e20,
    3e38,
    1.0,
    -1.0,
];

struct Gen<'c, C: Source> {
    c: Draw<C>,
    v: Draw<SplitMix>,
    config: &'c GenConfig,
    case: Case,
    pool: Vec<Val>,
    next_id: usize,
    special: bool,
    big: bool,
    rejected: Vec<String>,
}

impl<'c, C: Source> Gen<'c, C> {
    fn new(choices: C, values: SplitMix, seed: u64, config: &'c GenConfig) -> Self {
        Gen {
            c: Draw(choices),
            v: Draw(values),
            config,
            case: Case { seed, ..Case::default() },
            pool: Vec::new(),
            next_id: 0,
            special: false,
            big: false,
            rejected: Vec::new(),
        }
    }

    fn run(mut self) -> Generated {
        self.special = self.c.chance(self.config.special_percent);
        self.big = self.c.chance(self.config.big_percent);
        let steps = self.c.range(1, self.config.max_steps.max(1));
        // One or two inputs to start from; more appear as ops need them.
        let s = self.shape(0, 4);
        self.new_input(DType::F32, s);
        for _ in 0..steps {
            let before = self.case.nodes.len();
            // A few tries: some picks find no suitable operand and make nothing.
            for _ in 0..4 {
                self.step();
                if self.case.nodes.len() > before {
                    break;
                }
            }
        }
        self.finish_outputs();
        Generated { case: self.case, rejected: self.rejected }
    }

    // ---- names, shapes and data ----

    fn fresh(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    fn dim(&mut self) -> usize {
        self.c.pick(SMALL_DIMS)
    }

    /// A shape of rank in [lo, hi]. Big cases get one large dimension (about 2^15 elements in all).
    fn shape(&mut self, lo: usize, hi: usize) -> Vec<usize> {
        let rank = self.c.range(lo, hi);
        let mut s: Vec<usize> = (0..rank).map(|_| self.dim()).collect();
        if self.big && rank > 0 && self.c.chance(60) {
            let others: usize = s.iter().product::<usize>() / s[rank - 1];
            // 4k+1..4k+3 tails and ≥ 2^15 elements.
            let want = (33_000 / others.max(1)).max(5);
            s[rank - 1] = want | 1;
        }
        s
    }

    /// A shape that broadcasts to `s` (numpy): a suffix of `s` with some dimensions set to 1, or
    /// sometimes `s` with extra leading dimensions (which makes the result larger).
    fn broadcast_of(&mut self, s: &[usize]) -> Vec<usize> {
        let out = self.broadcast_within(s);
        if self.c.chance(10) && s.len() < 4 {
            let mut out: Vec<usize> = s.iter().map(|&d| if self.c.chance(40) { 1 } else { d }).collect();
            out.insert(0, self.c.range(1, 3));
            return out;
        }
        out
    }

    /// A shape that broadcasts to `s` without enlarging it (for masks, biases and norm scales).
    fn broadcast_within(&mut self, s: &[usize]) -> Vec<usize> {
        let keep = self.c.below(s.len() + 1);
        s[s.len() - keep..].iter().map(|&d| if self.c.chance(35) { 1 } else { d }).collect()
    }

    fn value(&mut self) -> f32 {
        if self.special && self.v.chance(12) { self.v.pick(SPECIALS) } else { self.v.f32_in(-3.0, 3.0) }
    }

    fn f32_tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| self.value()).collect();
        Tensor::from_f32(shape.to_vec(), data).unwrap_or_else(|_| Tensor::zeros(&TensorType::f32(shape.to_vec())))
    }

    fn f32_tensor_in(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| self.v.f32_in(lo, hi)).collect();
        Tensor::from_f32(shape.to_vec(), data).unwrap_or_else(|_| Tensor::zeros(&TensorType::f32(shape.to_vec())))
    }

    fn tensor(&mut self, dtype: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let data = match dtype {
            DType::F32 => return self.f32_tensor(shape),
            DType::I64 => TensorData::I64(
                (0..n)
                    .map(|_| {
                        if self.special && self.v.chance(5) {
                            self.v.pick(&[i64::MAX, i64::MIN, 1 << 40, -(1 << 40)])
                        } else {
                            self.v.below(11) as i64 - 5
                        }
                    })
                    .collect(),
            ),
            DType::Bool => TensorData::Bool((0..n).map(|_| self.v.chance(50)).collect()),
        };
        Tensor::new(shape.to_vec(), data).unwrap_or_else(|_| Tensor::zeros(&TensorType::new(dtype, shape.to_vec())))
    }

    fn new_input(&mut self, dtype: DType, shape: Vec<usize>) -> Val {
        let t = self.tensor(dtype, &shape);
        self.add_input(t)
    }

    fn add_input(&mut self, t: Tensor) -> Val {
        let name = self.fresh("x");
        let val = Val { name: name.clone(), ty: t.ty(), exact: true };
        self.case.inputs.push((name, t));
        self.pool.push(val.clone());
        val
    }

    /// A weight; not added to the pool (weights feed the op they were made for).
    fn add_weight(&mut self, t: Tensor) -> Val {
        let name = self.fresh("w");
        let val = Val { name: name.clone(), ty: t.ty(), exact: true };
        self.case.weights.push((name, t));
        val
    }

    /// A new f32 operand of this shape: an input or a weight.
    fn new_operand(&mut self, shape: Vec<usize>) -> Val {
        if self.c.chance(55) {
            let t = self.f32_tensor(&shape);
            self.add_weight(t)
        } else {
            self.new_input(DType::F32, shape)
        }
    }

    // ---- operand picking ----

    /// An operand from the pool satisfying `ok`: the newest with probability 1/2 (chains), else
    /// any; `None` if the pool has none.
    fn pick_where(&mut self, ok: impl Fn(&Val) -> bool) -> Option<Val> {
        let candidates: Vec<&Val> = self.pool.iter().filter(|v| ok(v)).collect();
        if candidates.is_empty() {
            return None;
        }
        if self.c.chance(50) {
            return candidates.last().map(|v| (*v).clone());
        }
        let i = self.c.below(candidates.len());
        Some(candidates[i].clone())
    }

    fn pick_f32(&mut self, ok: impl Fn(&TensorType) -> bool) -> Option<Val> {
        self.pick_where(|v| v.ty.dtype == DType::F32 && ok(&v.ty))
    }

    /// An f32 operand from the pool, or (sometimes, or if none fits) a new input of a generated
    /// shape that fits.
    fn pick_or_new_f32(&mut self, lo_rank: usize, hi_rank: usize) -> Val {
        let from_pool = if self.c.chance(85) {
            self.pick_f32(|t| (lo_rank..=hi_rank).contains(&t.rank()) && t.num_elements() <= 200_000)
        } else {
            None
        };
        match from_pool {
            Some(v) => v,
            None => {
                let s = self.shape(lo_rank, hi_rank);
                self.new_input(DType::F32, s)
            }
        }
    }

    // ---- node emission ----

    /// Adds a node if `infer` accepts it; returns its output values.
    fn emit(&mut self, op: Op, inputs: &[&Val], exact: bool) -> Option<Vec<Val>> {
        let types: Vec<&TensorType> = inputs.iter().map(|v| &v.ty).collect();
        match op.infer(&types) {
            Ok(out_types) => {
                let name = self.fresh("n");
                let outs: Vec<Val> = out_types.into_iter().map(|ty| Val { name: self.fresh("t"), ty, exact }).collect();
                // Keep intermediate tensors small enough for the interpreter.
                if outs.iter().any(|v| v.ty.num_elements() > 400_000) {
                    return None;
                }
                self.case.nodes.push(NodeSpec {
                    name,
                    op,
                    inputs: inputs.iter().map(|v| v.name.clone()).collect(),
                    outputs: outs.iter().map(|v| v.name.clone()).collect(),
                });
                self.pool.extend(outs.iter().cloned());
                Some(outs)
            }
            Err(e) => {
                let shapes: Vec<String> = types.iter().map(|t| t.to_string()).collect();
                self.rejected.push(format!("{} on {}: {e}", op.name(), shapes.join(", ")));
                None
            }
        }
    }

    fn emit1(&mut self, op: Op, inputs: &[&Val], exact: bool) -> Option<Val> {
        self.emit(op, inputs, exact).and_then(|mut v| if v.is_empty() { None } else { Some(v.remove(0)) })
    }

    fn step(&mut self) {
        let _ = match self.c.below(118) {
            0..=13 => self.unary(),
            14..=29 => self.binary(),
            30..=33 => self.compare_where(),
            34..=36 => self.cast(),
            37..=39 => self.int_arith(),
            40..=47 => self.matmul(),
            48..=50 => self.gemm(),
            51..=54 => self.conv(),
            55..=57 => self.pad(),
            58..=59 => self.spatial(),
            60..=67 => self.norm(),
            68..=70 => self.softmax(),
            71..=74 => self.reduce(),
            75..=86 => self.movement(),
            87..=89 => self.fused(),
            90..=95 => self.pattern(),
            100..=105 => self.data_op(),
            106..=117 => self.elementwise_issue12(),
            _ => self.identity(),
        };
    }

    fn unary(&mut self) -> Option<Val> {
        let x = self.pick_or_new_f32(0, 4);
        let op = match self.c.below(15) {
            0 => UnaryOp::Sqrt,
            1 => UnaryOp::Reciprocal,
            2 => UnaryOp::Neg,
            3 => UnaryOp::Abs,
            4 => UnaryOp::Exp,
            5 => UnaryOp::Log,
            6 => UnaryOp::Tanh,
            7 => UnaryOp::Erf,
            8 => UnaryOp::Sigmoid,
            9 => UnaryOp::Relu,
            10 => UnaryOp::Silu,
            11 => UnaryOp::LeakyRelu { alpha: self.c.pick(&[0.01, 0.2, -0.5, 1.5]) },
            12 => {
                if self.c.chance(50) {
                    UnaryOp::Selu { alpha: 1.673_263_2, gamma: 1.050_701 }
                } else {
                    UnaryOp::Selu { alpha: 0.5, gamma: 2.0 }
                }
            }
            13 => UnaryOp::Gelu { tanh: self.c.chance(50) },
            _ => {
                let lo = self.c.pick(&[None, Some(-1.0f32), Some(0.0), Some(0.5)]);
                let hi = self.c.pick(&[None, Some(1.0f32), Some(6.0), Some(-2.0)]);
                UnaryOp::Clip { min: lo, max: hi }
            }
        };
        // 1/x and log x turn a last-bit difference in a cancelling x (a sum, a dot product, a
        // difference of transcendentals) into an arbitrarily large one: computed in f32 by the JIT
        // and in f64 by the interpreter, such x legitimately differ. √x of a computed x near 0 is
        // NaN or 0 by the sign of its rounding (Gelu(−7.3) is −1e-12 in f64, −0 in the JIT). Only
        // exact operands.
        let x = if matches!(op, UnaryOp::Reciprocal | UnaryOp::Log | UnaryOp::Sqrt) && !x.exact {
            self.exact_f32_operand(&x.ty.shape.clone())
        } else {
            x
        };
        let exact = x.exact && matches!(op, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Clip { .. });
        self.emit1(Op::Unary(op), &[&x], exact)
    }

    /// An exact f32 operand (see `Val::exact`) of this shape: from the pool, or a new one.
    fn exact_f32_operand(&mut self, shape: &[usize]) -> Val {
        let s = shape.to_vec();
        match self.pick_where(|v| v.exact && v.ty.dtype == DType::F32 && v.ty.shape == s) {
            Some(v) => v,
            None => self.new_operand(s),
        }
    }

    /// A second operand that broadcasts with `x`: from the pool if one fits, else new.
    fn partner(&mut self, x: &Val) -> Val {
        if self.c.chance(30) {
            let s = x.ty.shape.clone();
            if let Some(v) = self.pick_f32(|t| kiln_ir::ops::broadcast::broadcast_shapes(&s, &t.shape).is_ok()) {
                return v;
            }
        }
        let s = self.broadcast_of(&x.ty.shape);
        self.new_operand(s)
    }

    fn binary(&mut self) -> Option<Val> {
        let x = self.pick_or_new_f32(0, 4);
        let op = self.c.pick(&[
            BinaryOp::Add,
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Pow,
            BinaryOp::Max,
            BinaryOp::Min,
        ]);
        if self.config.avoid_known_defects && op == BinaryOp::Pow && self.special {
            return None;
        }
        let y = if self.c.chance(25) {
            // A scalar or one-element constant: what algebraic rewrites look for.
            let c = self.c.pick(&[2.0f32, 0.5, -1.0, 0.0, 1.0, 3.0, 1e-39, 1e30, 1e-30, -0.5]);
            let c = if self.config.avoid_known_defects && c == 1e-39 { 1e-30 } else { c };
            let shape = if self.c.chance(50) { vec![] } else { vec![1] };
            self.add_weight(Tensor::from_f32(shape, vec![c]).unwrap_or_else(|_| Tensor::scalar_f32(c)))
        } else if op == BinaryOp::Pow && self.c.chance(60) {
            let s = self.broadcast_of(&x.ty.shape);
            let n: usize = s.iter().product();
            let exps: Vec<f32> = (0..n).map(|_| self.v.pick(&[0.0, 1.0, 2.0, 3.0, 0.5, -1.0, -2.0, 1.5])).collect();
            let t = Tensor::from_f32(s.clone(), exps).unwrap_or_else(|_| Tensor::zeros(&TensorType::f32(s)));
            self.add_weight(t)
        } else {
            self.partner(&x)
        };
        let (a, b) = if self.c.chance(30) { (&y, &x) } else { (&x, &y) };
        // As for 1/x: a divisor, and both operands of Pow (x^y = exp(y·log x)), must be exact; so
        // must a dividend, since the divisor may hold 0 and x/0 is ±∞ or NaN by x's sign and
        // zeroness, which a last-bit difference flips (soak seed 10064056: Gelu's tail, -7e-23 in
        // the interpreter and 0 in the JIT, divided by 0).
        let (a, b) = match op {
            BinaryOp::Div if !(a.exact && b.exact) => {
                let a = if a.exact { a.clone() } else { self.exact_f32_operand(&a.ty.shape.clone()) };
                let b = if b.exact { b.clone() } else { self.exact_f32_operand(&b.ty.shape.clone()) };
                (a, b)
            }
            BinaryOp::Pow if !(a.exact && b.exact) => {
                let a = if a.exact { a.clone() } else { self.exact_f32_operand(&a.ty.shape.clone()) };
                let b = if b.exact { b.clone() } else { self.exact_f32_operand(&b.ty.shape.clone()) };
                (a, b)
            }
            _ => (a.clone(), b.clone()),
        };
        let exact = a.exact && b.exact && matches!(op, BinaryOp::Max | BinaryOp::Min);
        self.emit1(Op::Binary(op), &[&a, &b], exact)
    }

    fn bool_operand(&mut self, shape: &[usize]) -> Val {
        let s = shape.to_vec();
        let fits = |t: &TensorType| kiln_ir::ops::broadcast::broadcast_shapes(&s, &t.shape).is_ok();
        if let Some(v) = self.pick_where(|v| v.ty.dtype == DType::Bool && fits(&v.ty)) {
            return v;
        }
        let s = self.broadcast_of(shape);
        self.new_input(DType::Bool, s)
    }

    fn compare_where(&mut self) -> Option<Val> {
        if self.c.chance(50) {
            // Comparisons only of exact values: a rounding difference would flip the bool.
            let x = self.pick_where(|v| v.exact && v.ty.dtype != DType::Bool)?;
            let y = if self.c.chance(50) {
                let t = self.tensor(x.ty.dtype, &[]);
                self.add_weight(t)
            } else {
                let s = self.broadcast_of(&x.ty.shape);
                let t = self.tensor(x.ty.dtype, &s);
                self.add_weight(t)
            };
            let op = if self.c.chance(50) { BinaryOp::Less } else { BinaryOp::Equal };
            let (a, b) = if self.c.chance(50) { (&x, &y) } else { (&y, &x) };
            self.emit1(Op::Binary(op), &[a, b], true)
        } else {
            let x = self.pick_or_new_f32(0, 4);
            let cond = self.bool_operand(&x.ty.shape);
            let y = self.partner(&x);
            self.emit1(Op::Where, &[&cond, &x, &y], x.exact && y.exact)
        }
    }

    fn cast(&mut self) -> Option<Val> {
        let x = self.pick_where(|v| v.exact || v.ty.dtype != DType::F32)?;
        let to = self.c.pick(&[DType::F32, DType::I64, DType::Bool]);
        self.emit1(Op::Cast { to }, &[&x], true)
    }

    fn int_operand(&mut self) -> Val {
        if let Some(v) = self.pick_where(|v| v.ty.dtype == DType::I64) {
            return v;
        }
        let s = self.shape(0, 3);
        self.new_input(DType::I64, s)
    }

    fn int_arith(&mut self) -> Option<Val> {
        let x = self.int_operand();
        let op = self.c.pick(&[
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Pow,
            BinaryOp::Max,
            BinaryOp::Min,
        ]);
        let s = self.broadcast_of(&x.ty.shape);
        let n: usize = s.iter().product();
        let y = match op {
            // Division by zero and negative exponents are evaluation errors: the divisor and
            // the exponent are weights that avoid them.
            BinaryOp::Div => {
                let d: Vec<i64> = (0..n).map(|_| self.v.pick(&[1, 2, 3, -1, -2, 7])).collect();
                self.add_weight(Tensor::from_i64(s, d).ok()?)
            }
            BinaryOp::Pow => {
                let d: Vec<i64> = (0..n).map(|_| self.v.below(4) as i64).collect();
                self.add_weight(Tensor::from_i64(s, d).ok()?)
            }
            _ => {
                if self.c.chance(50) {
                    let t = self.tensor(DType::I64, &s);
                    self.add_weight(t)
                } else {
                    self.new_input(DType::I64, s)
                }
            }
        };
        self.emit1(Op::Binary(op), &[&x, &y], true)
    }

    fn matmul(&mut self) -> Option<Val> {
        let a = self.pick_or_new_f32(1, 4);
        let k = *a.ty.shape.last()?;
        // A dot product over tens of thousands of terms (a big case's long axis) accumulated in
        // f32 differs from the interpreter's f64 by more than any fixed tolerance of its result.
        if k > 1024 {
            return None;
        }
        let n = if self.big { self.c.pick(&[64, 67, 96, 129]) } else { self.dim() };
        let first = if self.config.avoid_known_defects { 1 } else { 0 };
        let b_shape = match first + self.c.below(6 - first) {
            // 1-D second operand: [.., k] @ [k] (the GEMM epilogue defect of issue 11).
            0 => vec![k],
            1 if a.ty.rank() >= 3 => {
                let mut s = a.ty.shape[..a.ty.rank() - 2].to_vec();
                s.push(k);
                s.push(n);
                s
            }
            2 => {
                // A batch that broadcasts against a's: 1, or a's own.
                let batch = if a.ty.rank() >= 3 && self.c.chance(50) { a.ty.shape[a.ty.rank() - 3] } else { 1 };
                vec![batch, k, n]
            }
            _ => vec![k, n],
        };
        let b = self.new_operand(b_shape);
        let (a, b) = if a.ty.rank() == 1 && self.c.chance(30) {
            // 1-D first operand: [k] @ [k, n].
            (a, b)
        } else {
            (a, b)
        };
        let y = self.emit1(Op::MatMul, &[&a, &b], false)?;
        self.maybe_epilogue(y)
    }

    /// After a GEMM, conv or norm: often a bias add and an activation, which the JIT fuses.
    fn maybe_epilogue(&mut self, y: Val) -> Option<Val> {
        let mut y = y;
        if self.c.chance(60) {
            let bias_shape = match (self.c.below(3), y.ty.shape.last()) {
                (0, Some(&n)) => vec![n],
                (1, _) => vec![],
                _ => self.broadcast_of(&y.ty.shape),
            };
            let b = if self.c.chance(20) {
                // A constant the optimizer may fold into the GEMM's weights (div-const).
                let c = self.c.pick(&[2.0f32, 0.5, 1e-39, 1e30, 1e-30, -3.0]);
                let c = if self.config.avoid_known_defects && c == 1e-39 { 1e-30 } else { c };
                self.add_weight(Tensor::scalar_f32(c))
            } else {
                self.new_operand(bias_shape)
            };
            let op = self.c.pick(&[BinaryOp::Add, BinaryOp::Add, BinaryOp::Mul, BinaryOp::Sub, BinaryOp::Div]);
            // A computed divisor would be ill-conditioned (see `unary`): the bias divides.
            let (l, r) = if self.c.chance(20) && op != BinaryOp::Div { (&b, &y) } else { (&y, &b) };
            y = self.emit1(Op::Binary(op), &[l, r], false)?;
        }
        if self.c.chance(50) {
            let act = self.c.pick(&[
                UnaryOp::Relu,
                UnaryOp::Gelu { tanh: false },
                UnaryOp::Sigmoid,
                UnaryOp::Tanh,
                UnaryOp::Silu,
                UnaryOp::Clip { min: Some(0.0), max: Some(6.0) },
            ]);
            y = self.emit1(Op::Unary(act), &[&y], false)?;
        }
        Some(y)
    }

    fn gemm(&mut self) -> Option<Val> {
        let (m, k, n) = if self.big { (64, 97, 129) } else { (self.dim(), self.dim(), self.dim()) };
        let trans_a = self.c.chance(30);
        let trans_b = self.c.chance(50);
        let a_shape = if trans_a { vec![k, m] } else { vec![m, k] };
        let a = match self.pick_f32(|t| t.shape == a_shape) {
            Some(a) if self.c.chance(70) => a,
            _ => self.new_input(DType::F32, a_shape),
        };
        let b = self.new_operand(if trans_b { vec![n, k] } else { vec![k, n] });
        let alpha = self.c.pick(&[1.0, 1.0, 0.5, -2.0]);
        let beta = self.c.pick(&[1.0, 1.0, 0.0, 3.0]);
        let op = Op::Gemm { alpha, beta, trans_a, trans_b };
        let y = if self.c.chance(60) {
            let cs = self.c.pick(&[vec![n], vec![m, n], vec![1, n], vec![m, 1], vec![]]);
            let c = self.new_operand(cs);
            self.emit1(op, &[&a, &b, &c], false)?
        } else {
            self.emit1(op, &[&a, &b], false)?
        };
        self.maybe_epilogue(y)
    }

    fn nchw(&mut self) -> Val {
        if self.c.chance(70)
            && let Some(v) = self.pick_f32(|t| t.rank() == 4 && t.num_elements() <= 60_000)
        {
            return v;
        }
        // 12 and 17 channels: a depthwise conv over them runs two or three channel blocks of 8
        // (the last one short) on narrow planes.
        let (n, c) = (self.c.range(1, 2), self.c.pick(&[1, 2, 3, 4, 6, 8, 12, 17]));
        let (h, w) = if self.big { (self.c.pick(&[64, 67]), 129) } else { (self.c.range(1, 9), self.c.range(1, 9)) };
        self.new_input(DType::F32, vec![n, c, h, w])
    }

    fn conv(&mut self) -> Option<Val> {
        let x = self.nchw();
        let c = x.ty.shape[1];
        let divisors: Vec<usize> = (1..=c).filter(|g| c.is_multiple_of(*g)).collect();
        let group = if self.c.chance(40) { self.c.pick(&divisors) } else { 1 };
        // Sometimes 16–33 output channels per group: the packed conv's row tiles with ragged
        // edges, and its channel-tiled path for planes of ≤ 64 pixels (which needs ≥ 16 per group).
        let m = group * if self.c.chance(15) { self.c.pick(&[16, 20, 33]) } else { self.c.range(1, 3) };
        // Depthwise convs (one input channel per group) run as a direct window kernel: larger
        // kernels there reach its wider tap offsets and several output vectors per row.
        let kmax = if group == c { 5 } else { 3 };
        let kh = self.c.range(1, kmax.min(x.ty.shape[2]));
        let kw = self.c.range(1, kmax.min(x.ty.shape[3]));
        let strides = [self.c.range(1, 2), self.c.range(1, 2)];
        let pads = if self.c.chance(50) {
            [self.c.below(2), self.c.below(2), self.c.below(2), self.c.below(2)]
        } else {
            [0; 4]
        };
        // Dilation 2 only where the dilated kernel fits the padded input.
        let fits = 2 * (kh - 1) < x.ty.shape[2] + pads[0] + pads[2] && 2 * (kw - 1) < x.ty.shape[3] + pads[1] + pads[3];
        let dilations = if fits && self.c.chance(20) { [2, 2] } else { [1, 1] };
        let w = self.new_operand(vec![m, c / group, kh, kw]);
        let op = Op::Conv { strides, dilations, pads, group };
        let y = if self.c.chance(50) {
            let b = self.new_operand(vec![m]);
            self.emit1(op, &[&x, &w, &b], false)?
        } else {
            self.emit1(op, &[&x, &w], false)?
        };
        if self.c.chance(30) {
            let bn = self.bn_params(m);
            let eps = self.c.pick(&[1e-5, 1e-3]);
            let y2 =
                self.emit1(Op::BatchNormalization { epsilon: eps }, &[&y, &bn[0], &bn[1], &bn[2], &bn[3]], false)?;
            return self.maybe_epilogue(y2);
        }
        self.maybe_epilogue(y)
    }

    fn bn_params(&mut self, c: usize) -> Vec<Val> {
        let scale = self.new_operand(vec![c]);
        let bias = self.new_operand(vec![c]);
        let mean = self.new_operand(vec![c]);
        let var = if self.special && self.c.chance(30) {
            self.new_operand(vec![c])
        } else {
            let t = self.f32_tensor_in(&[c], 0.1, 4.0);
            self.add_weight(t)
        };
        vec![scale, bias, mean, var]
    }

    fn pad(&mut self) -> Option<Val> {
        let x = self.pick_or_new_f32(1, 4);
        let r = x.ty.rank();
        let mode = self.c.pick(&[PadMode::Constant, PadMode::Constant, PadMode::Reflect, PadMode::Edge]);
        let mut pads = vec![0i64; 2 * r];
        for a in 0..r {
            let d = x.ty.shape[a] as i64;
            let first = if self.config.avoid_known_defects { 3 } else { 0 };
            match first + self.c.below(5 - first) {
                0 => {}
                // A shift: +1 at one end, −1 at the other (same shape; not a no-op).
                // Reflect needs the pad smaller than the cropped size.
                1 if d >= 2 + i64::from(mode == PadMode::Reflect) => {
                    pads[a] = 1;
                    pads[a + r] = -1;
                }
                2 if d >= 2 + i64::from(mode == PadMode::Reflect) => {
                    pads[a] = -1;
                    pads[a + r] = 1;
                }
                _ => {
                    let most = if mode == PadMode::Reflect { (d - 1).min(2) } else { 2 };
                    pads[a] = self.c.below(most as usize + 1) as i64;
                    pads[a + r] = self.c.below(most as usize + 1) as i64;
                }
            }
        }
        let value = self.c.pick(&[0.0, 1.5, -2.0]);
        self.emit1(Op::Pad { mode, pads, value }, &[&x], x.exact)
    }

    fn resize(&mut self) -> Option<Val> {
        let x = self.pick_or_new_f32(1, 4);
        let r = x.ty.rank();
        let ctm = self.c.pick(&[
            CoordTransform::HalfPixel,
            CoordTransform::Asymmetric,
            CoordTransform::AlignCorners,
            CoordTransform::PytorchHalfPixel,
        ]);
        let nearest_mode = self.c.pick(&[
            NearestMode::RoundPreferFloor,
            NearestMode::RoundPreferCeil,
            NearestMode::Floor,
            NearestMode::Ceil,
        ]);
        let (scales, sizes) = if self.c.chance(50) {
            let scales: Vec<f32> = (0..r)
                .map(|a| match (a + 2 >= r, x.ty.shape[a]) {
                    // A downscale of a size-1 axis would make it empty.
                    (true, 1) => self.c.pick(&[1.0, 2.0, 1.5, 3.0]),
                    (true, _) => self.c.pick(&[1.0, 2.0, 0.5, 1.5, 3.0, 0.75]),
                    _ => 1.0,
                })
                .collect();
            (Some(scales), None)
        } else {
            let sizes: Vec<usize> =
                (0..r).map(|a| if a + 2 >= r { self.c.range(1, 11) } else { x.ty.shape[a] }).collect();
            (None, Some(sizes))
        };
        let ctm = if self.config.avoid_known_defects && ctm == CoordTransform::AlignCorners {
            CoordTransform::Asymmetric
        } else {
            ctm
        };
        let op = Op::Resize { scales, sizes, coordinate_transformation_mode: ctm, nearest_mode };
        self.emit1(op, &[&x], x.exact)
    }

    fn norm(&mut self) -> Option<Val> {
        let eps = self.c.pick(&[1e-5f32, 1e-3, 1e-6]);
        let y = match self.c.below(10) {
            0 => {
                let x = self.pick_or_new_f32(2, 4);
                let p = self.bn_params(x.ty.shape[1]);
                self.emit1(Op::BatchNormalization { epsilon: eps }, &[&x, &p[0], &p[1], &p[2], &p[3]], false)?
            }
            1..=3 => {
                let x = self.pick_or_new_f32(1, 4);
                let r = x.ty.rank() as i64;
                let axis = self.c.range(0, r as usize - 1) as i64 - if self.c.chance(50) { r } else { 0 };
                let a = if axis < 0 { (axis + r) as usize } else { axis as usize };
                let normalized = x.ty.shape[a..].to_vec();
                let ss = self.broadcast_within(&normalized);
                let scale = self.new_operand(ss);
                if self.c.chance(25) {
                    if self.c.chance(30) {
                        // CRMSNorm over the last axis of x (its d − 1 stored components).
                        let d = x.ty.shape.last().copied().unwrap_or(0) + 1;
                        self.emit1(Op::CrmsNormalization { epsilon: eps, d }, &[&x], false)?
                    } else {
                        self.emit1(Op::RmsNormalization { axis, epsilon: eps }, &[&x, &scale], false)?
                    }
                } else if self.c.chance(70) {
                    let bs = self.broadcast_within(&normalized);
                    let bias = self.new_operand(bs);
                    self.emit1(Op::LayerNormalization { axis, epsilon: eps }, &[&x, &scale, &bias], false)?
                } else {
                    self.emit1(Op::LayerNormalization { axis, epsilon: eps }, &[&x, &scale], false)?
                }
            }
            4 => {
                let x = self.pick_or_new_f32(3, 4);
                let c = x.ty.shape[1];
                let divisors: Vec<usize> = (1..=c).filter(|g| c.is_multiple_of(*g)).collect();
                let num_groups = self.c.pick(&divisors);
                let (s, b) = (self.new_operand(vec![c]), self.new_operand(vec![c]));
                self.emit1(Op::GroupNormalization { num_groups, epsilon: eps }, &[&x, &s, &b], false)?
            }
            5 => {
                let x = self.pick_or_new_f32(3, 4);
                let c = x.ty.shape[1];
                let (s, b) = (self.new_operand(vec![c]), self.new_operand(vec![c]));
                self.emit1(Op::InstanceNormalization { epsilon: eps }, &[&x, &s, &b], false)?
            }
            6 => {
                let x = self.pick_or_new_f32(1, 4);
                let r = x.ty.rank();
                let a = self.c.below(r);
                let c = x.ty.shape[a];
                let axis = if self.c.chance(50) { a as i64 } else { a as i64 - r as i64 };
                let (s, b) = (self.new_operand(vec![c]), self.new_operand(vec![c]));
                let var = self.f32_tensor_in(&[c], 0.1, 4.0);
                let var = self.add_weight(var);
                self.emit1(Op::UnifiedNorm { axis, epsilon: eps }, &[&x, &s, &b, &var], false)?
            }
            7 => {
                let x = self.pick_or_new_f32(1, 4);
                let d = *x.ty.shape.last()?;
                let divisors: Vec<usize> = (1..=d).filter(|g| d.is_multiple_of(*g)).collect();
                let groups = self.c.pick(&divisors);
                let (s, b) = (self.new_operand(vec![d]), self.new_operand(vec![d]));
                let phi = self.f32_tensor_in(&[d], 0.1, 4.0);
                let phi = self.add_weight(phi);
                let op = Op::PowerNorm { groups, epsilon: eps, group_epsilon: self.c.pick(&[1e-5, 1e-3]) };
                self.emit1(op, &[&x, &s, &b, &phi], false)?
            }
            8 => {
                let x = self.nchw();
                let c = x.ty.shape[1];
                let divisors: Vec<usize> = (1..=c).filter(|g| c.is_multiple_of(*g)).collect();
                let (v, g, b) = (self.new_operand(vec![c]), self.new_operand(vec![c]), self.new_operand(vec![c]));
                if self.c.chance(50) {
                    let groups = self.c.pick(&divisors);
                    self.emit1(Op::EvoNormS0 { groups, epsilon: eps }, &[&x, &v, &g, &b], false)?
                } else {
                    let var = self.f32_tensor_in(&[c], 0.1, 4.0);
                    let var = self.add_weight(var);
                    self.emit1(Op::EvoNormB0 { epsilon: eps }, &[&x, &v, &g, &b, &var], false)?
                }
            }
            _ => {
                let x = self.nchw();
                let s = &x.ty.shape;
                let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
                let mask: Vec<f32> = (0..n * h * w).map(|_| if self.v.chance(50) { 1.0 } else { 0.0 }).collect();
                let mask = Tensor::from_f32(vec![n, 1, h, w], mask).ok()?;
                let mask = if self.c.chance(50) { self.add_input(mask) } else { self.add_weight(mask) };
                let params: Vec<Val> = (0..4).map(|_| self.new_operand(vec![c])).collect();
                self.emit1(
                    Op::RegionNorm { epsilon: eps },
                    &[&x, &mask, &params[0], &params[1], &params[2], &params[3]],
                    false,
                )?
            }
        };
        self.maybe_epilogue(y)
    }

    fn softmax(&mut self) -> Option<Val> {
        let x = self.pick_or_new_f32(1, 4);
        let r = x.ty.rank() as i64;
        let axis = self.c.range(0, r as usize - 1) as i64 - if self.c.chance(60) { r } else { 0 };
        let op = if self.c.chance(70) { Op::Softmax { axis } } else { Op::LogSoftmax { axis } };
        self.emit1(op, &[&x], false)
    }

    fn reduce(&mut self) -> Option<Val> {
        let x = self.pick_or_new_f32(1, 4);
        let r = x.ty.rank();
        let kind = self.c.pick(&[ReduceKind::Mean, ReduceKind::Sum, ReduceKind::Max, ReduceKind::L2]);
        let axes = match self.c.below(4) {
            0 => None,
            1 => Some(vec![]),
            _ => {
                let mut axes: Vec<i64> = (0..r as i64).filter(|_| self.c.chance(50)).collect();
                if axes.is_empty() {
                    axes.push(r as i64 - 1);
                }
                if self.c.chance(30) {
                    axes = axes.iter().map(|a| a - r as i64).collect();
                }
                Some(axes)
            }
        };
        let noop = self.c.chance(30) && !(self.config.avoid_known_defects && kind == ReduceKind::L2);
        let op = Op::Reduce { kind, axes, keepdims: self.c.chance(50), noop_with_empty_axes: noop };
        self.emit1(op, &[&x], x.exact && kind == ReduceKind::Max)
    }

    fn any_operand(&mut self) -> Val {
        match self.pick_where(|v| v.ty.num_elements() <= 200_000) {
            Some(v) if self.c.chance(85) => v,
            _ => {
                let s = self.shape(1, 4);
                self.new_input(DType::F32, s)
            }
        }
    }

    fn movement(&mut self) -> Option<Val> {
        let x = self.any_operand();
        let r = x.ty.rank();
        let exact = x.exact;
        match self.c.below(10) {
            0 => {
                // Reshape: regroup the dimensions, with 0 and −1 sometimes.
                let total = x.ty.num_elements();
                let mut target: Vec<i64> = Vec::new();
                let mut left = total;
                while left > 1 && target.len() < 3 {
                    let divs: Vec<usize> = (2..=left).filter(|d| left.is_multiple_of(*d)).take(4).collect();
                    let d = self.c.pick(&divs);
                    target.push(d as i64);
                    left /= d;
                }
                if left > 1 || target.is_empty() {
                    target.push(left as i64);
                }
                if self.c.chance(40) {
                    let i = self.c.below(target.len());
                    target[i] = -1;
                }
                if self.c.chance(20) && r > 0 && target.len() == r && target[0] == x.ty.shape[0] as i64 {
                    target[0] = 0;
                }
                self.emit1(Op::Reshape { shape: target, allowzero: false }, &[&x], exact)
            }
            1 => {
                let mut perm: Vec<usize> = (0..r).collect();
                for i in (1..r).rev() {
                    let j = self.c.below(i + 1);
                    perm.swap(i, j);
                }
                let perm = if self.c.chance(20) { None } else { Some(perm) };
                self.emit1(Op::Transpose { perm }, &[&x], exact)
            }
            2 if r > 0 => {
                // Often the first axis past the leading unit ones: the inputs are then contiguous
                // blocks of the output, which the JIT's producers write in place.
                let lead = x.ty.shape.iter().take_while(|&&d| d == 1).count().min(r - 1);
                let a = if self.c.chance(40) { lead } else { self.c.below(r) };
                let mut others = vec![x.clone()];
                for _ in 0..self.c.range(1, 2) {
                    // A computed value of a fitting shape (any producer kind), when there is one.
                    let fits = |v: &Val| {
                        v.ty.dtype == x.ty.dtype
                            && v.ty.rank() == r
                            && (0..r).all(|j| j == a || v.ty.shape[j] == x.ty.shape[j])
                    };
                    if self.c.chance(40)
                        && let Some(v) = self.pick_where(fits)
                    {
                        others.push(v);
                        continue;
                    }
                    let mut s = x.ty.shape.clone();
                    s[a] = self.c.range(1, 5);
                    let t = self.tensor(x.ty.dtype, &s);
                    let v = if self.c.chance(50) { self.add_weight(t) } else { self.add_input(t) };
                    others.push(v);
                }
                if self.c.chance(30) {
                    others.push(x.clone());
                }
                let n = others.len();
                others.swap(0, self.c.below(n));
                let axis = if self.c.chance(50) { a as i64 } else { a as i64 - r as i64 };
                let refs: Vec<&Val> = others.iter().collect();
                self.emit1(Op::Concat { axis }, &refs, exact)
            }
            3 if r > 0 => {
                // Often the first axis past the leading unit ones: the outputs are then contiguous
                // blocks of the input, which the JIT makes views of it.
                let lead = x.ty.shape.iter().take_while(|&&d| d == 1).count().min(r - 1);
                let a = if self.c.chance(40) { lead } else { self.c.below(r) };
                let d = x.ty.shape[a];
                let op = if self.c.chance(50) && d >= 2 {
                    let first = self.c.range(1, d - 1);
                    Op::Split { axis: a as i64, split: Some(vec![first, d - first]), num_outputs: 2 }
                } else {
                    let n = self.c.range(1, d.min(3));
                    Op::Split { axis: a as i64, split: None, num_outputs: n }
                };
                let outs = self.emit(op, &[&x], exact)?;
                outs.into_iter().last()
            }
            4 if r > 0 && self.c.chance(30) => {
                // A block along the first axis past the leading unit ones (a view in the JIT).
                let a = x.ty.shape.iter().take_while(|&&d| d == 1).count().min(r - 1);
                let d = x.ty.shape[a];
                let start = self.c.below(d);
                let end = start + 1 + self.c.below(d - start);
                self.emit1(
                    Op::Slice {
                        starts: vec![start as i64],
                        ends: vec![end as i64],
                        axes: Some(vec![a as i64]),
                        steps: None,
                    },
                    &[&x],
                    exact,
                )
            }
            4 if r > 0 => {
                let n = self.c.range(1, r);
                let mut starts = Vec::new();
                let mut ends = Vec::new();
                let mut axes = Vec::new();
                let mut steps = Vec::new();
                for a in 0..r {
                    if axes.len() == n || !self.c.chance(60) {
                        continue;
                    }
                    let d = x.ty.shape[a] as i64;
                    let step = self.c.pick(&[1i64, 1, 2, -1, 3, -2]);
                    let (s, e) = if step > 0 {
                        let s = self.c.below(d as usize) as i64;
                        let mid = s + 1 + self.c.below((d - s) as usize) as i64;
                        let e = self.c.pick(&[d, i64::MAX, mid]);
                        (s, e)
                    } else {
                        let s = self.c.below(d as usize) as i64;
                        // An end of −1 would count from the back; below 0 means "through index 0".
                        let mid = (s - 1 - self.c.below(s as usize + 1) as i64).max(-1 - d);
                        let mid = if mid == -1 { -1 - d } else { mid };
                        let e = self.c.pick(&[-1 - d, i64::MIN, mid]);
                        (s, e)
                    };
                    let (s, e) = if self.c.chance(25) && s > 0 { (s - d, e) } else { (s, e) };
                    starts.push(s);
                    ends.push(e);
                    axes.push(a as i64);
                    steps.push(step);
                }
                if axes.is_empty() {
                    return None;
                }
                let steps = if steps.iter().all(|&s| s == 1) && self.c.chance(50) { None } else { Some(steps) };
                self.emit1(Op::Slice { starts, ends, axes: Some(axes), steps }, &[&x], exact)
            }
            5 if r > 0 => {
                let a = self.c.below(r);
                let d = x.ty.shape[a] as i64;
                let is = self.c.pick(&[vec![], vec![3], vec![2, 2], vec![1]]);
                let n: usize = is.iter().product();
                let idx: Vec<i64> = (0..n).map(|_| self.v.below(2 * d as usize) as i64 - d).collect();
                let idx = self.add_weight(Tensor::from_i64(is, idx).ok()?);
                let axis = if self.c.chance(50) { a as i64 } else { a as i64 - r as i64 };
                self.emit1(Op::Gather { axis }, &[&x, &idx], exact)
            }
            6 => {
                let axes = if self.c.chance(70) { vec![self.c.range(0, r) as i64] } else { vec![0, r as i64 + 1] };
                self.emit1(Op::Unsqueeze { axes }, &[&x], exact)
            }
            7 => {
                let ones: Vec<i64> = (0..r).filter(|&a| x.ty.shape[a] == 1).map(|a| a as i64).collect();
                let axes = if ones.is_empty() || self.c.chance(30) { None } else { Some(vec![self.c.pick(&ones)]) };
                if ones.is_empty() {
                    return None;
                }
                self.emit1(Op::Squeeze { axes }, &[&x], exact)
            }
            8 => {
                let mut shape: Vec<i64> =
                    x.ty.shape.iter().map(|&d| if d == 1 { self.c.range(1, 4) as i64 } else { d as i64 }).collect();
                if self.c.chance(30) {
                    shape.insert(0, self.c.range(1, 3) as i64);
                }
                if self.c.chance(20) && !shape.is_empty() {
                    // Expand's target may have 1 where x has d (numpy: keeps d).
                    shape[0] = 1;
                }
                self.emit1(Op::Expand { shape }, &[&x], exact)
            }
            _ => {
                let axis = self.c.range(0, r) as i64 - if self.c.chance(30) && r > 0 { r as i64 } else { 0 };
                self.emit1(Op::Flatten { axis }, &[&x], exact)
            }
        }
    }

    fn identity(&mut self) -> Option<Val> {
        let x = self.any_operand();
        self.emit1(Op::Identity, &[&x], x.exact)
    }

    fn fused(&mut self) -> Option<Val> {
        if self.c.chance(50) {
            let x = self.pick_or_new_f32(1, 4);
            let ms = self.broadcast_within(&x.ty.shape);
            let n: usize = ms.iter().product();
            let m: Vec<f32> = (0..n).map(|_| self.v.pick(&[0.0, 1.0, 1.0, 0.5])).collect();
            let mask = self.add_weight(Tensor::from_f32(ms, m).ok()?);
            self.emit1(Op::MaskedSoftmax, &[&x, &mask], false)
        } else {
            let batch = self.c.pick(&[vec![], vec![2], vec![1, 3], vec![2, 1]]);
            let (lq, lk, d, dv) = (self.dim(), self.dim(), self.dim(), self.dim());
            let mk = |b: &[usize], x: usize, y: usize| [b, &[x, y]].concat();
            let q = self.new_operand(mk(&batch, lq, d));
            let kb = if batch.is_empty() || self.c.chance(70) { batch.clone() } else { vec![1; batch.len()] };
            let kt = self.new_operand(mk(&kb, d, lk));
            let v = self.new_operand(mk(&kb, lk, dv));
            let scale = self.c.pick(&[1.0, 0.125, 0.5]);
            // torch's exported attention zeroes NaN probabilities (fully masked rows).
            let nan_to_zero = self.c.chance(40);
            if self.c.chance(50) {
                let bs = self.broadcast_within(&mk(&batch, lq, lk));
                let bias = self.new_operand(bs);
                self.emit1(Op::Attention { scale, nan_to_zero }, &[&q, &kt, &v, &bias], false)
            } else {
                self.emit1(Op::Attention { scale, nan_to_zero }, &[&q, &kt, &v], false)
            }
        }
    }

    /// Multi-node patterns the optimizer looks for.
    fn pattern(&mut self) -> Option<Val> {
        match self.c.below(5) {
            0 => {
                // Softmax as written: exp(x) / Σ exp(x) (optionally max-subtracted).
                let x = self.pick_or_new_f32(1, 4);
                let x = if self.c.chance(40) {
                    let m = self.emit1(
                        Op::Reduce {
                            kind: ReduceKind::Max,
                            axes: Some(vec![-1]),
                            keepdims: true,
                            noop_with_empty_axes: false,
                        },
                        &[&x],
                        false,
                    )?;
                    self.emit1(Op::Binary(BinaryOp::Sub), &[&x, &m], false)?
                } else {
                    x
                };
                let e = self.emit1(Op::Unary(UnaryOp::Exp), &[&x], false)?;
                let s = self.emit1(
                    Op::Reduce {
                        kind: ReduceKind::Sum,
                        axes: Some(vec![-1]),
                        keepdims: true,
                        noop_with_empty_axes: false,
                    },
                    &[&e],
                    false,
                )?;
                self.emit1(Op::Binary(BinaryOp::Div), &[&e, &s], false)
            }
            1 => {
                // Attention as written: softmax(Q·Kt·scale + bias)·V.
                let batch = self.c.pick(&[vec![], vec![2], vec![2, 3]]);
                let (lq, lk, d, dv) = (self.dim(), self.dim(), self.dim(), self.dim());
                let mk = |b: &[usize], x: usize, y: usize| [b, &[x, y]].concat();
                let q = self.new_input(DType::F32, mk(&batch, lq, d));
                let kt = self.new_operand(mk(&batch, d, lk));
                let v = self.new_operand(mk(&batch, lk, dv));
                let s = self.emit1(Op::MatMul, &[&q, &kt], false)?;
                let cv = self.c.pick(&[0.125, 0.5, 2.0]);
                let c = self.add_weight(Tensor::scalar_f32(cv));
                let op = if self.c.chance(50) { BinaryOp::Mul } else { BinaryOp::Div };
                let s = self.emit1(Op::Binary(op), &[&s, &c], false)?;
                let s = if self.c.chance(50) {
                    let bs = self.broadcast_within(&s.ty.shape);
                    let b = self.new_operand(bs);
                    self.emit1(Op::Binary(BinaryOp::Add), &[&s, &b], false)?
                } else {
                    s
                };
                let p = self.emit1(Op::Softmax { axis: -1 }, &[&s], false)?;
                self.emit1(Op::MatMul, &[&p, &v], false)
            }
            2 if self.config.const_chains && !self.config.avoid_known_defects => {
                // Constant chains: (x·c)/c, (x+c)+(−c), (x·c)·(1/c).
                let x = self.pick_or_new_f32(0, 4);
                let c = self.c.pick(&[2.0f32, 0.5, 1e30, 3.0, -1.5]);
                let (op1, op2, c2) = match self.c.below(3) {
                    0 => (BinaryOp::Mul, BinaryOp::Div, c),
                    1 => (BinaryOp::Add, BinaryOp::Add, -c),
                    _ => (BinaryOp::Mul, BinaryOp::Mul, 1.0 / c),
                };
                let w1 = self.add_weight(Tensor::scalar_f32(c));
                let w2 = self.add_weight(Tensor::scalar_f32(c2));
                let y = self.emit1(Op::Binary(op1), &[&x, &w1], false)?;
                self.emit1(Op::Binary(op2), &[&y, &w2], false)
            }
            3 if !self.config.avoid_known_defects => {
                // Row-wise division by a reduction, then a MatMul (row-div-into-matmul). The
                // values are positive so that the sum does not cancel (see `unary`).
                let s = self.shape(2, 3);
                let x = self.f32_tensor_in(&s, 0.5, 3.0);
                let x = self.add_input(x);
                let k = *x.ty.shape.last()?;
                let s = self.emit1(
                    Op::Reduce {
                        kind: ReduceKind::Sum,
                        axes: Some(vec![-1]),
                        keepdims: true,
                        noop_with_empty_axes: false,
                    },
                    &[&x],
                    false,
                )?;
                let y = self.emit1(Op::Binary(BinaryOp::Div), &[&x, &s], false)?;
                let n = self.dim();
                let w = self.new_operand(vec![k, n]);
                self.emit1(Op::MatMul, &[&y, &w], false)
            }
            _ => {
                // LayerNorm as written: (x − mean)/√(var + ε)·γ + β.
                let x = self.pick_or_new_f32(1, 3);
                let d = *x.ty.shape.last()?;
                let mean_op = Op::Reduce {
                    kind: ReduceKind::Mean,
                    axes: Some(vec![-1]),
                    keepdims: true,
                    noop_with_empty_axes: false,
                };
                let m = self.emit1(mean_op.clone(), &[&x], false)?;
                let c = self.emit1(Op::Binary(BinaryOp::Sub), &[&x, &m], false)?;
                let sq = self.emit1(Op::Binary(BinaryOp::Mul), &[&c, &c], false)?;
                let var = self.emit1(mean_op, &[&sq], false)?;
                let eps = self.add_weight(Tensor::scalar_f32(1e-5));
                let ve = self.emit1(Op::Binary(BinaryOp::Add), &[&var, &eps], false)?;
                let sd = self.emit1(Op::Unary(UnaryOp::Sqrt), &[&ve], false)?;
                let n = self.emit1(Op::Binary(BinaryOp::Div), &[&c, &sd], false)?;
                let g = self.new_operand(vec![d]);
                let y = self.emit1(Op::Binary(BinaryOp::Mul), &[&n, &g], false)?;
                let b = self.new_operand(vec![d]);
                self.emit1(Op::Binary(BinaryOp::Add), &[&y, &b], false)
            }
        }
    }

    /// Outputs: every value nobody reads (so no node is dead), and sometimes a value that is also
    /// read (fan-out to an output).
    fn finish_outputs(&mut self) {
        let read: std::collections::HashSet<&str> =
            self.case.nodes.iter().flat_map(|n| n.inputs.iter().map(String::as_str)).collect();
        let mut outputs: Vec<String> = Vec::new();
        for n in &self.case.nodes {
            for o in &n.outputs {
                if !read.contains(o.as_str()) || self.c.chance(10) {
                    outputs.push(o.clone());
                }
            }
        }
        if outputs.is_empty() {
            // No node was made: one Identity so that the graph has an op.
            if let Some(x) = self.pool.first().cloned() {
                let _ = self.emit1(Op::Identity, &[&x], true);
                if let Some(n) = self.case.nodes.last() {
                    outputs.push(n.outputs[0].clone());
                }
            }
        }
        self.case.outputs = outputs;
        // Inputs nobody reads are legal but pointless; drop them (the first stays if alone).
        let used: std::collections::HashSet<String> =
            self.case.nodes.iter().flat_map(|n| n.inputs.iter().cloned()).collect();
        self.case.inputs.retain(|(name, _)| used.contains(name));
        self.case.weights.retain(|(name, _)| used.contains(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The generator covers the IR: every op name, every dtype, 1-D MatMul operands, Pad shifts,
    /// thread-split sizes and special values all appear within a few hundred seeds.
    #[test]
    fn covers_every_op_and_the_shapes_that_matter() {
        let config = GenConfig::default();
        let mut ops: BTreeSet<&str> = BTreeSet::new();
        let (mut matmul_1d, mut pad_shift, mut big, mut nan, mut i64s, mut bools) = (0, 0, 0, 0, 0, 0);
        for seed in 0..600 {
            let case = generate(seed, &config).case;
            let model = case.model().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            for n in &case.nodes {
                ops.insert(n.op.name());
                let ty = |name: &str| model.graph.find_value(name).map(|v| model.graph.value_type(v).clone());
                if n.op == Op::MatMul && ty(&n.inputs[1]).is_some_and(|t| t.rank() == 1) {
                    matmul_1d += 1;
                }
                if let Op::Pad { pads, .. } = &n.op
                    && pads.iter().any(|&p| p < 0)
                {
                    pad_shift += 1;
                }
                for o in &n.outputs {
                    match ty(o) {
                        Some(t) if t.num_elements() >= 1 << 15 => big += 1,
                        Some(t) if t.dtype == DType::I64 => i64s += 1,
                        Some(t) if t.dtype == DType::Bool => bools += 1,
                        _ => {}
                    }
                }
            }
            nan += case
                .inputs
                .iter()
                .chain(&case.weights)
                .any(|(_, t)| t.as_f32().is_some_and(|v| v.iter().any(|x| x.is_nan()))) as usize;
        }
        let missing: Vec<&&str> = kiln_ir::OP_NAMES.iter().filter(|n| !ops.contains(**n)).collect();
        assert!(missing.is_empty(), "ops never generated: {missing:?}");
        for (what, count) in [
            ("1-D MatMul", matmul_1d),
            ("Pad shift", pad_shift),
            ("≥ 2^15 elements", big),
            ("NaN", nan),
            ("i64", i64s),
            ("bool", bools),
        ] {
            assert!(count >= 5, "{what}: only {count} in 600 seeds");
        }
    }
}
