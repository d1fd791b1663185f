//! Algebra: neutral elements, inverse movement ops, canonical attributes and operand order.
//! Dead code and common subexpressions need no rules: extraction starts at the outputs, and the
//! e-graph's hash-consing shares equal terms.

use super::{KRewrite, add_ir, fn_rule, get, is_const, is_uniform, norm_axis, shape};
use crate::analysis::KGraph;
use crate::lang::{Kiln, find_ir_op, ir_nodes};
use egg::{Id, Subst};
use kiln_ir::Op;

/// Run in the first stage only, on the graph as written: in the fold stage every bias class has
/// many spellings and merging them pairwise multiplies constant terms.
pub fn recognise_rules() -> Vec<KRewrite> {
    vec![
        // (x + c₁) + c₂ = x + (c₁ + c₂)   for constants that do not broadcast x (biases merge)
        rw!("add-consts"; "(Add (Add ?x ?c1) ?c2)" => "(Add ?x (Add ?c1 ?c2))" if consts_keep_type),
    ]
}

pub fn rules() -> Vec<KRewrite> {
    vec![
        // x·1 = x   (when the 1s do not broadcast x to a larger shape)
        rw!("mul-one"; "(Mul ?x ?c)" => "?x" if uniform_keeps_shape("?c", 1.0)),
        // x + 0 = x
        rw!("add-zero"; "(Add ?x ?c)" => "?x" if uniform_keeps_shape("?c", 0.0)),
        // x − 0 = x
        rw!("sub-zero"; "(Sub ?x ?c)" => "?x" if uniform_keeps_shape("?c", 0.0)),
        // x / 1 = x
        rw!("div-one"; "(Div ?x ?c)" => "?x" if uniform_keeps_shape("?c", 1.0)),
        // c + x = x + c   (constants to the right; not commutativity in general)
        rw!("add-const-right"; "(Add ?c ?x)" => "(Add ?x ?c)" if const_not_const("?c", "?x")),
        // c·x = x·c
        rw!("mul-const-right"; "(Mul ?c ?x)" => "(Mul ?x ?c)" if const_not_const("?c", "?x")),
        // flat(flat(x)) = flat(x);  flat(reshape(x)) = flat(x)   (fewer spellings of one constant)
        rw!("flat-flat"; "(flat (flat ?x))" => "(flat ?x)"),
        rw!("flat-reshape"; "(flat (Reshape* ?x))" => "(flat ?x)"),
        // a·(1/b) = a/b where 1/b cannot overflow (see `reciprocal_is_division`)
        rw!("mul-reciprocal"; "(Mul ?a (Reciprocal ?b))" => "(Div ?a ?b)" if reciprocal_is_division),
        // x/c = x·(1/c) for a constant c whose value is known and whose reciprocal is a normal f32
        // (so that scalar divisors fold like multipliers; 1/1e-39 would be +inf, 1/3e38 subnormal)
        rw!("div-const"; "(Div ?x ?c)" => "(Mul ?x (Reciprocal ?c))" if exact_enough_reciprocal),
        // Identity(x) = x
        rw!("identity"; "(Identity ?x)" => "?x"),
        // relu(relu(x)) = relu(x)   (max(max(x, 0), 0) = max(x, 0); also for NaN, which passes through)
        rw!("relu-relu"; "(Relu (Relu ?x))" => "(Relu ?x)"),
        // reshape(x) = x when the shape does not change
        rw!("reshape-noop"; "(Reshape* ?x)" => "?x" if same_shape_as_input("?x")),
        // reshape(reshape(x)) = reshape(x)
        fn_rule("reshape-reshape", "(Reshape* (Reshape* ?x))", reshape_reshape),
        // transpose_p(x) = x for the identity permutation
        rw!("transpose-noop"; "(Transpose* ?x)" => "?x" if same_shape_as_input("?x").and_identity_perm()),
        // transpose_q(transpose_p(x)) = transpose_{p∘q}(x), or x when p∘q is the identity
        fn_rule("transpose-transpose", "(Transpose* (Transpose* ?x))", transpose_transpose),
        // pad(x, 0) = x   (all pads zero: a pad that keeps the shape may still shift, [+1, −1])
        rw!("pad-noop"; "(Pad* ?x)" => "?x" if zero_pads),
        // expand(x) = x when the shape does not change
        rw!("expand-noop"; "(Expand* ?x)" => "?x" if same_shape_as_input("?x")),
        // Reduce over [rank−1] = Reduce over [−1]; Softmax over rank−1 = Softmax over −1
        fn_rule("canonical-reduce-axis", "(ReduceMax* ?x)", canonical_last_axis),
        fn_rule("canonical-reduce-sum-axis", "(ReduceSum* ?x)", canonical_last_axis),
        fn_rule("canonical-reduce-mean-axis", "(ReduceMean* ?x)", canonical_last_axis),
        fn_rule("canonical-softmax-axis", "(Softmax* ?x)", canonical_last_axis),
        // reshape(reduce(x, keepdims=0)) = reduce(x, keepdims=1) when the reshape restores the
        // reduced axes as 1s (torch's dynamo exporter writes var(keepdim=True) this way)
        fn_rule("reduce-keepdims", "(Reshape* ?m)", reduce_keepdims),
        // reshape(reshape(x) + c) = x + reshape(expand(c)) when the inner reshape splits x's
        // leading axis in two and the outer merges them back, c constant (Swin's shifted-window
        // mask, added per window in a [B, nW, heads, N, N] view of [B·nW, heads, N, N] scores)
        fn_rule("reshape-add-reshape", "(Reshape* (Add (Reshape* ?x) ?c))", reshape_add_reshape),
    ]
}

/// See `reshape-add-reshape`.
fn reshape_add_reshape(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (x, c) = (get(s, "?x"), get(s, "?c"));
    if !is_const(eg, c) || is_const(eg, x) {
        return None;
    }
    let xs = shape(eg, x)?;
    if xs.is_empty() || shape(eg, id)? != xs {
        return None;
    }
    // The split view [a, b, x₁, …] of x and the sum in it, which c must not grow.
    let (cx, cc) = (eg.find(x), eg.find(c));
    let view = ir_nodes(eg, id, "Reshape").find_map(|(_, args)| {
        let sum = *args.first()?;
        ir_nodes(eg, sum, "Add").find_map(|(_, a)| {
            let r = *a.first()?;
            let splits_x = ir_nodes(eg, r, "Reshape").any(|(_, ra)| ra.first().is_some_and(|&y| eg.find(y) == cx));
            (a.len() == 2 && eg.find(a[1]) == cc && splits_x && shape(eg, sum) == shape(eg, r)).then_some(r)
        })
    })?;
    let vs = shape(eg, view)?;
    if vs.len() != xs.len() + 1 || vs[0] * vs[1] != xs[0] || vs[2..] != xs[1..] {
        return None;
    }
    let cs = shape(eg, c)?;
    if cs.len() > vs.len() {
        return None;
    }
    // c right-aligned to the view's rank; its first two axes expanded to [a, b], then merged.
    let c_full: Vec<usize> = std::iter::repeat_n(1, vs.len() - cs.len()).chain(cs).collect();
    let expanded: Vec<i64> = [vs[0], vs[1]].into_iter().chain(c_full[2..].iter().copied()).map(|d| d as i64).collect();
    let merged: Vec<i64> =
        std::iter::once((vs[0] * vs[1]) as i64).chain(c_full[2..].iter().map(|&d| d as i64)).collect();
    let e = add_ir(eg, Op::Expand { shape: expanded }, vec![c]);
    let m = add_ir(eg, Op::Reshape { shape: merged, allowzero: false }, vec![e]);
    Some(add_ir(eg, Op::Binary(kiln_ir::BinaryOp::Add), vec![x, m]))
}

/// See `reduce-keepdims`: ?m is a reduction with explicit axes and keepdims=0 whose reshape is the
/// keepdims=1 shape of the same reduction.
fn reduce_keepdims(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let m = get(s, "?m");
    let out = shape(eg, id)?;
    let found = eg[m].nodes.iter().find_map(|n| match n {
        Kiln::Node(crate::lang::KOp::Ir(op), c) if c.len() == 1 => match &op.op {
            Op::Reduce { kind, axes: Some(axes), keepdims: false, noop_with_empty_axes } if !axes.is_empty() => {
                Some((*kind, axes.clone(), *noop_with_empty_axes, c[0]))
            }
            _ => None,
        },
        _ => None,
    });
    let (kind, axes, noop_with_empty_axes, x) = found?;
    let mut kept = shape(eg, x)?;
    let rank = kept.len();
    for &a in &axes {
        kept[norm_axis(a, rank)?] = 1;
    }
    (kept == out)
        .then(|| add_ir(eg, Op::Reduce { kind, axes: Some(axes), keepdims: true, noop_with_empty_axes }, vec![x]))
}

/// ?c is uniformly `v` and broadcasting it against the other operand keeps that operand's type.
fn uniform_keeps_shape(c: &'static str, v: f32) -> impl Fn(&mut KGraph, Id, &Subst) -> bool {
    move |eg, id, s| {
        let c = get(s, c);
        is_uniform(eg, c, v) && eg[id].data.ty().is_some() && eg[id].data.ty() == eg[get(s, "?x")].data.ty()
    }
}

/// ?c is constant and ?x is not.
fn const_not_const(c: &'static str, x: &'static str) -> impl Fn(&mut KGraph, Id, &Subst) -> bool {
    move |eg, _, s| is_const(eg, get(s, c)) && !is_const(eg, get(s, x))
}

/// ?c is a uniform constant (its value known at saturation time), ?x is not, and 1/c is a normal
/// f32: finite, and not so small that it loses precision (a constant that changes finiteness, or
/// loses more than rounding, is never created).
fn exact_enough_reciprocal(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    let (x, c) = (get(s, "?x"), get(s, "?c"));
    let Some(v) = eg[c].data.uniform.map(|u| u.get()) else { return false };
    is_const(eg, c) && !is_const(eg, x) && (1.0 / v).is_normal()
}

/// a·(1/b) equals a/b up to rounding for ?b — unless 1/b overflows, for a subnormal b: then
/// a·(1/b) is ±∞ (or NaN for a = 0) where a/b is finite (soak seed 121012152: −0·Pow(1e-39, −1)
/// is NaN, −0/1e-39 is −0). So only for a divisor that is a square root (√w ≥ 3.7e-23 for every
/// w > 0: 1/√w is finite, and w = ±0, ∞ or NaN give the same specials both ways — the norms'
/// x·(1/√(σ² + ε))), or a sum of exponentials (softmax's e·(1/Σe), whose subnormal-sum regime is
/// the documented softmax exemption, docs/ops.md).
pub(super) fn reciprocal_is_division(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    let b = get(s, "?b");
    let exp_like = |eg: &KGraph, c: Id| {
        ir_nodes(eg, c, "Exp").next().is_some()
            || ir_nodes(eg, c, "Mul").any(|(_, a)| a.iter().any(|&x| ir_nodes(eg, x, "Exp").next().is_some()))
    };
    ir_nodes(eg, b, "Sqrt").next().is_some()
        || ir_nodes(eg, b, "ReduceSum").any(|(_, a)| a.first().is_some_and(|&x| exp_like(eg, x)))
}

/// ?c1 and ?c2 are constants, ?x is not, and x + c₁ has x's type.
/// Not over the `x = x + 0` cycle that `add-zero` leaves (x + c₁ in x's class, or (x + c₁) + c₂ in
/// the class of x + c₁): folding there builds c₁ + c₂, c₁ + c₂ + c₂, … one iteration after another.
fn consts_keep_type(eg: &mut KGraph, id: Id, s: &Subst) -> bool {
    let [x, c1, c2] = ["?x", "?c1", "?c2"].map(|n| get(s, n));
    let inner = eg.lookup(Kiln::ir(Op::Binary(kiln_ir::BinaryOp::Add), vec![x, c1])).map(|c| eg.find(c));
    let (x_class, id) = (eg.find(x), eg.find(id));
    inner.is_some_and(|c| c != x_class && c != id)
        && x_class != id
        && super::shallow(eg, &[c1, c2])
        && is_const(eg, c1)
        && is_const(eg, c2)
        && !is_const(eg, x)
        && eg[x].data.ty().is_some()
        && eg[x].data.ty() == eg[id].data.ty()
}

/// The matched class has a Pad of ?x whose pads are all zero (whatever its mode and value).
fn zero_pads(eg: &mut KGraph, id: Id, s: &Subst) -> bool {
    let x = eg.find(get(s, "?x"));
    ir_nodes(eg, id, "Pad").any(|(op, c)| {
        matches!(op, Op::Pad { pads, .. } if pads.iter().all(|&p| p == 0))
            && c.first().is_some_and(|&c| eg.find(c) == x)
    })
}

/// The matched op leaves ?x's type unchanged.
struct SameShape(&'static str, bool);

fn same_shape_as_input(x: &'static str) -> SameShape {
    SameShape(x, false)
}

impl SameShape {
    /// Also require an identity permutation (a transpose that keeps the shape may still permute
    /// equal dimensions).
    fn and_identity_perm(self) -> SameShape {
        SameShape(self.0, true)
    }
}

impl egg::Condition<Kiln, crate::analysis::KilnAnalysis> for SameShape {
    fn check(&self, eg: &mut KGraph, id: Id, s: &Subst) -> bool {
        let x = get(s, self.0);
        let same = eg[id].data.ty().is_some() && eg[id].data.ty() == eg[x].data.ty();
        if !same {
            return false;
        }
        if self.1 {
            return find_ir_op(eg, id, "Transpose", &[x]).is_some_and(|op| match op {
                Op::Transpose { perm: Some(p) } => p.iter().enumerate().all(|(i, &a)| i == a),
                Op::Transpose { perm: None } => shape(eg, x).is_some_and(|s| s.len() <= 1),
                _ => false,
            });
        }
        true
    }
}

fn reshape_reshape(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let x = get(s, "?x");
    let out = shape(eg, id)?;
    let op = Op::Reshape { shape: out.iter().map(|&d| d as i64).collect(), allowzero: false };
    Some(add_ir(eg, op, vec![x]))
}

fn transpose_transpose(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let x = get(s, "?x");
    let rank = shape(eg, x)?.len();
    let perm_of = |op: Op| match op {
        Op::Transpose { perm: Some(p) } => Some(p),
        Op::Transpose { perm: None } => Some((0..rank).rev().collect()),
        _ => None,
    };
    // The inner transpose: a Transpose node of x in some child class of the outer one.
    let outer_nodes: Vec<(Op, Id)> = eg[id]
        .nodes
        .iter()
        .filter_map(|n| match n {
            Kiln::Node(crate::lang::KOp::Ir(op), c) if op.name() == "Transpose" => Some((op.op.clone(), c[0])),
            _ => None,
        })
        .collect();
    for (outer, inner_class) in outer_nodes {
        let Some(inner) = find_ir_op(eg, inner_class, "Transpose", &[x]) else { continue };
        let (Some(p), Some(q)) = (perm_of(inner), perm_of(outer)) else { continue };
        if p.len() != rank || q.len() != rank {
            continue;
        }
        // out[i] = inner[q[i]] = x[p[q[i]]].
        let composed: Vec<usize> = q.iter().map(|&i| p[i]).collect();
        if composed.iter().enumerate().all(|(i, &a)| i == a) {
            return Some(x);
        }
        return Some(add_ir(eg, Op::Transpose { perm: Some(composed) }, vec![x]));
    }
    None
}

/// A reduction or softmax over axis rank−1 written as −1, the form other rules match.
fn canonical_last_axis(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let x = get(s, "?x");
    let rank = shape(eg, x)?.len();
    let op = eg[id].nodes.iter().find_map(|n| match n {
        Kiln::Node(crate::lang::KOp::Ir(op), c) if c.len() == 1 && eg.find(c[0]) == eg.find(x) => Some(op.op.clone()),
        _ => None,
    })?;
    let is_last = |a: i64| a >= 0 && norm_axis(a, rank) == Some(rank - 1);
    let new = match op {
        Op::Reduce { kind, axes: Some(axes), keepdims, noop_with_empty_axes }
            if axes.len() == 1 && is_last(axes[0]) =>
        {
            Op::Reduce { kind, axes: Some(vec![-1]), keepdims, noop_with_empty_axes }
        }
        Op::Softmax { axis } if is_last(axis) => Op::Softmax { axis: -1 },
        _ => return None,
    };
    Some(add_ir(eg, new, vec![x]))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, check_not};
    use super::{recognise_rules, rules};

    const L: &[&str] = &["x?f32[2,4]", "one:f32[4]", "zero:f32[4]", "w:f32[4,4]", "z?f32[4]"];

    #[test]
    fn identity_and_movement() {
        check(L, &rules(), "(Identity x)", "x");
        check(L, &rules(), "(Transpose<perm=[1,0]> (Transpose<perm=[1,0]> x))", "x");
        check(L, &rules(), "(Reshape<shape=[8]> (Reshape<shape=[4,2]> x))", "(Reshape<shape=[8]> x)");
        check(L, &rules(), "(Reshape<shape=[2,4]> x)", "x");
        check(L, &rules(), "(Pad<pads=[0,0,0,0]> x)", "x");
        check(L, &rules(), "(Pad<mode=reflect;pads=[0,0,0,0]> x)", "x");
        check(L, &rules(), "(ReduceMax<axes=[1]> x)", "(ReduceMax<axes=[-1]> x)");
        check(L, &rules(), "(Softmax<axis=1> x)", "(Softmax x)");
        check(L, &rules(), "(Relu (Relu (Relu x)))", "(Relu x)");
        // One relu is no identity.
        check_not(L, &rules(), "(Relu x)", "x");
    }

    #[test]
    fn an_add_in_a_split_view_is_an_add_of_the_merged_addend() {
        // Swin's shifted-window mask: [B·nW, heads, N, N] scores viewed as [B, nW, heads, N, N],
        // the mask [nW, 1, N, N] added per window, merged back.
        let l = &["s?f32[6,2,3,3]", "m:f32[3,1,3,3]", "k?f32[3,1,3,3]"];
        check(
            l,
            &rules(),
            "(Reshape<shape=[6,2,3,3]> (Add (Reshape<shape=[2,3,2,3,3]> s) m))",
            "(Add s (Reshape<shape=[6,1,3,3]> (Expand<shape=[2,3,1,3,3]> m)))",
        );
        // A run-time addend is left alone: its merged copy would cost a pass per run.
        check_not(
            l,
            &rules(),
            "(Reshape<shape=[6,2,3,3]> (Add (Reshape<shape=[2,3,2,3,3]> s) k))",
            "(Add s (Reshape<shape=[6,1,3,3]> (Expand<shape=[2,3,1,3,3]> k)))",
        );
    }

    #[test]
    fn keepdims_restored_by_a_reshape_is_keepdims() {
        let l = &["x?f32[2,3,4]"];
        check(
            l,
            &rules(),
            "(Reshape<shape=[2,1,1]> (ReduceMean<axes=[1,2];keepdims=0> x))",
            "(ReduceMean<axes=[1,2]> x)",
        );
        check(
            l,
            &rules(),
            "(Reshape<shape=[1,3,1]> (ReduceSum<axes=[0,2];keepdims=0> x))",
            "(ReduceSum<axes=[0,2]> x)",
        );
    }

    #[test]
    fn neutral_elements_with_fill() {
        check(L, &rules(), "(Mul x (fill<1.0> one))", "x");
        check(L, &rules(), "(Add x (fill<0.0> zero))", "x");
        check(L, &rules(), "(Mul w z)", "(Mul z w)");
        // A divisor whose value is unknown at saturation time stays a division.
        check_not(L, &rules(), "(Div x w)", "(Mul x (Reciprocal w))");
        let l = &["x?f32[2,4]", "two:f32[]=2.0", "tiny:f32[]=1e-39", "huge:f32[]=3e38"];
        check(l, &rules(), "(Div x two)", "(Mul x (Reciprocal two))");
        // 1/1e-39 is +inf in f32; 1/3e38 is subnormal (precision lost): both stay divisions.
        check_not(l, &rules(), "(Div x tiny)", "(Mul x (Reciprocal tiny))");
        check_not(l, &rules(), "(Div x huge)", "(Mul x (Reciprocal huge))");
        check(L, &recognise_rules(), "(Add (Add x one) zero)", "(Add x (Add one zero))");
    }

    #[test]
    fn negative_neutral_elements_that_broadcast() {
        // z is [4]; adding a [2,4] zero would broadcast it to [2,4]: not the same tensor.
        check_not(&["z?f32[4]", "zz:f32[2,4]"], &rules(), "(Add z (fill<0.0> zz))", "z");
        // A transpose of a square matrix keeps its shape but is not the identity.
        check_not(&["s?f32[3,3]"], &rules(), "(Transpose<perm=[1,0]> s)", "s");
        // A pad that keeps the shape but shifts (one in front, one cut at the end) is no no-op.
        check_not(L, &rules(), "(Pad<pads=[0,1,0,-1]> x)", "x");
        check_not(L, &rules(), "(Pad<pads=[1,0,-1,0]> x)", "x");
        // Only one transpose: no cancellation.
        check_not(L, &rules(), "(Transpose<perm=[1,0]> x)", "x");
    }

    #[test]
    fn more_neutral_elements_and_canonical_forms() {
        check(L, &rules(), "(Sub x (fill<0.0> zero))", "x");
        check(L, &rules(), "(Div x (fill<1.0> one))", "x");
        check(L, &rules(), "(Add w z)", "(Add z w)");
        check(L, &rules(), "(Expand<shape=[2,4]> x)", "x");
        check(L, &rules(), "(flat (flat w))", "(flat w)");
        check(L, &rules(), "(flat (Reshape<shape=[16]> w))", "(flat w)");
        check(L, &rules(), "(ReduceSum<axes=[1]> x)", "(ReduceSum<axes=[-1]> x)");
        check(
            L,
            &rules(),
            "(Transpose<perm=[1,0]> (Transpose<perm=[1,0]> (Transpose<perm=[1,0]> x)))",
            "(Transpose<perm=[1,0]> x)",
        );
    }
}
