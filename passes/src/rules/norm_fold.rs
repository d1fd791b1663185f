//! Normalization folding. At inference BatchNormalization, UnifiedNorm and PowerNorm's affine part
//! are per-channel affines `x·a + c`; an affine folds into the Linear/Gemm/Conv after it (always) or
//! before it (a Conv only without padding: zero padding is not transformed by the affine, the
//! classic wrong fold), commutes with reflect/edge padding, and distributes over residual adds, so
//! that extraction can choose. InstanceNormalization is true instance norm (statistics per sample)
//! and is not an affine; eval-mode InstanceNorm2d with running statistics reaches kiln as
//! BatchNormalization and folds as such.

use super::{
    KRewrite, add_channel_vector, add_fold, add_ir, add_meta, fn_rule, get, has_term, is_const, is_uniform, norm_axis,
    numel, shallow, shape,
};
use crate::analysis::{KGraph, channel_axis};
use crate::lang::{F32Bits, FoldOp, KOp, Kiln, MetaOp, find_ir_op};
use egg::{Id, Subst};
use kiln_ir::{Op, PadMode};

/// Recognition, run in the first stage only: the affines it finds carry over into the fold stage,
/// while the `x·a + c` that `affine-lower` writes there are not recognised again (which would feed
/// the fold rules their own output).
pub fn recognise_rules() -> Vec<KRewrite> {
    vec![
        // x·a + c = affine(x, a, c)   for constant a, c varying along one channel axis
        rw!("affine-recognise"; "(Add (Mul ?x ?a) ?c)" => "(affine ?x ?a ?c)" if is_channel_affine),
    ]
}

pub fn rules() -> Vec<KRewrite> {
    vec![
        // BN_ε(x, γ, β, μ, σ²) = x·γ/√(σ²+ε) + (β − μ·γ/√(σ²+ε))   per channel (axis 1)
        fn_rule("batchnorm-affine", "(BatchNormalization* ?x ?g ?b ?m ?v)", batchnorm_affine),
        // UN_ε(x, γ, β, rv) = x·γ/√(rv+ε) + β   per channel along its axis
        fn_rule("unifiednorm-affine", "(UnifiedNorm* ?x ?g ?b ?v)", unifiednorm_affine),
        // PN_ε(x, γ, β, rφ) = GS(x)·γ/√(rφ+ε) + β = affine(PN_0(x, 1, 0, 1), γ/√(rφ+ε), β)
        fn_rule("powernorm-affine", "(PowerNorm* ?x ?g ?b ?v)", powernorm_affine),
        // affine(x, a, c) = x·a + c
        rw!("affine-lower"; "(affine ?x ?a ?c)" => "(Add (Mul ?x ?a) ?c)"),
        // affine(y + b, a, c) = affine(y, a, a·b + c)   for a constant per-channel b
        fn_rule("affine-absorb-bias", "(affine (Add ?y ?b) ?a ?c)", affine_absorb_bias),
        // affine(affine(x, a₁, c₁), a₂, c₂) = affine(x, a₁·a₂, c₁·a₂ + c₂)
        fn_rule("affine-affine", "(affine (affine ?x ?a1 ?c1) ?a2 ?c2)", affine_affine),
        // affine(x·W, a, c) = x·(W·diag a) + c
        fn_rule("affine-after-matmul", "(affine (MatMul ?x ?w) ?a ?c)", affine_after_matmul),
        // affine(Gemm(x, W, b), a, c) = Gemm(x, W·diag a, a·b + c)
        fn_rule("affine-after-gemm", "(affine (Gemm* ?x ?w ?b) ?a ?c)", affine_after_gemm),
        fn_rule("affine-after-gemm-nobias", "(affine (Gemm* ?x ?w) ?a ?c)", affine_after_gemm),
        // affine(Conv(x, W, b), a, c) = Conv(x, diag(a)·W, a·b + c)
        fn_rule("affine-after-conv", "(affine (Conv* ?x ?w ?b) ?a ?c)", affine_after_conv),
        fn_rule("affine-after-conv-nobias", "(affine (Conv* ?x ?w) ?a ?c)", affine_after_conv),
        // affine(z, a, c)·W = z·(diag(a)·W) + c·W
        fn_rule("affine-before-matmul", "(MatMul (affine ?z ?a ?c) ?w)", affine_before_matmul),
        // affine(z, a, c)·W + b = z·(diag(a)·W) + (c·W + b)   (the shift joins the layer's bias)
        fn_rule("affine-before-linear", "(Add (MatMul (affine ?z ?a ?c) ?w) ?b)", affine_before_linear),
        // Gemm(affine(z, a, c), W, b) = Gemm(z, diag(a)·W, b + c·W)   (α = β = 1)
        fn_rule("affine-before-gemm", "(Gemm* (affine ?z ?a ?c) ?w ?b)", affine_before_gemm),
        fn_rule("affine-before-gemm-nobias", "(Gemm* (affine ?z ?a ?c) ?w)", affine_before_gemm),
        // Conv(affine(z, a, c), W, b) = Conv(z, W·diag(a), b + Σ W·c)   only with no padding at all
        fn_rule("affine-before-conv", "(Conv* (affine ?z ?a ?c) ?w ?b)", affine_before_conv),
        fn_rule("affine-before-conv-nobias", "(Conv* (affine ?z ?a ?c) ?w)", affine_before_conv),
        // pad_reflect|edge(affine(z, a, c)) = affine(pad(z), a, c)   when the channel axis is not padded
        fn_rule("affine-through-pad", "(Pad* (affine ?z ?a ?c))", affine_through_pad),
        // reshape(affine(z, a, c)) = affine(reshape(z), a, c)   for an affine along the last axis that
        // the reshape keeps (GPT-2's Conv1D views its input to 2-D before the Gemm)
        fn_rule("affine-through-reshape", "(Reshape* (affine ?z ?a ?c))", affine_through_reshape),
        // affine(p + q, a, c) = affine(p, a, c) + q·a
        fn_rule("affine-over-residual", "(affine (Add ?p ?q) ?a ?c)", affine_over_residual),
    ]
}

/// Where an affine acts: `axis` (None: a and c are scalars, any axis) and the channel count there
/// (`None` with a scalar affine).
#[derive(Debug, Clone, Copy)]
struct AffineAxis {
    axis: Option<usize>,
}

impl AffineAxis {
    /// Whether the affine acts along `axis` (a scalar affine acts along every axis).
    fn fits(self, axis: usize) -> bool {
        self.axis.is_none_or(|k| k == axis)
    }
}

/// a and c are constant, each varies along at most one axis of x (the same one), and neither
/// broadcasts x to a larger shape.
fn affine_axis(eg: &KGraph, x: Id, a: Id, c: Id) -> Option<AffineAxis> {
    let xs = shape(eg, x)?;
    let rank = xs.len();
    let mut axis = None;
    for v in [a, c] {
        if !is_const(eg, v) {
            return None;
        }
        let vs = shape(eg, v)?;
        if let Some(k) = channel_axis(&vs, rank)? {
            if vs[k + vs.len() - rank] != xs[k] || axis.is_some_and(|a| a != k) {
                return None;
            }
            axis = Some(k);
        }
    }
    Some(AffineAxis { axis })
}

/// Condition of `affine-recognise`.
fn is_channel_affine(eg: &mut KGraph, id: Id, s: &Subst) -> bool {
    let x = get(s, "?x");
    !is_const(eg, x) && eg[id].data.ty() == eg[x].data.ty() && affine_axis(eg, x, get(s, "?a"), get(s, "?c")).is_some()
}

/// A constant of 1 or `channels` elements as a flat [channels] vector.
fn channel_vec(eg: &mut KGraph, v: Id, channels: usize) -> Option<Id> {
    let flat = add_fold(eg, FoldOp::Flat, vec![v]);
    match numel(eg, v)? {
        n if n == channels => Some(flat),
        1 => Some(add_ir(eg, Op::Expand { shape: vec![channels as i64] }, vec![flat])),
        _ => None,
    }
}

/// The op of a `Name*` node with these children in the matched class.
fn matched(eg: &KGraph, id: Id, name: &str, s: &Subst, vars: &[&str]) -> Option<Op> {
    let args: Vec<Id> = vars.iter().map(|v| get(s, v)).collect();
    find_ir_op(eg, id, name, &args)
}

/// The op of a `Name*` node that is child 0 of an `affine` node in the matched class.
fn matched_inner(eg: &KGraph, id: Id, name: &str, args: &[Id]) -> Option<Op> {
    let affine = KOp::Meta(MetaOp::Affine);
    eg[id].nodes.iter().find_map(|n| match n {
        Kiln::Node(op, c) if *op == affine => find_ir_op(eg, c[0], name, args),
        _ => None,
    })
}

fn all_const(eg: &KGraph, ids: &[Id]) -> bool {
    ids.iter().all(|&i| is_const(eg, i))
}

fn batchnorm_affine(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let Op::BatchNormalization { epsilon } = matched(eg, id, "BatchNormalization", s, &["?x", "?g", "?b", "?m", "?v"])?
    else {
        return None;
    };
    let [x, g, b, m, v] = ["?x", "?g", "?b", "?m", "?v"].map(|n| get(s, n));
    let xs = shape(eg, x)?;
    let channels = *xs.get(1)?;
    if !all_const(eg, &[g, b, m, v]) || [g, b, m, v].iter().any(|&p| numel(eg, p) != Some(channels)) {
        return None;
    }
    let eps = F32Bits::new(epsilon);
    let scale = add_fold(eg, FoldOp::BnScale(eps), vec![g, v]);
    let shift = add_fold(eg, FoldOp::BnShift(eps), vec![g, b, m, v]);
    let a = add_channel_vector(eg, scale, channels, 1, xs.len());
    let c = add_channel_vector(eg, shift, channels, 1, xs.len());
    Some(add_meta(eg, MetaOp::Affine, vec![x, a, c]))
}

fn unifiednorm_affine(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let Op::UnifiedNorm { axis, epsilon } = matched(eg, id, "UnifiedNorm", s, &["?x", "?g", "?b", "?v"])? else {
        return None;
    };
    let [x, g, b, v] = ["?x", "?g", "?b", "?v"].map(|n| get(s, n));
    let xs = shape(eg, x)?;
    let k = norm_axis(axis, xs.len())?;
    let channels = xs[k];
    if !all_const(eg, &[g, b, v]) || [g, b, v].iter().any(|&p| numel(eg, p) != Some(channels)) {
        return None;
    }
    let scale = add_fold(eg, FoldOp::BnScale(F32Bits::new(epsilon)), vec![g, v]);
    let a = add_channel_vector(eg, scale, channels, k, xs.len());
    let c = add_channel_vector(eg, b, channels, k, xs.len());
    Some(add_meta(eg, MetaOp::Affine, vec![x, a, c]))
}

fn powernorm_affine(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let Op::PowerNorm { groups, epsilon, group_epsilon } = matched(eg, id, "PowerNorm", s, &["?x", "?g", "?b", "?v"])?
    else {
        return None;
    };
    let [x, g, b, v] = ["?x", "?g", "?b", "?v"].map(|n| get(s, n));
    // Already the parameter-free form this rule produces.
    if epsilon == 0.0 && is_uniform(eg, g, 1.0) && is_uniform(eg, b, 0.0) && is_uniform(eg, v, 1.0) {
        return None;
    }
    let channels = *shape(eg, x)?.last()?;
    if !all_const(eg, &[g, b, v]) || [g, b, v].iter().any(|&p| numel(eg, p) != Some(channels)) {
        return None;
    }
    let one_g = add_fold(eg, FoldOp::Fill(F32Bits::new(1.0)), vec![g]);
    let zero_b = add_fold(eg, FoldOp::Fill(F32Bits::new(0.0)), vec![b]);
    let one_v = add_fold(eg, FoldOp::Fill(F32Bits::new(1.0)), vec![v]);
    let bare = add_ir(eg, Op::PowerNorm { groups, epsilon: 0.0, group_epsilon }, vec![x, one_g, zero_b, one_v]);
    let a = add_fold(eg, FoldOp::BnScale(F32Bits::new(epsilon)), vec![g, v]);
    let c = add_fold(eg, FoldOp::Flat, vec![b]);
    Some(add_meta(eg, MetaOp::Affine, vec![bare, a, c]))
}

fn affine_absorb_bias(eg: &mut KGraph, _id: Id, s: &Subst) -> Option<Id> {
    let [y, b, a, c] = ["?y", "?b", "?a", "?c"].map(|n| get(s, n));
    if !shallow(eg, &[a, b, c]) || !local(eg, &[a, b, c]) {
        return None;
    }
    // y + b must have y's type (b does not broadcast y) and b must be a per-channel constant.
    let added = eg.lookup(Kiln::ir(Op::Binary(kiln_ir::BinaryOp::Add), vec![y, b]))?;
    if shape(eg, added)? != shape(eg, y)? {
        return None;
    }
    // y + b is a lowered affine (x·a₁ + c₁): `affine-affine` composes it into one affine of x, which
    // is never worse; absorbing c₁ here would only add another spelling of every constant along a
    // chain of affines (the e-graph growth on residual stacks).
    if has_term(eg, added, &KOp::Meta(MetaOp::Affine)) {
        return None;
    }
    let ax = affine_axis(eg, y, a, c)?;
    let bx = affine_axis(eg, y, b, b)?;
    let rank = shape(eg, y)?.len();
    let axis = match (ax.axis, bx.axis) {
        (Some(p), Some(q)) if p != q => return None,
        (Some(p), _) | (None, Some(p)) => p,
        (None, None) => rank.checked_sub(1)?,
    };
    let channels = shape(eg, y)?[axis];
    let [va, vb, vc] = [a, b, c].map(|v| channel_vec(eg, v, channels));
    let fma = add_fold(eg, FoldOp::Fma, vec![va?, vb?, vc?]);
    let new_c = add_channel_vector(eg, fma, channels, axis, rank);
    let a = channel_vec(eg, a, channels)?;
    let new_a = add_channel_vector(eg, a, channels, axis, rank);
    Some(add_meta(eg, MetaOp::Affine, vec![y, new_a, new_c]))
}

fn affine_affine(eg: &mut KGraph, _id: Id, s: &Subst) -> Option<Id> {
    let [x, a1, c1, a2, c2] = ["?x", "?a1", "?c1", "?a2", "?c2"].map(|n| get(s, n));
    if !shallow(eg, &[a1, c1, a2, c2]) || !local(eg, &[a1, c1, a2, c2]) {
        return None;
    }
    let rank = shape(eg, x)?.len();
    let p = affine_axis(eg, x, a1, c1)?;
    let q = affine_axis(eg, x, a2, c2)?;
    let axis = match (p.axis, q.axis) {
        (Some(p), Some(q)) if p != q => return None,
        (Some(k), _) | (None, Some(k)) => k,
        (None, None) => rank.checked_sub(1)?,
    };
    let channels = shape(eg, x)?[axis];
    let [va1, vc1, va2, vc2] = [a1, c1, a2, c2].map(|v| channel_vec(eg, v, channels));
    let (va1, vc1, va2, vc2) = (va1?, vc1?, va2?, vc2?);
    let zero = add_fold(eg, FoldOp::Fill(F32Bits::new(0.0)), vec![va1]);
    let a = add_fold(eg, FoldOp::Fma, vec![va1, va2, zero]);
    let c = add_fold(eg, FoldOp::Fma, vec![vc1, va2, vc2]);
    let a = add_channel_vector(eg, a, channels, axis, rank);
    let c = add_channel_vector(eg, c, channels, axis, rank);
    Some(add_meta(eg, MetaOp::Affine, vec![x, a, c]))
}

fn affine_after_matmul(eg: &mut KGraph, _id: Id, s: &Subst) -> Option<Id> {
    let [x, w, a, c] = ["?x", "?w", "?a", "?c"].map(|n| get(s, n));
    if !shallow(eg, &[w, a, c]) {
        return None;
    }
    let ws = shape(eg, w)?;
    if !is_const(eg, w) || ws.len() != 2 {
        return None;
    }
    let y = eg.lookup(Kiln::ir(Op::MatMul, vec![x, w]))?;
    let rank = shape(eg, y)?.len();
    if !affine_axis(eg, y, a, c)?.fits(rank - 1) {
        return None;
    }
    let va = channel_vec(eg, a, ws[1])?;
    let w2 = add_fold(eg, FoldOp::ScaleCols, vec![w, va]);
    let mm = add_ir(eg, Op::MatMul, vec![x, w2]);
    Some(add_ir(eg, Op::Binary(kiln_ir::BinaryOp::Add), vec![mm, c]))
}

fn affine_after_gemm(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let [x, w, a, c] = ["?x", "?w", "?a", "?c"].map(|n| get(s, n));
    if !shallow(eg, &[w, a, c]) {
        return None;
    }
    let b = s.get(super::var("?b")).copied();
    let args: Vec<Id> = [x, w].into_iter().chain(b).collect();
    let Op::Gemm { alpha, beta, trans_a: false, trans_b } = matched_inner(eg, id, "Gemm", &args)? else {
        return None;
    };
    let ws = shape(eg, w)?;
    if !is_const(eg, w) || ws.len() != 2 || (b.is_some() && beta != 1.0) {
        return None;
    }
    let y = eg.lookup(Kiln::ir(Op::Gemm { alpha, beta, trans_a: false, trans_b }, args))?;
    if !affine_axis(eg, y, a, c)?.fits(1) {
        return None;
    }
    let out = if trans_b { ws[0] } else { ws[1] };
    let va = channel_vec(eg, a, out)?;
    let vc = channel_vec(eg, c, out)?;
    let w2 = add_fold(eg, if trans_b { FoldOp::ScaleRows } else { FoldOp::ScaleCols }, vec![w, va]);
    let b2 = match b {
        Some(b) => {
            let vb = channel_vec(eg, b, out)?;
            if !is_const(eg, b) || affine_axis(eg, y, b, b)?.axis == Some(0) {
                return None;
            }
            add_fold(eg, FoldOp::Fma, vec![va, vb, vc])
        }
        None => vc,
    };
    Some(add_ir(eg, Op::Gemm { alpha, beta: 1.0, trans_a: false, trans_b }, vec![x, w2, b2]))
}

fn affine_after_conv(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let [x, w, a, c] = ["?x", "?w", "?a", "?c"].map(|n| get(s, n));
    if !shallow(eg, &[w, a, c]) {
        return None;
    }
    let b = s.get(super::var("?b")).copied();
    let args: Vec<Id> = [x, w].into_iter().chain(b).collect();
    let conv = matched_inner(eg, id, "Conv", &args)?;
    let ws = shape(eg, w)?;
    if !is_const(eg, w) || ws.len() != 4 || b.is_some_and(|b| !is_const(eg, b)) {
        return None;
    }
    let y = eg.lookup(Kiln::ir(conv.clone(), args))?;
    if !affine_axis(eg, y, a, c)?.fits(1) {
        return None;
    }
    let m = ws[0];
    let va = channel_vec(eg, a, m)?;
    let vc = channel_vec(eg, c, m)?;
    let w2 = add_fold(eg, FoldOp::ScaleRows, vec![w, va]);
    let b2 = match b {
        Some(b) => {
            let vb = channel_vec(eg, b, m)?;
            add_fold(eg, FoldOp::Fma, vec![va, vb, vc])
        }
        None => vc,
    };
    Some(add_ir(eg, conv, vec![x, w2, b2]))
}

fn affine_before_matmul(eg: &mut KGraph, _id: Id, s: &Subst) -> Option<Id> {
    let [z, a, c, w] = ["?z", "?a", "?c", "?w"].map(|n| get(s, n));
    if !shallow(eg, &[w, a, c]) {
        return None;
    }
    let ws = shape(eg, w)?;
    let rank = shape(eg, z)?.len();
    if !is_const(eg, w) || ws.len() != 2 || rank < 1 || !affine_axis(eg, z, a, c)?.fits(rank - 1) {
        return None;
    }
    let va = channel_vec(eg, a, ws[0])?;
    let vc = channel_vec(eg, c, ws[0])?;
    let w2 = add_fold(eg, FoldOp::ScaleRows, vec![w, va]);
    let shift = add_fold(eg, FoldOp::VecMat, vec![vc, w]);
    let mm = add_ir(eg, Op::MatMul, vec![z, w2]);
    Some(add_ir(eg, Op::Binary(kiln_ir::BinaryOp::Add), vec![mm, shift]))
}

fn affine_before_linear(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let b = get(s, "?b");
    // The bias must be a constant that does not broadcast the product to a larger shape.
    if !is_const(eg, b) || !shallow(eg, &[b]) {
        return None;
    }
    let product = affine_before_matmul(eg, id, s)?;
    // affine_before_matmul built Add(MatMul(z, W'), shift); rebuild with the merged bias.
    let (mm, shift) = eg[product].nodes.iter().find_map(|n| match n {
        Kiln::Node(KOp::Ir(op), c) if op.name() == "Add" && is_const(eg, c[1]) && !is_const(eg, c[0]) => {
            Some((c[0], c[1]))
        }
        _ => None,
    })?;
    if eg[mm].data.ty() != eg[id].data.ty() {
        return None;
    }
    let bias = add_ir(eg, Op::Binary(kiln_ir::BinaryOp::Add), vec![shift, b]);
    Some(add_ir(eg, Op::Binary(kiln_ir::BinaryOp::Add), vec![mm, bias]))
}

/// The affine child (class) of the matched root node: child 0 of a `Name*` node with children
/// [affine, rest…].
fn matched_outer(eg: &KGraph, id: Id, name: &str, s: &Subst, rest: &[&str]) -> Option<(Op, Id)> {
    let [z, a, c] = ["?z", "?a", "?c"].map(|n| get(s, n));
    let affine = eg.lookup(Kiln::Node(KOp::Meta(MetaOp::Affine), vec![z, a, c]))?;
    let mut args = vec![affine];
    args.extend(rest.iter().map(|v| get(s, v)));
    Some((find_ir_op(eg, id, name, &args)?, affine))
}

fn affine_before_gemm(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let has_b = s.get(super::var("?b")).is_some();
    let rest: &[&str] = if has_b { &["?w", "?b"] } else { &["?w"] };
    let (Op::Gemm { alpha, beta, trans_a: false, trans_b }, _) = matched_outer(eg, id, "Gemm", s, rest)? else {
        return None;
    };
    let [z, a, c, w] = ["?z", "?a", "?c", "?w"].map(|n| get(s, n));
    let ws = shape(eg, w)?;
    if !shallow(eg, &[w, a, c]) {
        return None;
    }
    if alpha != 1.0 || (has_b && beta != 1.0) || !is_const(eg, w) || ws.len() != 2 {
        return None;
    }
    if !affine_axis(eg, z, a, c)?.fits(1) {
        return None;
    }
    let inner = if trans_b { ws[1] } else { ws[0] };
    let va = channel_vec(eg, a, inner)?;
    let vc = channel_vec(eg, c, inner)?;
    let w2 = add_fold(eg, if trans_b { FoldOp::ScaleCols } else { FoldOp::ScaleRows }, vec![w, va]);
    let shift =
        if trans_b { add_fold(eg, FoldOp::MatVec, vec![w, vc]) } else { add_fold(eg, FoldOp::VecMat, vec![vc, w]) };
    let b2 = if has_b { add_ir(eg, Op::Binary(kiln_ir::BinaryOp::Add), vec![get(s, "?b"), shift]) } else { shift };
    Some(add_ir(eg, Op::Gemm { alpha: 1.0, beta: 1.0, trans_a: false, trans_b }, vec![z, w2, b2]))
}

/// The condition that makes folding an affine backwards into a Conv sound: no padding at all (a
/// zero-padded border would have to become c, which no bias can express) and one group.
pub fn conv_without_padding(conv: &Op) -> bool {
    matches!(conv, Op::Conv { pads, group: 1, .. } if pads.iter().all(|&p| p == 0))
}

fn affine_before_conv(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let has_b = s.get(super::var("?b")).is_some();
    let rest: &[&str] = if has_b { &["?w", "?b"] } else { &["?w"] };
    let (conv, _) = matched_outer(eg, id, "Conv", s, rest)?;
    if !conv_without_padding(&conv) {
        return None;
    }
    let [z, a, c, w] = ["?z", "?a", "?c", "?w"].map(|n| get(s, n));
    let ws = shape(eg, w)?;
    if !shallow(eg, &[w, a, c]) {
        return None;
    }
    if !is_const(eg, w) || ws.len() != 4 || !affine_axis(eg, z, a, c)?.fits(1) {
        return None;
    }
    let va = channel_vec(eg, a, ws[1])?;
    let vc = channel_vec(eg, c, ws[1])?;
    let w2 = add_fold(eg, FoldOp::ScaleCols, vec![w, va]);
    let shift = add_fold(eg, FoldOp::ConvSum, vec![w, vc]);
    let b2 = if has_b { add_ir(eg, Op::Binary(kiln_ir::BinaryOp::Add), vec![get(s, "?b"), shift]) } else { shift };
    Some(add_ir(eg, conv, vec![z, w2, b2]))
}

fn affine_through_pad(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let [z, a, c] = ["?z", "?a", "?c"].map(|n| get(s, n));
    let affine = eg.lookup(Kiln::Node(KOp::Meta(MetaOp::Affine), vec![z, a, c]))?;
    let pad = find_ir_op(eg, id, "Pad", &[affine])?;
    let Op::Pad { mode: PadMode::Reflect | PadMode::Edge, pads, .. } = &pad else { return None };
    let rank = shape(eg, z)?.len();
    let ax = affine_axis(eg, z, a, c)?;
    if pads.len() != 2 * rank {
        return None;
    }
    if let Some(k) = ax.axis
        && (pads[k] != 0 || pads[k + rank] != 0)
    {
        return None;
    }
    let padded = add_ir(eg, pad, vec![z]);
    Some(add_meta(eg, MetaOp::Affine, vec![padded, a, c]))
}

fn affine_through_reshape(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let [z, a, c] = ["?z", "?a", "?c"].map(|n| get(s, n));
    if !shallow(eg, &[a, c]) || !local(eg, &[a, c]) {
        return None;
    }
    let affine = eg.lookup(Kiln::Node(KOp::Meta(MetaOp::Affine), vec![z, a, c]))?;
    let reshape = find_ir_op(eg, id, "Reshape", &[affine])?;
    let (zs, out) = (shape(eg, z)?, shape(eg, id)?);
    let d = *zs.last()?;
    if out.last() != Some(&d) || !affine_axis(eg, z, a, c)?.fits(zs.len() - 1) {
        return None;
    }
    // As flat [d] vectors, which broadcast along the last axis of any rank.
    let (va, vc) = (channel_vec(eg, a, d)?, channel_vec(eg, c, d)?);
    let reshaped = add_ir(eg, reshape, vec![z]);
    Some(add_meta(eg, MetaOp::Affine, vec![reshaped, va, vc]))
}

/// How deep an affine's constants may be for it to distribute over a residual add, absorb a bias
/// or compose with another affine. A normalization's own affine has constants of depth <= 3
/// (`bn-scale` -> `flat` -> `Reshape`), one composition or bias absorption later they are deeper.
/// Without this bound every normalization's affine travelled back along a residual stream through
/// each earlier normalization and bias (until `MAX_FOLD_DEPTH` stopped it), respelling every
/// constant on the way: measured on the bench's post-norm graph transformer, 298 e-nodes per layer
/// instead of 170, with the same extraction on every zoo model (and 4 ops fewer at depth 16).
pub const MAX_LOCAL_AFFINE_DEPTH: u32 = 4;

/// Every listed constant is within [`MAX_LOCAL_AFFINE_DEPTH`].
fn local(eg: &KGraph, ids: &[Id]) -> bool {
    ids.iter().all(|&v| eg[v].data.depth <= MAX_LOCAL_AFFINE_DEPTH)
}

fn affine_over_residual(eg: &mut KGraph, _id: Id, s: &Subst) -> Option<Id> {
    let [p, q, a, c] = ["?p", "?q", "?a", "?c"].map(|n| get(s, n));
    if !shallow(eg, &[a, c]) {
        return None;
    }
    // Only an affine close to its normalization distributes (see `MAX_LOCAL_AFFINE_DEPTH`).
    if !local(eg, &[a, c]) {
        return None;
    }
    let sum = eg.lookup(Kiln::ir(Op::Binary(kiln_ir::BinaryOp::Add), vec![p, q]))?;
    let t = eg[sum].data.ty()?.clone();
    if is_const(eg, p) || is_const(eg, q) || eg[p].data.ty() != Some(&t) || eg[q].data.ty() != Some(&t) {
        return None;
    }
    // Only worth it when the affine can then fold into the branch's linear layer.
    if !has_linear_producer(eg, q) {
        return None;
    }
    affine_axis(eg, sum, a, c)?;
    let zero = add_fold(eg, FoldOp::Fill(F32Bits::new(0.0)), vec![c]);
    let ap = add_meta(eg, MetaOp::Affine, vec![p, a, c]);
    let aq = add_meta(eg, MetaOp::Affine, vec![q, a, zero]);
    Some(add_ir(eg, Op::Binary(kiln_ir::BinaryOp::Add), vec![ap, aq]))
}

/// The class is computed by a MatMul/Gemm/Conv with a constant weight, possibly plus a constant
/// bias.
fn has_linear_producer(eg: &KGraph, id: Id) -> bool {
    let linear = |class: Id| {
        eg[class].nodes.iter().any(|n| match n {
            Kiln::Node(KOp::Ir(op), c) if matches!(op.name(), "MatMul" | "Gemm" | "Conv") => is_const(eg, c[1]),
            _ => false,
        })
    };
    linear(id)
        || eg[id].nodes.iter().any(|n| match n {
            Kiln::Node(KOp::Ir(op), c) if op.name() == "Add" => linear(c[0]) && is_const(eg, c[1]),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, check_not};
    use super::super::{algebra, norm_fold};
    use super::conv_without_padding;
    use crate::rules::KRewrite;
    use kiln_ir::Op;

    fn rules() -> Vec<KRewrite> {
        let mut r = norm_fold::rules();
        r.extend(norm_fold::recognise_rules());
        r.extend(algebra::rules());
        r
    }

    const BN: &[&str] = &["x?f32[1,3,4,4]", "g:f32[3]", "b:f32[3]", "m:f32[3]", "v:f32[3]", "w:f32[2,3,1,1]"];

    #[test]
    fn batchnorm_becomes_an_affine() {
        check(
            BN,
            &rules(),
            "(BatchNormalization x g b m v)",
            "(affine x (Reshape<shape=[3,1,1]> (flat (bn-scale<1e-5> g v))) \
             (Reshape<shape=[3,1,1]> (flat (bn-shift<1e-5> g b m v))))",
        );
    }

    #[test]
    fn affine_moves_through_a_reshape_that_keeps_the_last_axis() {
        let l = &["x?f32[1,6,4]", "a:f32[4]", "c:f32[4]", "r:f32[6,1]"];
        check(
            l,
            &rules(),
            "(Reshape<shape=[6,4]> (affine x a c))",
            "(affine (Reshape<shape=[6,4]> x) (flat a) (flat c))",
        );
        // The last axis split: the per-column constants would land on other elements.
        check_not(
            l,
            &rules(),
            "(Reshape<shape=[1,6,2,2]> (affine x a c))",
            "(affine (Reshape<shape=[1,6,2,2]> x) (flat a) (flat c))",
        );
    }

    #[test]
    fn affine_after_conv_folds_into_it() {
        let l = &["x?f32[1,2,4,4]", "w:f32[3,2,3,3]", "cb:f32[3]", "a:f32[3,1,1]", "c:f32[3,1,1]"];
        check(
            l,
            &rules(),
            "(affine (Conv<pads=[1,1,1,1]> x w cb) a c)",
            "(Conv<pads=[1,1,1,1]> x (scale-rows w (flat a)) (fma (flat a) (flat cb) (flat c)))",
        );
    }

    #[test]
    fn affine_before_unpadded_conv_folds_backwards() {
        let l = &["z?f32[1,3,4,4]", "w:f32[2,3,3,3]", "cb:f32[2]", "a:f32[3,1,1]", "c:f32[3,1,1]"];
        check(
            l,
            &rules(),
            "(Conv (affine z a c) w cb)",
            "(Conv z (scale-cols w (flat a)) (Add cb (conv-sum w (flat c))))",
        );
    }

    #[test]
    fn negative_affine_before_zero_padded_conv_does_not_fold() {
        let l = &["z?f32[1,3,4,4]", "w:f32[2,3,3,3]", "cb:f32[2]", "a:f32[3,1,1]", "c:f32[3,1,1]"];
        check_not(
            l,
            &rules(),
            "(Conv<pads=[1,1,1,1]> (affine z a c) w cb)",
            "(Conv<pads=[1,1,1,1]> z (scale-cols w (flat a)) (Add cb (conv-sum w (flat c))))",
        );
        let padded = Op::Conv { strides: [1, 1], dilations: [1, 1], pads: [1, 1, 1, 1], group: 1 };
        assert!(!conv_without_padding(&padded));
    }

    #[test]
    fn affine_commutes_with_reflect_padding_only() {
        let l = &["z?f32[1,3,4,4]", "a:f32[3,1,1]", "c:f32[3,1,1]"];
        check(
            l,
            &rules(),
            "(Pad<mode=reflect;pads=[0,0,1,1,0,0,1,1]> (affine z a c))",
            "(affine (Pad<mode=reflect;pads=[0,0,1,1,0,0,1,1]> z) a c)",
        );
        check_not(
            l,
            &rules(),
            "(Pad<pads=[0,0,1,1,0,0,1,1]> (affine z a c))",
            "(affine (Pad<pads=[0,0,1,1,0,0,1,1]> z) a c)",
        );
    }

    #[test]
    fn affine_folds_into_matmul_both_ways() {
        let l = &["x?f32[2,4]", "w:f32[4,5]", "a:f32[5]", "c:f32[5]", "a4:f32[4]", "c4:f32[4]"];
        check(l, &rules(), "(affine (MatMul x w) a c)", "(Add (MatMul x (scale-cols w (flat a))) c)");
        check(
            l,
            &rules(),
            "(MatMul (affine x a4 c4) w)",
            "(Add (MatMul x (scale-rows w (flat a4))) (vec-mat (flat c4) w))",
        );
    }

    #[test]
    fn affine_distributes_over_a_residual_add() {
        let l = &["p?f32[2,4]", "x?f32[2,4]", "w:f32[4,4]", "a:f32[4]", "c:f32[4]"];
        check(l, &rules(), "(affine (Add p (MatMul x w)) a c)", "(Add (affine p a c) (Mul (MatMul x w) a))");
        // A composed affine (deep constants) does not distribute: it would travel back along the
        // residual stream.
        let fresh = "(fma (fma (fma (fma a a a) a a) a a) a a)";
        check(
            l,
            &rules(),
            &format!("(affine (Add p (MatMul x w)) {fresh} c)"),
            &format!("(Add (affine p {fresh} c) (Mul (MatMul x w) {fresh}))"),
        );
        let deep = "(fma (fma (fma (fma (fma a a a) a a) a a) a a) a a)";
        check_not(
            l,
            &rules(),
            &format!("(affine (Add p (MatMul x w)) {deep} c)"),
            &format!("(Add (affine p {deep} c) (Mul (MatMul x w) {deep}))"),
        );
        // Without a linear layer to fold into, the affine stays where it is.
        let l = &["p?f32[2,4]", "q?f32[2,4]", "a:f32[4]", "c:f32[4]"];
        check_not(l, &rules(), "(affine (Add p q) a c)", "(Add (affine p a c) (Mul q a))");
    }

    #[test]
    fn batchnorm1d_after_gemm_folds() {
        let l = &["x?f32[3,6]", "w:f32[4,6]", "b:f32[4]", "a:f32[4]", "c:f32[4]"];
        check(
            l,
            &rules(),
            "(affine (Gemm<transB=1> x w b) a c)",
            "(Gemm<transB=1> x (scale-rows w (flat a)) (fma (flat a) (flat b) (flat c)))",
        );
    }

    #[test]
    fn unified_norm_becomes_an_affine() {
        let l = &["x?f32[2,4]", "g:f32[4]", "b:f32[4]", "v:f32[4]"];
        check(l, &rules(), "(UnifiedNorm x g b v)", "(affine x (flat (bn-scale<1e-5> g v)) (flat b))");
    }

    #[test]
    fn negative_affine_with_runtime_scale_is_not_recognised() {
        let l = &["x?f32[2,4]", "s?f32[4]", "c:f32[4]"];
        check_not(l, &rules(), "(Add (Mul x s) c)", "(affine x s c)");
    }

    #[test]
    fn powernorm_keeps_group_scaling_and_exposes_its_affine() {
        let l = &["x?f32[2,8]", "g:f32[8]", "b:f32[8]", "v:f32[8]"];
        check(
            l,
            &rules(),
            "(PowerNorm<groups=2> x g b v)",
            "(affine (PowerNorm<epsilon=0.0;groups=2> x (fill<1.0> g) (fill<0.0> b) (fill<1.0> v)) (bn-scale<1e-5> g v) (flat b))",
        );
    }

    #[test]
    fn biases_and_affines_compose() {
        let l = &["y?f32[2,4]", "b:f32[4]", "a:f32[4]", "c:f32[4]", "a2:f32[4]", "c2:f32[4]"];
        // (No `flat(x) = x` rule for 1-D x: the extra `flat` is what keeps MAX_FOLD_DEPTH meaningful.)
        check(l, &rules(), "(affine (Add y b) a c)", "(affine y (flat a) (flat (fma (flat a) (flat b) (flat c))))");
        check(
            l,
            &rules(),
            "(affine (affine y a c) a2 c2)",
            "(affine y (flat (fma (flat a) (flat a2) (fill<0.0> (flat a)))) (flat (fma (flat c) (flat a2) (flat c2))))",
        );
    }

    #[test]
    fn affine_before_a_linear_layer_joins_its_bias() {
        let l = &["z?f32[2,4]", "w:f32[4,5]", "b:f32[5]", "a:f32[4]", "c:f32[4]"];
        check(
            l,
            &rules(),
            "(Add (MatMul (affine z a c) w) b)",
            "(Add (MatMul z (scale-rows w (flat a))) (Add (vec-mat (flat c) w) b))",
        );
    }

    #[test]
    fn affine_before_gemm_and_without_bias() {
        let l = &["z?f32[3,4]", "w:f32[5,4]", "b:f32[5]", "a:f32[4]", "c:f32[4]", "a5:f32[5]", "c5:f32[5]"];
        check(
            l,
            &rules(),
            "(Gemm<transB=1> (affine z a c) w b)",
            "(Gemm<transB=1> z (scale-cols w (flat a)) (Add b (mat-vec w (flat c))))",
        );
        check(
            l,
            &rules(),
            "(affine (Gemm<transB=1> z w) a5 c5)",
            "(Gemm<transB=1> z (scale-rows w (flat a5)) (flat c5))",
        );
        let conv = &["x?f32[1,2,4,4]", "k:f32[3,2,3,3]", "a3:f32[3,1,1]", "c3:f32[3,1,1]"];
        check(conv, &rules(), "(affine (Conv x k) a3 c3)", "(Conv x (scale-rows k (flat a3)) (flat c3))");
    }
}
