//! Constant scalar multipliers folded into weights: LayerNorm Scaling's 1/√ℓ on a norm's output
//! (γ ← γ/√ℓ), muP-style multipliers and residual scales on a Linear's input or output. A divisor
//! arrives here as a multiplier by its reciprocal (`algebra::div-const`).

use super::{KRewrite, fn_rule, get, is_const, numel, shallow, shape};
use crate::analysis::KGraph;
use egg::{Id, Subst};

pub fn rules() -> Vec<KRewrite> {
    vec![
        // LN(x, γ, β)·s = LN(x, γ·s, β·s)
        fn_rule("ln-scalar", "(Mul (LayerNormalization* ?x ?g ?b) ?s)", norm_scalar),
        fn_rule("ln-scalar-nobias", "(Mul (LayerNormalization* ?x ?g) ?s)", norm_scalar),
        // RMSNorm(x, γ)·s = RMSNorm(x, γ·s)
        fn_rule("rms-scalar", "(Mul (RMSNormalization* ?x ?g) ?s)", norm_scalar),
        // (x·W)·s = x·(W·s)
        rw!("matmul-scalar-out"; "(Mul (MatMul ?x ?w) ?s)" => "(MatMul ?x (Mul ?w ?s))" if scalar_out_of_matmul),
        // (x·s)·W = x·(W·s)
        rw!("matmul-scalar-in"; "(MatMul (Mul ?x ?s) ?w)" => "(MatMul ?x (Mul ?w ?s))" if scalar_on_weight),
        // (x·s)·t = x·(s·t)
        rw!("scalar-scalar"; "(Mul (Mul ?x ?s) ?t)" => "(Mul ?x (Mul ?s ?t))" if two_scalars),
        // affine(x, a, c)·s = affine(x, a·s, c·s)
        rw!("affine-scalar"; "(Mul (affine ?x ?a ?c) ?s)" => "(affine ?x (Mul ?a ?s) (Mul ?c ?s))"
            if scalar_out_of_affine),
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

/// Every rule here builds a constant (W·s, s·t, γ·s) and so checks that its inputs are
/// [`shallow`]: multiplications by constants can form a cycle of e-classes (x = (x·2)·½ after
/// `div-const`, `scalar-scalar` and `mul-one`), around which a constant could otherwise be
/// multiplied again every iteration, W·½·2·½·…, without end.
///
/// Whether the class of `op(args)` is `id` itself: the multiplication matched is one of the
/// spellings `y = y·1` that `mul-one` leaves in y's class. Moving that ·1 into a constant builds a
/// new constant and the same match again, one iteration after another (the runaway compile of
/// `(x·2)/2`): rules that build constants never fire over such a cycle.
fn over_cycle(eg: &KGraph, op: kiln_ir::Op, args: Vec<Id>, id: Id) -> bool {
    eg.lookup(crate::lang::Kiln::ir(op, args)).is_some_and(|c| eg.find(c) == eg.find(id))
}

const MUL: kiln_ir::Op = kiln_ir::Op::Binary(kiln_ir::BinaryOp::Mul);

/// ?w is a constant (the product W·s is folded, and a fold that overflows or underflows to zero is
/// refused at fold time, docs/ops.md): moved onto a runtime operand, s·w is computed at run time
/// and may underflow where (x·w)·s does not — x = −∞, w = 1e-30, s = 1e-30 is −∞ as written and
/// −∞·0 = NaN after the move (soak seed 126058016).
fn scalar_out_of_matmul(eg: &mut KGraph, id: Id, s: &Subst) -> bool {
    let (x, w) = (get(s, "?x"), get(s, "?w"));
    is_const(eg, w)
        && scalar_keeps_type("?s")(eg, id, s)
        && shallow(eg, &[w, get(s, "?s")])
        && !over_cycle(eg, kiln_ir::Op::MatMul, vec![x, w], id)
}

/// Not over a neutral-element cycle either: an `affine(x, a, c)` in x's own class (x = x·1 + 0,
/// which `affine-recognise` finds once `mul-one` and `add-zero` have put x·1 and x + 0 in x's
/// class), nor a product that lands in x's class (x·s = x over the ·1 cycle of `(x·½)/½`). Scaling
/// such an identity affine builds a·s, a·s·t, … for every pair of the cycle's scalars, each a new
/// constant and a new match: x + 1e30 − 1e30 beside x·½/½ filled the node limit (difftest seed 2585).
fn scalar_out_of_affine(eg: &mut KGraph, id: Id, s: &Subst) -> bool {
    let [x, a, c] = ["?x", "?a", "?c"].map(|n| get(s, n));
    let affine = eg.lookup(crate::lang::Kiln::Node(crate::lang::KOp::Meta(crate::lang::MetaOp::Affine), vec![x, a, c]));
    let (x_class, id) = (eg.find(x), eg.find(id));
    scalar_keeps_type("?s")(eg, id, s)
        && shallow(eg, &[a, c, get(s, "?s")])
        && x_class != id
        && affine.is_some_and(|a| {
            let a = eg.find(a);
            a != id && a != x_class
        })
}

fn scalar_on_weight(eg: &mut KGraph, _: Id, s: &Subst) -> bool {
    let (x, sv, w) = (get(s, "?x"), get(s, "?s"), get(s, "?w"));
    // (x·s with x·s = x: the ·1 cycle, see `over_cycle`.)
    !over_cycle(eg, MUL, vec![x, sv], x)
        && shallow(eg, &[w, sv])
        && is_scalar_const(eg, sv)
        && is_const(eg, w)
        && shape(eg, sv).is_some_and(|s| s.len() <= 1)
        && shape(eg, w).is_some_and(|s| s.len() == 2)
}

/// Two constant scalars whose product is representable: finite and, unless a factor is zero, a
/// normal f32 (1e38·1e38 = +inf, 1e-30·1e-30 underflows: such a product is never created). Not when
/// ?x is the matched class itself (x = x·c from `mul-one`: composing constants over that cycle
/// would build c·c, c·c·c, … without end).
fn two_scalars(eg: &mut KGraph, id: Id, s: &Subst) -> bool {
    let [x, sv, t] = ["?x", "?s", "?t"].map(|n| get(s, n));
    let value = |v: Id| eg[v].data.uniform.map(|u| u.get());
    let product_ok = match (value(sv), value(t)) {
        (Some(a), Some(b)) => a == 0.0 || b == 0.0 || (a * b).is_normal(),
        _ => false,
    };
    let inner = eg.lookup(crate::lang::Kiln::ir(MUL, vec![x, sv])).map(|c| eg.find(c));
    product_ok
        && shallow(eg, &[sv, t])
        && eg.find(x) != eg.find(id)
        && inner.is_some_and(|c| c != eg.find(x) && c != eg.find(id))
        && !is_const(eg, x)
        && is_scalar_const(eg, sv)
        && is_scalar_const(eg, t)
        && [sv, t].iter().all(|&v| shape(eg, v).is_some_and(|s| s.len() <= 1))
}

/// Norm(x, γ[, β])·s = Norm(x, γ·s[, β·s]).
fn norm_scalar(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (x, g, sv) = (get(s, "?x"), get(s, "?g"), get(s, "?s"));
    let b = s.get(super::var("?b")).copied();
    if !scalar_keeps_type("?s")(eg, id, s) || !shallow(eg, &[g, sv]) || b.is_some_and(|b| !shallow(eg, &[b])) {
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
    // Over the ·1 cycle of the norm's own class (see `over_cycle`), γ·1·1·… would never end.
    if over_cycle(eg, op.clone(), args.clone(), id) {
        return None;
    }
    let mul = MUL;
    let mut new_args = vec![x, super::add_ir(eg, mul.clone(), vec![g, sv])];
    if let Some(b) = b {
        new_args.push(super::add_ir(eg, mul, vec![b, sv]));
    }
    Some(super::add_ir(eg, op, new_args))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, check_not};
    use super::super::{algebra, scaling};
    use crate::rules::KRewrite;

    fn rules() -> Vec<KRewrite> {
        let mut r = scaling::rules();
        r.extend(algebra::rules());
        r
    }

    const L: &[&str] = &["x?f32[2,4]", "g:f32[4]", "b:f32[4]", "w:f32[4,4]", "s:f32[]=0.5"];

    #[test]
    fn scalars_fold_into_norm_parameters_and_weights() {
        check(L, &rules(), "(Mul (LayerNormalization x g b) s)", "(LayerNormalization x (Mul g s) (Mul b s))");
        check(L, &rules(), "(Div (LayerNormalization x g) s)", "(LayerNormalization x (Mul g (Reciprocal s)))");
        check(L, &rules(), "(Mul (MatMul x w) s)", "(MatMul x (Mul w s))");
        check(L, &rules(), "(MatMul (Mul x s) w)", "(MatMul x (Mul w s))");
    }

    #[test]
    fn more_scalar_folds() {
        let l = &["x?f32[2,4]", "g:f32[4]", "s:f32[]=3.0", "t:f32[1]=0.25", "a:f32[4]", "c:f32[4]"];
        check(l, &rules(), "(Mul (RMSNormalization x g) s)", "(RMSNormalization x (Mul g s))");
        check(l, &rules(), "(Mul (Mul x s) t)", "(Mul x (Mul s t))");
        check(l, &rules(), "(Mul (affine x a c) s)", "(affine x (Mul a s) (Mul c s))");
    }

    #[test]
    fn negative_scalar_products_that_leave_the_normal_range_are_not_formed() {
        let l = &["x?f32[4]", "big:f32[]=1e38", "small:f32[]=1e-30", "s:f32[]"];
        // 1e38·1e38 = +inf, 1e-30·1e-30 underflows to 0: either changes what x·s·t computes.
        check_not(l, &rules(), "(Mul (Mul x big) big)", "(Mul x (Mul big big))");
        check_not(l, &rules(), "(Mul (Mul x small) small)", "(Mul x (Mul small small))");
        // A scalar whose value is unknown is not composed.
        check_not(l, &rules(), "(Mul (Mul x s) big)", "(Mul x (Mul s big))");
    }

    #[test]
    fn negative_no_constants_are_built_over_a_times_one_cycle() {
        // (x·2)/2: x·2·(1/2) = x·1 = x puts x·c in x's class; composing constants over that cycle
        // built c·c, c·c·c, … without end (the runaway compile of issue 11). Saturates quickly.
        let l = &["x?f32[2,4]", "two:f32[]=2.0", "half:f32[]=0.5", "w:f32[4,4]"];
        for expr in ["(Div (Mul x two) two)", "(MatMul (Div (Mul x two) two) w)", "(Mul (Mul (Mul x two) half) two)"] {
            let runner: egg::Runner<crate::lang::Kiln, crate::analysis::KilnAnalysis, ()> =
                egg::Runner::new(crate::rules::testing::leaves(l))
                    .with_expr(&expr.parse().unwrap())
                    .with_iter_limit(30)
                    .with_node_limit(2_000)
                    .run(&rules());
            let applied: Vec<_> = runner.iterations.iter().map(|i| i.applied.clone()).collect();
            assert!(
                matches!(runner.stop_reason, Some(egg::StopReason::Saturated)),
                "{expr}: {:?} {applied:?}",
                runner.stop_reason
            );
            assert!(runner.egraph.total_number_of_nodes() < 100, "{expr}: {}", runner.egraph.total_number_of_nodes());
        }
    }
}
