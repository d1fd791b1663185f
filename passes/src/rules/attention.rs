//! Attention recognition: `softmax(s·Q·Kt + bias)·V` becomes one kiln `Attention` op (scale s a
//! compile-time scalar, bias an additive mask broadcast to the scores). A division by √d arrives as
//! a multiplication by its reciprocal (`algebra::div-const`), whose value the analysis knows.

use super::{KRewrite, add_ir, fn_rule, get, is_const, numel, shape};
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
    ]
}

fn attention(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
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
    let op = Op::Attention { scale };
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
