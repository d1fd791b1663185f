//! Pre-LN → Pre-RMSNorm (Jiang et al. 2023). LayerNorm is invariant to re-centring its input,
//! `LN(x) = LN(center(x))`; `center` distributes over the sums that build a residual stream and
//! moves into the weights that write to it (`center-last`, over the output dimension). Where that
//! proves the input zero-mean, `LN = RMSNorm` (same ε). The LN's γ/β first become an affine that
//! folds into its consumers (`norm_fold`), leaving a parameter-free norm.
//!
//! `center(x)` of a run-time value costs infinity: the RMSNorm form is extracted only where every
//! write to the stream was re-centred at compile time. A per-channel gate on a write (adaLN-Zero)
//! has no `center` rule, so its stream never becomes provably zero-mean and the LN stays.

use super::{
    KRewrite, add_fold, add_ir, add_meta, fn_rule, get, has_term, is_const, is_uniform, norm_axis, numel, shape,
};
use crate::analysis::KGraph;
use crate::lang::{F32Bits, FoldOp, KOp, MetaOp, find_ir_op};
use egg::{Id, Subst};
use kiln_ir::{BinaryOp, Op};

pub fn rules() -> Vec<KRewrite> {
    vec![
        // LN(x, γ, β) = LN(x, 1)·γ + β
        fn_rule("ln-affine-out", "(LayerNormalization* ?x ?g ?b)", ln_affine_out),
        fn_rule("ln-affine-out-nobias", "(LayerNormalization* ?x ?g)", ln_affine_out),
        // LN(x) = LN(center(x))
        fn_rule("ln-center", "(LayerNormalization* ?x ?g)", ln_center),
        fn_rule("ln-center-bias", "(LayerNormalization* ?x ?g ?b)", ln_center),
        // LN(x) = RMSNorm(x)   when x is zero-mean along the normalised (last) axis
        fn_rule("ln-to-rms", "(LayerNormalization* ?x ?g)", ln_to_rms),
        fn_rule("ln-to-rms-bias", "(LayerNormalization* ?x ?g ?b)", ln_to_rms),
        // center(a + b) = center(a) + center(b)
        rw!("center-add"; "(center (Add ?a ?b))" => "(Add (center ?a) (center ?b))" if same_last_dim),
        // center(a − b) = center(a) − center(b)
        rw!("center-sub"; "(center (Sub ?a ?b))" => "(Sub (center ?a) (center ?b))" if same_last_dim),
        // center(x·s) = center(x)·s   for s constant along the last axis
        rw!("center-row-scale"; "(center (Mul ?a ?b))" => "(Mul (center ?a) ?b)" if row_factor_b),
        // center(x·W) = x·center-last(W)
        rw!("center-matmul"; "(center (MatMul ?a ?b))" => "(MatMul ?a (center-last ?b))" if const_matrix_b),
        // center(Gemm(x, W, b)) = Gemm(x, center_out(W), center(b))
        fn_rule("center-gemm", "(center (Gemm* ?x ?w ?b))", center_gemm),
        // center(E[i]) = center-last(E)[i]
        rw!("center-gather"; "(center (Gather ?a ?b))" => "(Gather (center-last ?a) ?b)" if const_matrix_a),
        // center(reshape(y)) = reshape(center(y))   when the last dimension is kept (rows stay whole)
        fn_rule("center-reshape", "(center (Reshape* ?a))", center_reshape),
        // center(concat(a, b)) = concat(center(a), center(b))   along an axis other than the last
        fn_rule("center-concat", "(center (Concat* ?a ?b))", center_concat),
        // center(tokens(Conv(x, W, b))) = tokens(Conv(x, center_out(W), center(b)))   where
        // tokens = Transpose[0,2,1]∘Reshape[N,C,HW] puts the conv's channels last (ViT patch embedding)
        fn_rule("center-conv-tokens", "(center (Transpose* (Reshape* (Conv* ?x ?w ?b))))", center_conv_tokens),
        // center(W) = center-last(W)   for a constant
        rw!("center-const"; "(center ?a)" => "(center-last ?a)" if const_a),
        // center(x) = x   when x is zero-mean
        rw!("center-zero-mean"; "(center ?a)" => "?a" if zero_mean_a),
    ]
}

fn last_axis_op(eg: &KGraph, id: Id, s: &Subst, vars: &[&str]) -> Option<Op> {
    let args: Vec<Id> = vars.iter().map(|v| get(s, v)).collect();
    let op = find_ir_op(eg, id, "LayerNormalization", &args)?;
    let Op::LayerNormalization { axis, .. } = op else { return None };
    let rank = shape(eg, args[0])?.len();
    (norm_axis(axis, rank)? + 1 == rank).then_some(op)
}

fn vars_of(s: &Subst) -> &'static [&'static str] {
    if s.get(super::var("?b")).is_some() { &["?x", "?g", "?b"] } else { &["?x", "?g"] }
}

fn ln_affine_out(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let vars = vars_of(s);
    let op = last_axis_op(eg, id, s, vars)?;
    let (x, g) = (get(s, "?x"), get(s, "?g"));
    let b = s.get(super::var("?b")).copied();
    let d = *shape(eg, x)?.last()?;
    // The parameter-free LN this rule produces is its own fixed point.
    if b.is_none() && is_uniform(eg, g, 1.0) {
        return None;
    }
    if !is_const(eg, g) || numel(eg, g)? != d || b.is_some_and(|b| !is_const(eg, b) || numel(eg, b) != Some(d)) {
        return None;
    }
    let one = add_fold(eg, FoldOp::Fill(F32Bits::new(1.0)), vec![g]);
    let bare = add_ir(eg, op, vec![x, one]);
    let a = add_fold(eg, FoldOp::Flat, vec![g]);
    let c = match b {
        Some(b) => add_fold(eg, FoldOp::Flat, vec![b]),
        None => add_fold(eg, FoldOp::Fill(F32Bits::new(0.0)), vec![a]),
    };
    Some(add_meta(eg, MetaOp::Affine, vec![bare, a, c]))
}

fn ln_center(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let vars = vars_of(s);
    let op = last_axis_op(eg, id, s, vars)?;
    let x = get(s, "?x");
    if has_term(eg, x, &KOp::Meta(MetaOp::Center)) || eg[x].data.zero_mean {
        return None;
    }
    let centered = add_meta(eg, MetaOp::Center, vec![x]);
    let mut args = vec![centered];
    args.extend(vars[1..].iter().map(|v| get(s, v)));
    Some(add_ir(eg, op, args))
}

fn ln_to_rms(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let vars = vars_of(s);
    let Op::LayerNormalization { axis, epsilon } = last_axis_op(eg, id, s, vars)? else { return None };
    let x = get(s, "?x");
    if !eg[x].data.zero_mean {
        return None;
    }
    let rms = add_ir(eg, Op::RmsNormalization { axis, epsilon }, vec![x, get(s, "?g")]);
    match s.get(super::var("?b")) {
        Some(&b) => Some(add_ir(eg, Op::Binary(BinaryOp::Add), vec![rms, b])),
        None => Some(rms),
    }
}

fn center_gemm(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let [x, w, b] = ["?x", "?w", "?b"].map(|n| get(s, n));
    let inner = eg[id].nodes.iter().find_map(|n| match n {
        crate::lang::Kiln::Node(KOp::Meta(MetaOp::Center), c) => find_ir_op(eg, c[0], "Gemm", &[x, w, b]),
        _ => None,
    })?;
    let Op::Gemm { trans_a: false, trans_b, .. } = inner else { return None };
    let (ws, bs) = (shape(eg, w)?, shape(eg, b)?);
    let out = if trans_b { ws[0] } else { ws[1] };
    if !is_const(eg, w) || !is_const(eg, b) || ws.len() != 2 || bs.last() != Some(&out) {
        return None;
    }
    let w2 = add_fold(eg, if trans_b { FoldOp::CenterRows } else { FoldOp::CenterLast }, vec![w]);
    let b2 = add_fold(eg, FoldOp::CenterLast, vec![b]);
    Some(add_ir(eg, inner, vec![x, w2, b2]))
}

/// The child of the `center` node in class `id`.
fn centred_child(eg: &KGraph, id: Id) -> Vec<Id> {
    eg[id]
        .nodes
        .iter()
        .filter_map(|n| match n {
            crate::lang::Kiln::Node(KOp::Meta(MetaOp::Center), c) => Some(c[0]),
            _ => None,
        })
        .collect()
}

fn center_reshape(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let a = get(s, "?a");
    let inner = centred_child(eg, id).into_iter().find_map(|c| find_ir_op(eg, c, "Reshape", &[a]))?;
    let out = shape(eg, id)?;
    let last_in = *shape(eg, a)?.last()?;
    if out.last() != Some(&last_in) || is_const(eg, a) {
        return None;
    }
    let centred = add_meta(eg, MetaOp::Center, vec![a]);
    Some(add_ir(eg, inner, vec![centred]))
}

fn center_concat(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (a, b) = (get(s, "?a"), get(s, "?b"));
    let inner = centred_child(eg, id).into_iter().find_map(|c| find_ir_op(eg, c, "Concat", &[a, b]))?;
    let Op::Concat { axis } = inner else { return None };
    let rank = shape(eg, id)?.len();
    if norm_axis(axis, rank)? + 1 == rank {
        return None;
    }
    let (ca, cb) = (add_meta(eg, MetaOp::Center, vec![a]), add_meta(eg, MetaOp::Center, vec![b]));
    Some(add_ir(eg, inner, vec![ca, cb]))
}

fn center_conv_tokens(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let [x, w, b] = ["?x", "?w", "?b"].map(|n| get(s, n));
    let (ws, bs) = (shape(eg, w)?, shape(eg, b)?);
    if !is_const(eg, w) || !is_const(eg, b) || ws.len() != 4 || bs != [ws[0]] {
        return None;
    }
    for t in centred_child(eg, id) {
        let transposes: Vec<(Op, Id)> =
            crate::lang::ir_nodes(eg, t, "Transpose").map(|(op, c)| (op.clone(), c[0])).collect();
        for (tr, r) in transposes {
            if !matches!(&tr, Op::Transpose { perm: Some(p) } if p == &[0, 2, 1]) {
                continue;
            }
            let reshapes: Vec<(Op, Id)> =
                crate::lang::ir_nodes(eg, r, "Reshape").map(|(op, c)| (op.clone(), c[0])).collect();
            for (re, y) in reshapes {
                // Grouped channels see different inputs: their mean is no single weight row.
                let Some(conv @ Op::Conv { group: 1, .. }) = find_ir_op(eg, y, "Conv", &[x, w, b]) else { continue };
                let (ys, rs) = (shape(eg, y)?, shape(eg, r)?);
                // [N, M, H, W] → [N, M, H·W]: each channel's plane flattened, channels kept on axis 1.
                if ys.len() != 4 || rs != [ys[0], ys[1], ys[2] * ys[3]] {
                    continue;
                }
                let w2 = add_fold(eg, FoldOp::CenterRows, vec![w]);
                let b2 = add_fold(eg, FoldOp::CenterLast, vec![b]);
                let conv2 = add_ir(eg, conv, vec![x, w2, b2]);
                let re2 = add_ir(eg, re, vec![conv2]);
                return Some(add_ir(eg, tr, vec![re2]));
            }
        }
    }
    None
}

/// Neither operand broadcasts along the last axis (their last dimensions are equal).
fn same_last_dim(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    let last = |v: &str| shape(eg, get(s, v)).and_then(|s| s.last().copied());
    last("?a").is_some() && last("?a") == last("?b")
}

/// ?b is the same across the last axis (a scalar or per-row factor).
fn row_factor_b(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    let a_ok = shape(eg, get(s, "?a")).is_some_and(|s| !s.is_empty());
    a_ok && shape(eg, get(s, "?b")).is_some_and(|s| s.last().is_none_or(|&d| d == 1))
}

fn const_matrix(eg: &KGraph, id: Id) -> bool {
    is_const(eg, id) && shape(eg, id).is_some_and(|s| s.len() == 2)
}

fn const_matrix_a(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    const_matrix(eg, get(s, "?a"))
}

fn const_matrix_b(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    const_matrix(eg, get(s, "?b"))
}

fn const_a(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    is_const(eg, get(s, "?a")) && shape(eg, get(s, "?a")).is_some_and(|s| !s.is_empty())
}

fn zero_mean_a(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    eg[get(s, "?a")].data.zero_mean
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, check_not};
    use super::super::{algebra, ln_rms, norm_fold};
    use crate::rules::KRewrite;

    fn rules() -> Vec<KRewrite> {
        let mut r = ln_rms::rules();
        r.extend(norm_fold::rules());
        r.extend(algebra::rules());
        r
    }

    const L: &[&str] = &["ids?i64[3]", "e:f32[10,8]", "w:f32[8,8]", "y?f32[3,8]", "g:f32[8]", "gate?f32[3,8]"];

    #[test]
    fn recentred_stream_makes_ln_an_rmsnorm() {
        check(
            &["ids?i64[3]", "e:f32[10,8]", "w:f32[8,8]", "y?f32[3,8]", "g:f32[8]"],
            &rules(),
            "(LayerNormalization (Add (Gather e ids) (MatMul y w)) g)",
            "(RMSNormalization (Add (Gather (center-last e) ids) (MatMul y (center-last w))) g)",
        );
    }

    #[test]
    fn ln_of_a_constant_sum_is_centred() {
        check(L, &rules(), "(center (MatMul y w))", "(MatMul y (center-last w))");
        check(L, &rules(), "(center (center-last w))", "(center-last w)");
    }

    #[test]
    fn centring_passes_reshapes_around_a_gemm() {
        let l =
            &["ids?i64[1,6]", "wte:f32[20,12]", "wpe:f32[6,12]", "g:f32[12]", "b:f32[12]", "w:f32[12,12]", "c:f32[12]"];
        check(
            l,
            &rules(),
            "(center (Add (Gather wte ids) wpe))",
            "(Add (Gather (center-last wte) ids) (center-last wpe))",
        );
        check(
            l,
            &rules(),
            "(center (Reshape<shape=[1,6,12]> (Gemm (Reshape<shape=[6,12]> (Gather wte ids)) w c)))",
            "(Reshape<shape=[1,6,12]> (Gemm (Reshape<shape=[6,12]> (Gather wte ids)) (center-last w) (center-last c)))",
        );
    }

    #[test]
    fn centring_moves_into_gemm_weights() {
        let l = &["y?f32[3,8]", "wt:f32[8,8]", "b:f32[8]"];
        check(l, &rules(), "(center (Gemm<transB=1> y wt b))", "(Gemm<transB=1> y (center-rows wt) (center-last b))");
    }

    #[test]
    fn negative_gated_residual_stream_is_not_converted() {
        check_not(
            L,
            &rules(),
            "(LayerNormalization (Add (Gather e ids) (Mul (MatMul y w) gate)) g)",
            "(RMSNormalization (Add (Gather (center-last e) ids) (Mul (MatMul y (center-last w)) gate)) g)",
        );
    }

    #[test]
    fn negative_ln_of_an_input_is_not_converted() {
        check_not(L, &rules(), "(LayerNormalization y g)", "(RMSNormalization y g)");
    }

    #[test]
    fn centring_distributes_over_differences_and_row_scales() {
        let l = &["y?f32[3,8]", "w:f32[8,8]", "v:f32[8,8]", "s:f32[3,1]"];
        check(
            l,
            &rules(),
            "(center (Sub (MatMul y w) (MatMul y v)))",
            "(Sub (MatMul y (center-last w)) (MatMul y (center-last v)))",
        );
        check(l, &rules(), "(center (Mul (MatMul y w) s))", "(Mul (MatMul y (center-last w)) s)");
    }
}
