//! Attention recognition: `softmax(s·Q·Kt + bias)·V` becomes one kiln `Attention` op (scale s a
//! compile-time scalar, bias an additive mask broadcast to the scores). A division by √d arrives as
//! a multiplication by its reciprocal (`algebra::div-const`), whose value the analysis knows.

use super::{KRewrite, add_ir, fn_rule, get, is_const, numel, shallow, shape};
use crate::analysis::KGraph;
use egg::{Id, Subst};
use kiln_ir::Op;

pub fn rules() -> Vec<KRewrite> {
    vec![
        // softmax(s·Q·Kt + B)·V = Attention_s(Q, Kt, V, B)
        fn_rule("attention-scaled-bias", "(MatMul (Softmax (Add (Mul (MatMul ?q ?kt) ?s) ?bias)) ?v)", attention),
        // softmax(s·Q·Kt)·V = Attention_s(Q, Kt, V)
        fn_rule("attention-scaled", "(MatMul (Softmax (Mul (MatMul ?q ?kt) ?s)) ?v)", attention),
        // softmax(Q·Kt + B)·V = Attention_1(Q, Kt, V, B)
        fn_rule("attention-bias", "(MatMul (Softmax (Add (MatMul ?q ?kt) ?bias)) ?v)", attention),
        // softmax(Q·Kt)·V = Attention_1(Q, Kt, V)
        fn_rule("attention", "(MatMul (Softmax (MatMul ?q ?kt)) ?v)", attention),
        // torch's exported scaled_dot_product_attention: P = softmax(…), Where(IsNaN(P), 0, P)·V
        // (a fully masked row gives zeros, not NaN) = Attention with nan_to_zero.
        fn_rule(
            "attention-nan-scaled-bias",
            "(MatMul (Where (IsNaN (Softmax (Add (Mul (MatMul ?q ?kt) ?s) ?bias))) ?z \
             (Softmax (Add (Mul (MatMul ?q ?kt) ?s) ?bias))) ?v)",
            attention_nan_to_zero,
        ),
        fn_rule(
            "attention-nan-scaled",
            "(MatMul (Where (IsNaN (Softmax (Mul (MatMul ?q ?kt) ?s))) ?z (Softmax (Mul (MatMul ?q ?kt) ?s))) ?v)",
            attention_nan_to_zero,
        ),
        fn_rule(
            "attention-nan-bias",
            "(MatMul (Where (IsNaN (Softmax (Add (MatMul ?q ?kt) ?bias))) ?z (Softmax (Add (MatMul ?q ?kt) ?bias))) ?v)",
            attention_nan_to_zero,
        ),
        fn_rule(
            "attention-nan",
            "(MatMul (Where (IsNaN (Softmax (MatMul ?q ?kt))) ?z (Softmax (MatMul ?q ?kt))) ?v)",
            attention_nan_to_zero,
        ),
        // (A·s)·(B·t) = (A·B)·(s·t) for constant scalars s, t: torch scales Q and Kᵀ by d^(-1/4)
        // each before their product. Not for constant A or B (`matmul-scalar-in/out` move
        // scalars into weights the other way).
        rw!("matmul-scalars"; "(MatMul (Mul ?a ?s) (Mul ?b ?t))" => "(Mul (MatMul ?a ?b) (Mul ?s ?t))"
            if scalars_of_activations),
    ]
}

/// Both factors are constant scalars whose product is a normal f32 (or zero), that broadcast into
/// neither operand, and both operands are computed at run time.
fn scalars_of_activations(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    let [a, sv, b, t] = ["?a", "?s", "?b", "?t"].map(|n| get(s, n));
    let rank = |v: Id| shape(eg, v).map(|s| s.len());
    let fits =
        |x: Id, c: Id| is_const(eg, c) && numel(eg, c) == Some(1) && rank(c).zip(rank(x)).is_some_and(|(c, x)| c <= x);
    let value = |v: Id| eg[v].data.uniform.map(|u| u.get());
    let product_ok = match (value(sv), value(t)) {
        (Some(p), Some(q)) => p == 0.0 || q == 0.0 || (p * q).is_normal(),
        _ => false,
    };
    product_ok && fits(a, sv) && fits(b, t) && !is_const(eg, a) && !is_const(eg, b) && shallow(eg, &[sv, t])
}

/// The NaN-guarded forms: the guard's replacement must be the constant 0.
fn attention_nan_to_zero(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let z = get(s, "?z");
    if !is_const(eg, z) || eg[z].data.uniform.map(|u| u.get()) != Some(0.0) || numel(eg, z) != Some(1) {
        return None;
    }
    build_attention(eg, id, s, true)
}

fn attention(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    build_attention(eg, id, s, false)
}

fn build_attention(eg: &mut KGraph, id: Id, s: &Subst, nan_to_zero: bool) -> Option<Id> {
    let [q, kt, v] = ["?q", "?kt", "?v"].map(|n| get(s, n));
    let scale = match s.get(super::var("?s")) {
        Some(&sv) => {
            // A compile-time scalar whose value is known, that does not broadcast the scores.
            if !is_const(eg, sv) || numel(eg, sv) != Some(1) || shape(eg, sv)?.len() > 2 {
                return None;
            }
            eg[sv].data.uniform?.get()
        }
        None => 1.0,
    };
    let mut args = vec![q, kt, v];
    if let Some(&bias) = s.get(super::var("?bias")) {
        args.push(bias);
    }
    let op = Op::Attention { scale, nan_to_zero };
    // Attention's own inference checks every shape (and that the bias does not enlarge the scores);
    // the fused op must have the matched type.
    let types: Option<Vec<_>> = args.iter().map(|&a| eg[a].data.ty().cloned()).collect();
    let types = types?;
    let refs: Vec<_> = types.iter().collect();
    let out = op.infer(&refs).ok()?;
    if Some(&out[0]) != eg[id].data.ty() {
        return None;
    }
    Some(add_ir(eg, op, args))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, check_not};
    use super::super::{algebra, attention, softmax};
    use crate::rules::KRewrite;

    fn rules() -> Vec<KRewrite> {
        let mut r = attention::rules();
        r.extend(softmax::rules());
        r.extend(algebra::rules());
        r
    }

    const L: &[&str] = &["q?f32[2,4,8]", "kt?f32[2,8,6]", "v?f32[2,6,5]", "s:f32[]", "mask?f32[4,6]", "big?f32[3,4,6]"];

    #[test]
    fn scaled_masked_attention_is_fused() {
        check(
            &["q?f32[2,4,8]", "kt?f32[2,8,6]", "v?f32[2,6,5]", "mask?f32[4,6]"],
            &rules(),
            "(MatMul (Softmax (Add (MatMul q kt) mask)) v)",
            "(Attention q kt v mask)",
        );
    }

    #[test]
    fn negative_bias_that_enlarges_the_scores_is_not_fused() {
        check_not(L, &rules(), "(MatMul (Softmax (Add (MatMul q kt) big)) v)", "(Attention q kt v big)");
    }

    #[test]
    fn torch_sdpa_export_is_fused_with_its_nan_guard() {
        // torch.onnx.export of scaled_dot_product_attention: Q and Kt each ·d^(-1/4), + mask,
        // softmax, NaN → 0, ·V.
        let l = &["q?f32[2,4,8]", "kt?f32[2,8,6]", "v?f32[2,6,5]", "mask?f32[4,6]", "s:f32[]=0.5", "z:f32[]=0.0"];
        check(
            l,
            &rules(),
            "(MatMul (Where (IsNaN (Softmax (Add (MatMul (Mul q s) (Mul kt s)) mask))) z \
             (Softmax (Add (MatMul (Mul q s) (Mul kt s)) mask))) v)",
            "(Attention<scale=0.25;nan_to_zero=1> q kt v mask)",
        );
        // Without the guard's zero, no fusion with nan_to_zero.
        let l = &["q?f32[2,4,8]", "kt?f32[2,8,6]", "v?f32[2,6,5]", "mask?f32[4,6]", "z:f32[]=1.0"];
        check_not(
            l,
            &rules(),
            "(MatMul (Where (IsNaN (Softmax (Add (MatMul q kt) mask))) z (Softmax (Add (MatMul q kt) mask))) v)",
            "(Attention<nan_to_zero=1> q kt v mask)",
        );
        // A guard over a different softmax than the one it selects from is not the same op.
        let l = &["q?f32[2,4,8]", "kt?f32[2,8,6]", "v?f32[2,6,5]", "mask?f32[4,6]", "z:f32[]=0.0"];
        check_not(
            l,
            &rules(),
            "(MatMul (Where (IsNaN (Softmax (Add (MatMul q kt) mask))) z (Softmax (MatMul q kt))) v)",
            "(Attention<nan_to_zero=1> q kt v mask)",
        );
    }

    #[test]
    fn scaled_attention_without_mask_is_fused() {
        // 1/8 = 0.125 exactly: the scale attribute is the reciprocal the analysis computed.
        check(
            &["q?f32[2,4,8]", "kt?f32[2,8,6]", "v?f32[2,6,5]", "d:f32[]"],
            &rules(),
            "(MatMul (Softmax (Div (MatMul q kt) (fill<8.0> d))) v)",
            "(Attention<scale=0.125> q kt v)",
        );
        // A scale whose value is not known at compile time is not fused.
        check_not(
            &["q?f32[2,4,8]", "kt?f32[2,8,6]", "v?f32[2,6,5]", "d?f32[]"],
            &rules(),
            "(MatMul (Softmax (Div (MatMul q kt) d)) v)",
            "(Attention q kt v)",
        );
        check(
            &["q?f32[2,4,8]", "kt?f32[2,8,6]", "v?f32[2,6,5]"],
            &rules(),
            "(MatMul (Softmax (MatMul q kt)) v)",
            "(Attention q kt v)",
        );
    }
}
