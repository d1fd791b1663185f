//! The e-class analysis: what every rule condition may ask of an e-class.
//!
//! - `types`: the output types (IR ops by their own `Op::infer`, fold and meta terms by the rules
//!   below). Two nodes of one e-class must agree; a disagreement is a bug in a rule.
//! - `constant`: computable at compile time (weights and terms over them).
//! - `zero_mean`: provably zero-mean along the last axis for every index of the other axes
//!   (the Pre-RMSNorm condition). Proven only by construction: `center` terms, re-centred weights,
//!   and operations that preserve it (sums, products with a constant the same across the last axis,
//!   matrix products with a re-centred weight, row gathers of a re-centred table).
//!
//! "Is a per-channel affine" is decided from constant shapes by [`channel_axis`], not stored.

use crate::lang::{F32Bits, FoldOp, KOp, Kiln, MetaOp};
use egg::{Analysis, DidMerge, EGraph, Id, Symbol};
use kiln_ir::{BinaryOp, DType, Op, ReduceKind, TensorType};
use std::collections::{BTreeMap, HashMap};

/// What is known of a leaf.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafInfo {
    pub ty: TensorType,
    /// A weight (compile-time constant) rather than a graph input.
    pub is_weight: bool,
    /// Every element equals this value (a weight of ones, a zero bias).
    pub uniform: Option<f32>,
    /// A weight holding an infinity or a NaN.
    pub nonfinite: bool,
    /// A weight whose every element is finite and ≥ 0 (a square root folded at load, which a rule
    /// may square back: EvoNorm-B0's √(running_var + ε)).
    pub nonnegative: bool,
}

#[derive(Debug, Clone)]
pub struct KilnAnalysis {
    pub leaves: HashMap<Symbol, LeafInfo>,
    /// The e-class a rewrite is being applied at (set by [`crate::rules::KApplier`] around each
    /// application): every e-class created meanwhile records it as its [`Data::origin`].
    pub applying_at: Option<Id>,
    /// Rules stop applying once the e-graph holds more e-nodes than this (checked before every
    /// application by [`crate::rules::KApplier`]).
    pub node_budget: usize,
    /// The most e-nodes the e-graph held after any application (for the memory bound's tests).
    pub peak_size: usize,
    /// Per rule, how many unions were refused because the new term's types differed from the
    /// matched e-class's (a rule whose condition is too weak). Empty when every rule is sound.
    pub refused: BTreeMap<String, usize>,
    /// The first e-class seen of each uniform constant (type and value), which every later one
    /// joins (see [`KilnAnalysis::modify`]).
    pub uniform_constants: HashMap<(TensorType, F32Bits), Id>,
    /// Every rule application that created e-nodes, in order, when explanations are asked for
    /// (`None` otherwise): read by [`crate::explain`]. No rule reads it.
    pub applications: Option<Vec<crate::explain::Application>>,
}

impl Default for KilnAnalysis {
    fn default() -> KilnAnalysis {
        KilnAnalysis {
            leaves: HashMap::new(),
            applying_at: None,
            node_budget: usize::MAX,
            peak_size: 0,
            refused: BTreeMap::new(),
            uniform_constants: HashMap::new(),
            applications: None,
        }
    }
}

impl KilnAnalysis {
    /// Leaves from `name: type` pairs, weights first; for rule tests.
    pub fn with_leaves(weights: &[(&str, TensorType)], inputs: &[(&str, TensorType)]) -> KilnAnalysis {
        let mut leaves = HashMap::new();
        for (list, is_weight) in [(weights, true), (inputs, false)] {
            for (name, ty) in list {
                leaves.insert(
                    Symbol::from(*name),
                    LeafInfo { ty: ty.clone(), is_weight, uniform: None, nonfinite: false, nonnegative: false },
                );
            }
        }
        KilnAnalysis { leaves, ..KilnAnalysis::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Data {
    /// Output types; empty when unknown (an op whose inference failed).
    pub types: Vec<TensorType>,
    pub constant: bool,
    pub zero_mean: bool,
    /// Every element equals this value.
    pub uniform: Option<F32Bits>,
    /// For a constant: how deeply compile-time terms nest in its shallowest form (0 for a weight).
    /// Rules bound it, so that chains of folds cannot grow the e-graph without end.
    pub depth: u32,
    /// A constant that may hold an infinity or a NaN (a weight that does, or a term over one):
    /// most rules refuse to match it (see [`crate::rules::KApplier`]).
    pub nonfinite: bool,
    /// Provenance, for naming the nodes the optimizer creates: the e-class whose rewrite created
    /// this one (`None` for what the input graph already had). No rule reads it.
    pub origin: Option<Id>,
}

impl Data {
    /// The type of a single-output class.
    pub fn ty(&self) -> Option<&TensorType> {
        if self.types.len() == 1 { self.types.first() } else { None }
    }

    pub fn shape(&self) -> Option<&[usize]> {
        self.ty().map(|t| t.shape.as_slice())
    }
}

pub type KGraph = EGraph<Kiln, KilnAnalysis>;

fn f32_ty(shape: Vec<usize>) -> Vec<TensorType> {
    vec![TensorType::f32(shape)]
}

/// Output types of a fold or meta term from its inputs' types; empty if the inputs do not fit.
pub(crate) fn term_types(op: &KOp, args: &[Option<&TensorType>]) -> Vec<TensorType> {
    let all: Option<Vec<&TensorType>> = args.iter().copied().collect();
    let Some(t) = all else { return vec![] };
    if t.iter().any(|t| t.dtype != DType::F32) {
        return vec![];
    }
    let n = |t: &TensorType| t.num_elements();
    match op {
        KOp::Meta(MetaOp::Affine) => vec![t[0].clone()],
        KOp::Meta(MetaOp::Center) => vec![t[0].clone()],
        KOp::Fold(f) => match f {
            FoldOp::ScaleRows if t[0].rank() >= 1 && n(t[1]) == t[0].shape[0] => vec![t[0].clone()],
            FoldOp::ScaleCols if t[0].rank() >= 2 && n(t[1]) == t[0].shape[1] => vec![t[0].clone()],
            FoldOp::CenterLast if t[0].rank() >= 1 => vec![t[0].clone()],
            FoldOp::CenterRows if t[0].rank() >= 1 => vec![t[0].clone()],
            FoldOp::BnScale(_) if n(t[0]) == n(t[1]) => f32_ty(vec![n(t[0])]),
            FoldOp::BnShift(_) if t[1..].iter().all(|x| n(x) == n(t[0])) => f32_ty(vec![n(t[0])]),
            FoldOp::VecMat if t[1].rank() == 2 && n(t[0]) == t[1].shape[0] => f32_ty(vec![t[1].shape[1]]),
            FoldOp::MatVec if t[0].rank() == 2 && n(t[1]) == t[0].shape[1] => f32_ty(vec![t[0].shape[0]]),
            FoldOp::ConvSum if t[0].rank() == 4 && n(t[1]) == t[0].shape[1] => f32_ty(vec![t[0].shape[0]]),
            FoldOp::Fill(_) => vec![t[0].clone()],
            FoldOp::Flat => f32_ty(vec![n(t[0])]),
            FoldOp::Fma if n(t[0]) == n(t[1]) && n(t[1]) == n(t[2]) => f32_ty(vec![n(t[0])]),
            _ => vec![],
        },
        _ => vec![],
    }
}

/// The one axis (counted in `rank` dimensions, right-aligned like numpy) along which a broadcast
/// operand of shape `shape` varies: `Some(Some(k))`, or `Some(None)` when every dimension is 1
/// (a scalar: any axis). `None` when it varies along several axes or has more dimensions.
pub fn channel_axis(shape: &[usize], rank: usize) -> Option<Option<usize>> {
    if shape.len() > rank {
        return None;
    }
    let offset = rank - shape.len();
    let mut axis = None;
    for (i, &d) in shape.iter().enumerate() {
        if d != 1 {
            if axis.is_some() {
                return None;
            }
            axis = Some(i + offset);
        }
    }
    Some(axis)
}

fn zero_mean_of(egraph: &KGraph, op: &KOp, args: &[Id]) -> bool {
    let d = |i: usize| &egraph[args[i]].data;
    let last_dim = |i: usize| d(i).shape().and_then(|s| s.last().copied());
    match op {
        KOp::Meta(MetaOp::Center) | KOp::Fold(FoldOp::CenterLast) => true,
        KOp::Fold(FoldOp::Fill(v)) => v.get() == 0.0,
        KOp::Ir(ir) => match &ir.op {
            // Sums and differences of zero-mean tensors of the same last dimension.
            Op::Binary(BinaryOp::Add | BinaryOp::Sub) => {
                d(0).zero_mean && d(1).zero_mean && last_dim(0).is_some() && last_dim(0) == last_dim(1)
            }
            // x·s with s the same across the last axis (a per-row or scalar factor).
            Op::Binary(BinaryOp::Mul) => {
                let row_factor = |i: usize| d(i).shape().is_some_and(|s| s.last().is_none_or(|&l| l == 1));
                (d(0).zero_mean && row_factor(1)) || (d(1).zero_mean && row_factor(0))
            }
            Op::Unary(kiln_ir::UnaryOp::Neg) | Op::Identity => d(0).zero_mean,
            // A reshape that keeps the last dimension keeps every row whole.
            Op::Reshape { .. } => {
                let out = d(0).ty().and_then(|t| ir.op.infer(&[t]).ok());
                let out_last = out.and_then(|t| t.first().and_then(|t| t.shape.last().copied()));
                d(0).zero_mean && out_last.is_some() && out_last == last_dim(0)
            }
            // x·W with every row of W summing to zero: Σⱼ (xW)ᵢⱼ = Σₖ xᵢₖ Σⱼ Wₖⱼ = 0.
            Op::MatMul => d(1).constant && d(1).zero_mean && d(1).shape().is_some_and(|s| s.len() == 2),
            // Rows of a table whose rows are zero-mean.
            Op::Gather { axis } => {
                d(0).zero_mean && d(0).shape().is_some_and(|s| s.len() == 2) && (*axis == 0 || *axis == -2)
            }
            // Selecting or concatenating along axes other than the last keeps each row whole.
            Op::Concat { axis } => {
                let rank = d(0).shape().map_or(0, |s| s.len()) as i64;
                let last = *axis == -1 || *axis == rank - 1;
                !last && args.iter().all(|&a| egraph[a].data.zero_mean)
            }
            Op::Reduce { kind: ReduceKind::Mean | ReduceKind::Sum, axes: Some(axes), keepdims: true, .. } => {
                let rank = d(0).shape().map_or(0, |s| s.len()) as i64;
                d(0).zero_mean && !axes.iter().any(|&a| a == -1 || a == rank - 1)
            }
            _ => false,
        },
        _ => false,
    }
}

/// The value of an op whose inputs are uniform (scalars of a scale such as 1/√d, …).
fn uniform_of(op: &Op, mut args: impl Iterator<Item = Option<f32>>) -> Option<F32Bits> {
    let a = args.next()??;
    let v = match op {
        Op::Reshape { .. } | Op::Expand { .. } | Op::Identity | Op::Flatten { .. } => a,
        Op::Squeeze { .. } | Op::Unsqueeze { .. } => a,
        Op::Unary(kiln_ir::UnaryOp::Reciprocal) => 1.0 / a,
        Op::Unary(kiln_ir::UnaryOp::Sqrt) => a.sqrt(),
        Op::Unary(kiln_ir::UnaryOp::Neg) => -a,
        Op::Binary(b) => {
            let c = args.next()??;
            match b {
                BinaryOp::Add => a + c,
                BinaryOp::Sub => a - c,
                BinaryOp::Mul => a * c,
                BinaryOp::Div => a / c,
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(F32Bits::new(v))
}

impl Analysis<Kiln> for KilnAnalysis {
    type Data = Data;

    fn make(egraph: &mut KGraph, enode: &Kiln, _id: Id) -> Data {
        match enode {
            Kiln::Leaf(name) => match egraph.analysis.leaves.get(name) {
                Some(info) => Data {
                    types: vec![info.ty.clone()],
                    constant: info.is_weight,
                    zero_mean: info.uniform == Some(0.0),
                    uniform: info.uniform.map(F32Bits::new),
                    nonfinite: info.nonfinite,
                    depth: 0,
                    origin: egraph.analysis.applying_at,
                },
                None => Data::default(),
            },
            Kiln::Node(op, args) => {
                let constant = args.iter().all(|&a| egraph[a].data.constant);
                let types = match op {
                    KOp::Ir(ir) => {
                        let tys: Option<Vec<&TensorType>> = args.iter().map(|&a| egraph[a].data.ty()).collect();
                        tys.and_then(|t| ir.op.infer(&t).ok()).unwrap_or_default()
                    }
                    KOp::Get(i) => {
                        let t = &egraph[args[0]].data.types;
                        t.get(*i).cloned().into_iter().collect()
                    }
                    KOp::Wild(_) => vec![],
                    _ => {
                        let t: Vec<Option<&TensorType>> = args.iter().map(|&a| egraph[a].data.ty()).collect();
                        term_types(op, &t)
                    }
                };
                let zero_mean = zero_mean_of(egraph, op, args);
                let uniform = match op {
                    KOp::Fold(FoldOp::Fill(v)) => Some(*v),
                    KOp::Fold(FoldOp::Flat) => egraph[args[0]].data.uniform,
                    KOp::Ir(ir) => uniform_of(&ir.op, args.iter().map(|&a| egraph[a].data.uniform.map(F32Bits::get))),
                    _ => None,
                };
                let depth =
                    if constant { 1 + args.iter().map(|&a| egraph[a].data.depth).max().unwrap_or(0) } else { 0 };
                let nonfinite = constant
                    && (args.iter().any(|&a| egraph[a].data.nonfinite)
                        || uniform.is_some_and(|u| !u.get().is_finite()));
                Data { types, constant, zero_mean, uniform, nonfinite, depth, origin: egraph.analysis.applying_at }
            }
        }
    }

    fn merge(&mut self, to: &mut Data, from: Data) -> DidMerge {
        let mut changed_to = false;
        let mut changed_from = false;
        if to.types.is_empty() && !from.types.is_empty() {
            to.types = from.types.clone();
            changed_to = true;
        } else if !from.types.is_empty() && to.types != from.types {
            // An unsound rule merged tensors of different types; keep the first and say so loudly in
            // debug builds.
            debug_assert!(false, "e-class merge of {:?} and {:?}", to.types, from.types);
        } else if from.types.is_empty() && !to.types.is_empty() {
            changed_from = true;
        }
        for (t, f) in [(&mut to.constant, from.constant), (&mut to.zero_mean, from.zero_mean)] {
            if f && !*t {
                *t = true;
                changed_to = true;
            } else if *t && !f {
                changed_from = true;
            }
        }
        if from.nonfinite && !to.nonfinite {
            to.nonfinite = true;
            changed_to = true;
        } else if to.nonfinite && !from.nonfinite {
            changed_from = true;
        }
        if from.depth < to.depth {
            to.depth = from.depth;
            changed_to = true;
        } else if to.depth < from.depth {
            changed_from = true;
        }
        // Provenance only names nodes: keep the first, and tell no one (no rule depends on it).
        if to.origin.is_none() {
            to.origin = from.origin;
        }
        match (to.uniform, from.uniform) {
            (None, Some(_)) => {
                to.uniform = from.uniform;
                changed_to = true;
            }
            (Some(_), None) => changed_from = true,
            _ => {}
        }
        DidMerge(changed_to, changed_from)
    }

    /// Constants of one type whose every element is the same value are one tensor, whichever way
    /// they were computed: their e-classes are joined. Without this, products of scalars over a
    /// cycle such as x = (x·a)·b with a·b = 1 build a·b, b·a, (a·b)·a, … — each a new class of an
    /// old value, and each a new match for `scalar-scalar`, until the node limit (difftest seed
    /// 80035041: 57 s at -O2).
    fn modify(egraph: &mut KGraph, id: Id) {
        let data = &egraph[id].data;
        let (Some(value), true, Some(ty)) = (data.uniform, data.constant, data.ty()) else { return };
        let key = (ty.clone(), value);
        match egraph.analysis.uniform_constants.get(&key) {
            Some(&first) => {
                egraph.union(first, id);
            }
            None => {
                egraph.analysis.uniform_constants.insert(key, id);
            }
        }
    }
}
