//! Constant scalar multipliers folded into weights: LayerNorm Scaling's 1/√ℓ on a norm's output
//! (γ ← γ/√ℓ), muP-style multipliers and residual scales on a Linear's input or output. A divisor
//! arrives here as a multiplier by its reciprocal (`algebra::div-const`).

use super::{KRewrite, fn_rule, get, is_const, numel, shape};
use crate::analysis::KGraph;
use egg::{Id, Subst, rewrite as rw};

pub fn rules() -> Vec<KRewrite> {
    vec![
        // LN(x, γ, β)·s = LN(x, γ·s, β·s)
        fn_rule("ln-scalar", "(Mul (LayerNormalization* ?x ?g ?b) ?s)", norm_scalar),
        fn_rule("ln-scalar-nobias", "(Mul (LayerNormalization* ?x ?g) ?s)", norm_scalar),
        // RMSNorm(x, γ)·s = RMSNorm(x, γ·s)
        fn_rule("rms-scalar", "(Mul (RMSNormalization* ?x ?g) ?s)", norm_scalar),
        // (x·W)·s = x·(W·s)
        rw!("matmul-scalar-out"; "(Mul (MatMul ?x ?w) ?s)" => "(MatMul ?x (Mul ?w ?s))" if scalar_keeps_type("?s")),
        // (x·s)·W = x·(W·s)
        rw!("matmul-scalar-in"; "(MatMul (Mul ?x ?s) ?w)" => "(MatMul ?x (Mul ?w ?s))" if scalar_on_weight),
        // (x·s)·t = x·(s·t)
        rw!("scalar-scalar"; "(Mul (Mul ?x ?s) ?t)" => "(Mul ?x (Mul ?s ?t))" if two_scalars),
        // affine(x, a, c)·s = affine(x, a·s, c·s)
        rw!("affine-scalar"; "(Mul (affine ?x ?a ?c) ?s)" => "(affine ?x (Mul ?a ?s) (Mul ?c ?s))"
            if scalar_keeps_type("?s")),
    ]
}

fn is_scalar_const(eg: &KGraph, id: Id) -> bool {
    is_const(eg, id) && numel(eg, id) == Some(1)
}

/// ?s is a constant scalar and multiplying by it keeps the matched term's type.
fn scalar_keeps_type(s_var: &'static str) -> impl Fn(&mut KGraph, Id, &Subst) -> bool {
    move |eg, id, s| {
        let sv = get(s, s_var);
        let rank = eg[id].data.shape().map(|s| s.len());
        is_scalar_const(eg, sv) && rank.is_some_and(|r| shape(eg, sv).is_some_and(|s| s.len() <= r.min(1)))
    }
}

fn scalar_on_weight(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    let (sv, w) = (get(s, "?s"), get(s, "?w"));
    is_scalar_const(eg, sv)
        && is_const(eg, w)
        && shape(eg, sv).is_some_and(|s| s.len() <= 1)
        && shape(eg, w).is_some_and(|s| s.len() == 2)
}

fn two_scalars(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    let [x, sv, t] = ["?x", "?s", "?t"].map(|n| get(s, n));
    !is_const(eg, x)
        && is_scalar_const(eg, sv)
        && is_scalar_const(eg, t)
        && [sv, t].iter().all(|&v| shape(eg, v).is_some_and(|s| s.len() <= 1))
}

/// Norm(x, γ[, β])·s = Norm(x, γ·s[, β·s]).
fn norm_scalar(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (x, g, sv) = (get(s, "?x"), get(s, "?g"), get(s, "?s"));
    let b = s.get(super::var("?b")).copied();
    if !scalar_keeps_type("?s")(eg, id, s) {
        return None;
    }
    let args: Vec<Id> = [x, g].into_iter().chain(b).collect();
    let op = eg[id].nodes.iter().find_map(|n| match n {
        crate::lang::Kiln::Node(crate::lang::KOp::Ir(m), c) if m.name() == "Mul" => {
            let inner = c[0];
            ["LayerNormalization", "RMSNormalization"]
                .iter()
                .find_map(|name| crate::lang::find_ir_op(eg, inner, name, &args))
        }
        _ => None,
    })?;
    let mul = kiln_ir::Op::Binary(kiln_ir::BinaryOp::Mul);
    let mut new_args = vec![x, super::add_ir(eg, mul.clone(), vec![g, sv])];
    if let Some(b) = b {
        new_args.push(super::add_ir(eg, mul, vec![b, sv]));
    }
    Some(super::add_ir(eg, op, new_args))
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use super::super::{algebra, scaling};
    use crate::rules::KRewrite;

    fn rules() -> Vec<KRewrite> {
        let mut r = scaling::rules();
        r.extend(algebra::rules());
        r
    }

    const L: &[&str] = &["x?f32[2,4]", "g:f32[4]", "b:f32[4]", "w:f32[4,4]", "s:f32[]"];

    #[test]
    fn scalars_fold_into_norm_parameters_and_weights() {
        check(L, &rules(), "(Mul (LayerNormalization x g b) s)", "(LayerNormalization x (Mul g s) (Mul b s))");
        check(L, &rules(), "(Div (LayerNormalization x g) s)", "(LayerNormalization x (Mul g (Reciprocal s)))");
        check(L, &rules(), "(Mul (MatMul x w) s)", "(MatMul x (Mul w s))");
        check(L, &rules(), "(MatMul (Mul x s) w)", "(MatMul x (Mul w s))");
    }

    #[test]
    fn more_scalar_folds() {
        let l = &["x?f32[2,4]", "g:f32[4]", "s:f32[]", "t:f32[1]", "a:f32[4]", "c:f32[4]"];
        check(l, &rules(), "(Mul (RMSNormalization x g) s)", "(RMSNormalization x (Mul g s))");
        check(l, &rules(), "(Mul (Mul x s) t)", "(Mul x (Mul s t))");
        check(l, &rules(), "(Mul (affine x a c) s)", "(affine x (Mul a s) (Mul c s))");
    }
}
