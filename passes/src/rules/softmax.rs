//! Softmax recognition: `exp(x − max x)/Σ exp(x − max x)` (ONNX's expanded Softmax-13 body),
//! `exp(x)/Σ exp(x)`, and a row normalisation applied after a matrix product (as the graph
//! transformer writes `Σⱼ P V / Σⱼ P`). Reductions must be over the last axis with keepdims, which
//! `algebra`'s canonical-axis rules spell `axes=[-1]`.

use super::{KRewrite, get, shape};
use crate::analysis::KGraph;
use egg::{Id, Subst};

pub fn rules() -> Vec<KRewrite> {
    vec![
        // exp(x − max x) / Σ exp(x − max x) = softmax(x)
        rw!("softmax-stable";
            "(Div (Exp (Sub ?x (ReduceMax<axes=[-1]> ?x))) (ReduceSum<axes=[-1]> (Exp (Sub ?x (ReduceMax<axes=[-1]> ?x)))))"
            => "(Softmax ?x)"),
        // exp(x) / Σ exp(x) = softmax(x)   (the max-subtracted form is never less accurate)
        rw!("softmax-plain"; "(Div (Exp ?x) (ReduceSum<axes=[-1]> (Exp ?x)))" => "(Softmax ?x)"),
        // (P·V) / d = (P / d)·V   for d constant along the last axis (one divisor per row)
        rw!("row-div-into-matmul"; "(Div (MatMul ?p ?v) ?d)" => "(MatMul (Div ?p ?d) ?v)" if row_divisor),
    ]
}

/// Rules that introduce the kiln-domain MaskedSoftmax op (off when a backend lacks it).
pub fn fused_rules() -> Vec<KRewrite> {
    vec![
        // exp(x)·M / Σ exp(x)·M = masked-softmax(x, M)   (the graph transformer's attention weights)
        rw!("masked-softmax"; "(Div (Mul (Exp ?x) ?m) (ReduceSum<axes=[-1]> (Mul (Exp ?x) ?m)))" => "(MaskedSoftmax ?x ?m)"
            if mask_fits),
    ]
}

/// The mask broadcasts into x without enlarging it.
fn mask_fits(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    let (x, m) = (get(s, "?x"), get(s, "?m"));
    match (shape(eg, x), shape(eg, m)) {
        (Some(xs), Some(ms)) => {
            !xs.is_empty() && kiln_ir::ops::broadcast::broadcast_shapes(&xs, &ms).is_ok_and(|b| b == xs)
        }
        _ => false,
    }
}

/// ?d has one value per row of ?p (last dimension 1, same rank), ?v is a matrix (a 1-D ?v makes
/// each row of ?p one element of the product, not a row), and dividing keeps the product's type.
fn row_divisor(eg: &mut KGraph, id: Id, s: &Subst) -> bool {
    let (p, v, d) = (get(s, "?p"), get(s, "?v"), get(s, "?d"));
    let Some(product) = eg.lookup(kiln_ir_matmul(p, v)) else { return false };
    if eg[product].data.ty().is_none() || eg[product].data.ty() != eg[id].data.ty() {
        return false;
    }
    match (shape(eg, p), shape(eg, v), shape(eg, d)) {
        (Some(ps), Some(vs), Some(ds)) => {
            ps.len() >= 2
                && vs.len() >= 2
                && ds.len() == ps.len()
                && ds.last() == Some(&1)
                && ds[..ds.len() - 1].iter().zip(&ps[..ps.len() - 1]).all(|(a, b)| a == b || *a == 1)
        }
        _ => false,
    }
}

fn kiln_ir_matmul(p: Id, v: Id) -> crate::lang::Kiln {
    crate::lang::Kiln::ir(kiln_ir::Op::MatMul, vec![p, v])
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, check_not};
    use super::super::{algebra, softmax};
    use crate::rules::KRewrite;

    fn rules() -> Vec<KRewrite> {
        let mut r = softmax::rules();
        r.extend(softmax::fused_rules());
        r.extend(algebra::rules());
        r
    }

    const L: &[&str] = &["x?f32[2,3,4]", "v?f32[2,4,5]", "m?f32[2,3,4]"];

    #[test]
    fn softmax_forms_are_recognised() {
        check(
            L,
            &rules(),
            "(Div (Exp (Sub x (ReduceMax<axes=[2]> x))) (ReduceSum<axes=[2]> (Exp (Sub x (ReduceMax<axes=[2]> x)))))",
            "(Softmax x)",
        );
        check(L, &rules(), "(Div (Exp x) (ReduceSum<axes=[-1]> (Exp x)))", "(Softmax x)");
        check(L, &rules(), "(Mul (Exp x) (Reciprocal (ReduceSum<axes=[-1]> (Exp x))))", "(Softmax x)");
        check(L, &rules(), "(Div (MatMul (Exp x) v) (ReduceSum<axes=[-1]> (Exp x)))", "(MatMul (Softmax x) v)");
        check(
            L,
            &rules(),
            "(Div (MatMul (Mul (Exp (Clip<max=5.0;min=-5.0> x)) m) v) (ReduceSum<axes=[-1]> (Mul (Exp (Clip<max=5.0;min=-5.0> x)) m)))",
            "(MatMul (MaskedSoftmax (Clip<max=5.0;min=-5.0> x) m) v)",
        );
    }

    #[test]
    fn negative_row_division_does_not_move_into_a_matrix_vector_product() {
        // Regression (issue 11): [1,4,4]·[4] is [1,4]; dividing by a [1,4,1] broadcasts it to
        // [1,4,4]. The rule merged the [1,4,4] quotient with the [1,4] product.
        let l = &["p?f32[1,4,4]", "v?f32[4]", "d?f32[1,4,1]"];
        check_not(l, &rules(), "(Div (MatMul p v) d)", "(MatMul (Div p d) v)");
        // The same division after a matrix product moves.
        let l = &["p?f32[1,4,4]", "v?f32[4,3]", "d?f32[1,4,1]"];
        check(l, &rules(), "(Div (MatMul p v) d)", "(MatMul (Div p d) v)");
    }

    #[test]
    fn negative_wrong_axis_or_keepdims_is_not_softmax() {
        check_not(L, &rules(), "(Div (Exp x) (ReduceSum<axes=[1]> (Exp x)))", "(Softmax x)");
        check_not(L, &rules(), "(Div (Exp x) (ReduceSum<axes=[-1]> (Exp m)))", "(Softmax x)");
    }
}
