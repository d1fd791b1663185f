//! What exporters write: LayerNorm, RMSNorm, GELU, SiLU, HardSwish and Mish spelled out in
//! primitives (torch below opset 17, TensorFlow converters, T5/Llama norms as torch traces them),
//! recognised as the fused ops; `Pow` with a small integer exponent as multiplications; a transposed
//! operand folded into Gemm; a constant per-channel Add or Mul after a Conv as an affine (which
//! `norm_fold` then folds into the conv).
//!
//! Recognition goes in two steps: canonical rules first reduce the spellings to one form (x² as
//! `x·x`, `a·(1/b)` as `a/b`, `Σ/d` as a mean, `Cast` to the same type as nothing; `algebra` already
//! moves constants to the right and turns division by a constant into a multiplication), then one
//! pattern per fused op matches that form. Constants are read from [`Data::uniform`]: a pattern's
//! ε, ½, 1/√2 … must be uniform compile-time values, matched within 1e-5 relative (exporters round
//! them to f32 in different ways). Every norm pattern requires the reductions over the last axis
//! with keepdims (`axes=[-1]` after `canonical-reduce-mean-axis`) and ε added *inside* the square
//! root, so the look-alikes (another axis, ε outside the root, mean and variance over different
//! axes) do not match.
//!
//! [`Data::uniform`]: crate::analysis::Data::uniform

use super::{KRewrite, add_fold, add_ir, add_meta, fn_rule, get, is_const, norm_axis, numel, shape};
use crate::analysis::{KGraph, channel_axis};
use crate::lang::{F32Bits, FoldOp, KOp, Kiln, MetaOp};
use egg::{Id, Subst};
use kiln_ir::{BinaryOp, DType, Op, ReduceKind, UnaryOp};

/// The mean of `?x` over the last axis, keepdims.
const MEAN: &str = "(ReduceMean<axes=[-1]> ?x)";

/// √(Var_group(x) + ε) expanded and reshaped back to x's shape, ?r being x reshaped to
/// [N, G, C/G, H, W] (checked by [`evonorm_s0`]).
macro_rules! group_std {
    () => {
        "(Reshape* (Expand* (Sqrt (Add (ReduceMean<axes=[2,3,4]> (Mul (Sub ?r (ReduceMean<axes=[2,3,4]> ?r)) \
         (Sub ?r (ReduceMean<axes=[2,3,4]> ?r)))) ?eps))))"
    };
}
/// x·σ(v·x) / group std(x).
const EVO_S0: &str = concat!("(Div (Mul ?x (Sigmoid (Mul ?x ?v))) ", group_std!(), ")");
/// x / group std(x): timm's EvoNorm2dS0 with `apply_act=False`.
const EVO_S0_NO_ACT: &str = concat!("(Div ?x ", group_std!(), ")");

/// √(Var(?r) + ε) over the last axis of ?r, keepdims: the group std of the flattened-group
/// spelling, ?r being x reshaped to [N, G, C/G·H·W] (checked by [`evonorm_s0_flat`]).
const FLAT_STD: &str = "(Sqrt (Add (ReduceMean<axes=[-1]> (Mul (Sub ?r (ReduceMean<axes=[-1]> ?r)) \
                        (Sub ?r (ReduceMean<axes=[-1]> ?r)))) ?eps))";

/// √(Var_HW(x) + ε), x NCHW: EvoNorm-B0's instance std (checked by [`evonorm_b0`]).
const HW_STD: &str = "(Sqrt (Add (ReduceMean<axes=[2,3]> (Mul (Sub ?x (ReduceMean<axes=[2,3]> ?x)) \
                      (Sub ?x (ReduceMean<axes=[2,3]> ?x)))) ?eps))";

pub fn rules() -> Vec<KRewrite> {
    let centred = format!("(Sub ?x {MEAN})");
    let mut rules = vec![
        // Cast_T(x) = x   when x already has type T (fp32 exports cast around the statistics)
        fn_rule("cast-noop", "(Cast* ?x)", cast_noop),
        // xⁿ = x·x·…·x   for n ∈ {1, 2, 3, 4};  x⁻¹ = 1/x
        fn_rule("pow-int", "(Pow ?x ?e)", pow_int),
        // 1/y = Reciprocal(y)
        fn_rule("one-over", "(Div ?one ?y)", one_over),
        // (1/b)·a = a/b where 1/b cannot overflow (`algebra::reciprocal_is_division`)
        rw!("reciprocal-mul"; "(Mul (Reciprocal ?b) ?a)" => "(Div ?a ?b)" if super::algebra::reciprocal_is_division),
        // Σ_last(y)·(1/d) = mean_last(y)   for d the last dimension
        fn_rule("sum-to-mean", "(Mul (ReduceSum<axes=[-1]> ?y) ?c)", sum_to_mean),
        // (x − μ)/√(mean((x − μ)²) + ε) = LN_ε(x, 1)   μ = mean_last(x), ε inside the root
        fn_rule(
            "layernorm-recognise",
            &format!("(Div {centred} (Sqrt (Add (ReduceMean<axes=[-1]> (Mul {centred} {centred})) ?eps)))"),
            |eg, id, s| norm_recognise(eg, id, s, true),
        ),
        // x/√(mean(x²) + ε) = RMSNorm_ε(x, 1)
        fn_rule("rmsnorm-recognise", "(Div ?x (Sqrt (Add (ReduceMean<axes=[-1]> (Mul ?x ?x)) ?eps)))", |eg, id, s| {
            norm_recognise(eg, id, s, false)
        }),
        // N(x, 1)·γ = N(x, γ)   for N = LN, RMSNorm and γ constant along the last axis
        fn_rule("norm-scale", "(Mul ?n ?g)", norm_scale),
        // LN(x, γ) + β = LN(x, γ, β)
        fn_rule("norm-bias", "(Add ?n ?b)", norm_bias),
        // x·σ(v·x) / √(Var_group(x) + ε) · γ + β = EvoNormS0(x, v, γ, β), as timm's EvoNorm2dS0
        // exports it: the group statistics over a [N, G, C/G, H, W] reshape of x, the population
        // variance as mean((r − mean r)²), its root expanded and reshaped back to x's shape.
        fn_rule("evonorm-s0-recognise", &format!("(Add (Mul {EVO_S0} ?g) ?b)"), evonorm_s0),
        fn_rule("evonorm-s0-recognise-scale", &format!("(Mul {EVO_S0} ?g)"), evonorm_s0),
        fn_rule("evonorm-s0-recognise-bare", EVO_S0, evonorm_s0),
        // x / √(Var_group(x) + ε) · γ + β = EvoNormS0(x, 0, 2γ, β): σ(0) = ½ exactly, and the
        // factor 2 on γ is exact in binary floating point.
        fn_rule("evonorm-s0-no-act-recognise", &format!("(Add (Mul {EVO_S0_NO_ACT} ?g) ?b)"), evonorm_s0_no_act),
        fn_rule("evonorm-s0-no-act-recognise-scale", &format!("(Mul {EVO_S0_NO_ACT} ?g)"), evonorm_s0_no_act),
        fn_rule("evonorm-s0-no-act-recognise-bare", EVO_S0_NO_ACT, evonorm_s0_no_act),
        // The same in the flattened-group spelling: the statistics over x reshaped to
        // [N, G, C/G·H·W] (no Expand: the [N, G, 1] std broadcasts), the numerator — the gate
        // x·σ(v·x), or x itself without it — reshaped the same way, the quotient reshaped back.
        // Both reshapes are row-major, so element (n, g, k) of the view is channel g·C/G + k / (H·W)
        // of sample n: the same groups of consecutive channels as EvoNormS0's.
    ];
    for (suffix, wrap) in [("", "(Add (Mul F ?g) ?b)"), ("-scale", "(Mul F ?g)"), ("-bare", "F")] {
        let flat = format!("(Reshape* (Div ?q {FLAT_STD}))");
        let lhs = wrap.replace('F', &flat);
        rules.push(fn_rule(&format!("evonorm-s0-flat-recognise{suffix}"), &lhs, evonorm_s0_flat));
        // EvoNorm-B0 (timm's EvoNorm2dB0 at inference, the running variance's root folded to a
        // constant m at load): x / max(m, v·x + √(Var_HW(x) + ε))·γ + β
        //   = EvoNormB0_ε(x, v, γ, β, m² − ε)   for m ≥ 0, since √((m² − ε) + ε) = |m| = m.
        // Var_HW the population variance over H and W per sample and channel, ε inside the root
        // (the op uses one ε for both roots); v, γ, β, m per channel.
        for (order, den) in [("", "(Max ?m (Add (Mul ?x ?v) S))"), ("-swapped", "(Max (Add (Mul ?x ?v) S) ?m)")] {
            let b0 = format!("(Div ?x {})", den.replace('S', HW_STD));
            let lhs = wrap.replace('F', &b0);
            rules.push(fn_rule(&format!("evonorm-b0-recognise{suffix}{order}"), &lhs, evonorm_b0));
        }
    }
    rules.extend([
        // x·σ(x) = SiLU(x)
        rw!("silu-recognise"; "(Mul ?x (Sigmoid ?x))" => "(Silu ?x)"),
        rw!("silu-recognise-swapped"; "(Mul (Sigmoid ?x) ?x)" => "(Silu ?x)"),
        // log(exp(x) + 1) = softplus(x)
        fn_rule("softplus-recognise", "(Log (Add (Exp ?x) ?one))", softplus),
        // x·tanh(softplus(x)) = Mish(x)
        rw!("mish-recognise"; "(Mul ?x (Tanh (Softplus ?x)))" => "(Mish ?x)"),
        rw!("mish-recognise-swapped"; "(Mul (Tanh (Softplus ?x)) ?x)" => "(Mish ?x)"),
        // x·HardSigmoid_{1/6, ½}(x) = HardSwish(x)
        fn_rule("hardswish-hardsigmoid", "(Mul ?x ?h)", hardswish_hardsigmoid),
        // x·clip(x + 3, 0, 6)·(1/6) = HardSwish(x)
        fn_rule("hardswish-relu6", "(Mul (Mul ?x ?r) ?sixth)", hardswish_relu6),
        fn_rule("hardswish-relu6-inner", "(Mul ?x (Mul ?r ?sixth))", hardswish_relu6),
        // x·Wᵀ = Gemm_{transB}(x, W);  Aᵀ·W = Gemm_{transA}(A, W)   (2-D operands)
        fn_rule("transpose-into-gemm-b", "(MatMul ?x (Transpose* ?w))", |eg, id, s| transpose_gemm(eg, id, s, false)),
        fn_rule("transpose-into-gemm-a", "(MatMul (Transpose* ?x) ?w)", |eg, id, s| transpose_gemm(eg, id, s, true)),
        // Conv(x)·a = affine(Conv(x), a, 0);  Conv(x) + c = affine(Conv(x), 1, c)   per channel
        fn_rule("conv-mul-affine", "(Mul ?y ?a)", |eg, id, s| conv_affine(eg, id, s, true)),
        fn_rule("conv-add-affine", "(Add ?y ?a)", |eg, id, s| conv_affine(eg, id, s, false)),
    ]);
    rules.extend(gelu_rules());
    rules
}

/// GELU, x·½·(1 + erf(x/√2)) and x·½·(1 + tanh(√(2/π)·(x + 0.044715·x³))), with ½ and x in every
/// association exporters write: (x·½)·E, E·(x·½), x·(E·½), (E·½)·x, (x·E)·½, (E·x)·½.
fn gelu_rules() -> Vec<KRewrite> {
    let cube = "(Mul (Mul ?x ?x) ?x)";
    let inner = [
        ("erf", "(Add (Erf (Mul ?x ?r)) ?one)".to_string()),
        ("tanh", format!("(Add (Tanh (Mul (Add ?x (Mul {cube} ?k)) ?r)) ?one)")),
        ("tanh-swapped", format!("(Add (Tanh (Mul (Add (Mul {cube} ?k) ?x) ?r)) ?one)")),
    ];
    let outer = [
        "(Mul (Mul ?x ?h) E)",
        "(Mul E (Mul ?x ?h))",
        "(Mul ?x (Mul E ?h))",
        "(Mul (Mul E ?h) ?x)",
        "(Mul (Mul ?x E) ?h)",
        "(Mul (Mul E ?x) ?h)",
    ];
    let mut rules = Vec::new();
    for (form, e) in &inner {
        for (i, o) in outer.iter().enumerate() {
            let lhs = o.replace('E', e);
            let name = format!("gelu-{form}-{}", i + 1);
            let rule = if form.starts_with("tanh") {
                fn_rule(&name, &lhs, |eg, id, s| gelu(eg, id, s, true))
            } else {
                fn_rule(&name, &lhs, |eg, id, s| gelu(eg, id, s, false))
            };
            rules.push(rule);
        }
    }
    rules
}

/// The uniform compile-time value of a class.
fn value(eg: &KGraph, id: Id) -> Option<f32> {
    if !is_const(eg, id) {
        return None;
    }
    eg[id].data.uniform.map(F32Bits::get)
}

/// `v` equals `want` within 1e-5 relative.
fn near(v: Option<f32>, want: f64) -> bool {
    v.is_some_and(|v| ((v as f64) - want).abs() <= 1e-5 * want.abs())
}

/// The matched class and `x` have the same type, a float one (the operands did not broadcast x).
fn keeps_type(eg: &KGraph, id: Id, x: Id) -> bool {
    let t = eg[id].data.ty();
    t.is_some_and(|t| t.dtype == DType::F32) && t == eg[x].data.ty()
}

fn cast_noop(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let x = get(s, "?x");
    (eg[id].data.ty().is_some() && eg[id].data.ty() == eg[x].data.ty()).then_some(x)
}

fn pow_int(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (x, e) = (get(s, "?x"), get(s, "?e"));
    if !keeps_type(eg, id, x) || is_const(eg, x) {
        return None;
    }
    let n = value(eg, e)?;
    let mul = |eg: &mut KGraph, a: Id, b: Id| add_ir(eg, Op::Binary(BinaryOp::Mul), vec![a, b]);
    if n == 1.0 {
        Some(x)
    } else if n == 2.0 {
        Some(mul(eg, x, x))
    } else if n == 3.0 {
        let sq = mul(eg, x, x);
        Some(mul(eg, sq, x))
    } else if n == 4.0 {
        let sq = mul(eg, x, x);
        Some(mul(eg, sq, sq))
    } else if n == -1.0 {
        Some(add_ir(eg, Op::Unary(UnaryOp::Reciprocal), vec![x]))
    } else {
        None
    }
}

fn one_over(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (one, y) = (get(s, "?one"), get(s, "?y"));
    (value(eg, one) == Some(1.0) && keeps_type(eg, id, y) && !is_const(eg, y))
        .then(|| add_ir(eg, Op::Unary(UnaryOp::Reciprocal), vec![y]))
}

fn sum_to_mean(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (y, c) = (get(s, "?y"), get(s, "?c"));
    let d = *shape(eg, y)?.last()?;
    let sum = eg.lookup(Kiln::ir(reduce(ReduceKind::Sum), vec![y]))?;
    if !keeps_type(eg, id, sum) || !near(value(eg, c), 1.0 / d as f64) {
        return None;
    }
    Some(add_ir(eg, reduce(ReduceKind::Mean), vec![y]))
}

/// A reduction over the last axis with keepdims, as the canonical-axis rules spell it.
fn reduce(kind: ReduceKind) -> Op {
    Op::Reduce { kind, axes: Some(vec![-1]), keepdims: true, noop_with_empty_axes: false }
}

/// A constant [d] vector of ones, built from the constant `like` (any uniform constant at hand).
fn ones(eg: &mut KGraph, like: Id, d: usize) -> Id {
    filled(eg, like, d, 1.0)
}

/// A [d] vector of `value`, made at compile time from the scalar constant `like`.
fn filled(eg: &mut KGraph, like: Id, d: usize, value: f32) -> Id {
    let fill = add_fold(eg, FoldOp::Fill(F32Bits::new(value)), vec![like]);
    let flat = add_fold(eg, FoldOp::Flat, vec![fill]);
    add_ir(eg, Op::Expand { shape: vec![d as i64] }, vec![flat])
}

fn norm_recognise(eg: &mut KGraph, id: Id, s: &Subst, layer: bool) -> Option<Id> {
    let (x, eps) = (get(s, "?x"), get(s, "?eps"));
    if !keeps_type(eg, id, x) || numel(eg, eps)? != 1 || is_const(eg, x) {
        return None;
    }
    let epsilon = value(eg, eps).filter(|e| e.is_finite() && *e >= 0.0)?;
    let d = *shape(eg, x)?.last()?;
    let one = ones(eg, eps, d);
    let op =
        if layer { Op::LayerNormalization { axis: -1, epsilon } } else { Op::RmsNormalization { axis: -1, epsilon } };
    Some(add_ir(eg, op, vec![x, one]))
}

/// A last-axis LN or RMSNorm node in class `n`: (op, its inputs).
fn last_axis_norms(eg: &KGraph, n: Id) -> Vec<(Op, Vec<Id>)> {
    eg[n]
        .nodes
        .iter()
        .filter_map(|node| match node {
            Kiln::Node(KOp::Ir(ir), c) => match ir.op {
                Op::LayerNormalization { axis, .. } | Op::RmsNormalization { axis, .. } => {
                    let rank = shape(eg, c[0])?.len();
                    (norm_axis(axis, rank)? + 1 == rank).then(|| (ir.op.clone(), c.clone()))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// `v` is a constant of d elements that varies along the last axis only (or a single value).
fn last_axis_vector(eg: &KGraph, v: Id, rank: usize, d: usize) -> bool {
    let Some(vs) = shape(eg, v) else { return false };
    is_const(eg, v)
        && (numel(eg, v) == Some(d) || numel(eg, v) == Some(1))
        && channel_axis(&vs, rank).flatten().is_none_or(|k| k + 1 == rank)
}

/// `v` as a flat [d] vector (expanded when it is a single value).
fn flat_vector(eg: &mut KGraph, v: Id, d: usize) -> Id {
    let flat = add_fold(eg, FoldOp::Flat, vec![v]);
    if numel(eg, v) == Some(d) { flat } else { add_ir(eg, Op::Expand { shape: vec![d as i64] }, vec![flat]) }
}

/// EvoNormS0 from its written-out form (see `evonorm-s0-recognise`): x is NCHW, ?r a reshape of
/// x into G groups of consecutive channels, v, γ and β constant per channel (or single values),
/// ε a non-negative constant inside the root.
fn evonorm_s0(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    evonorm_s0_from(eg, id, s, true)
}

/// The same without the gate (`evonorm-s0-no-act-recognise`): v = 0, γ doubled.
fn evonorm_s0_no_act(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    evonorm_s0_from(eg, id, s, false)
}

fn evonorm_s0_from(eg: &mut KGraph, id: Id, s: &Subst, gated: bool) -> Option<Id> {
    let [x, r, eps] = ["?x", "?r", "?eps"].map(|n| get(s, n));
    if !keeps_type(eg, id, x) || is_const(eg, x) || numel(eg, eps)? != 1 {
        return None;
    }
    let xs = shape(eg, x)?;
    let rs = shape(eg, r)?;
    let [n, c, h, w] = <[usize; 4]>::try_from(xs).ok()?;
    let groups = rs.get(1).copied().filter(|&g| g > 0 && c % g == 0)?;
    if rs != [n, groups, c / groups, h, w] {
        return None;
    }
    let x_class = eg.find(x);
    let reshapes_x = eg[r].nodes.iter().any(|node| {
        matches!(node, Kiln::Node(KOp::Ir(ir), a) if matches!(ir.op, Op::Reshape { .. }) && a.len() == 1 && eg.find(a[0]) == x_class)
    });
    if !reshapes_x {
        return None;
    }
    // The matched Div: the root, or under the +β and ·γ the longer rules wrap it in.
    let (g, b) = (s.get(super::var("?g")).copied(), s.get(super::var("?b")).copied());
    let divs = unwrap_affine(eg, id, g, b);
    // The group std [N, G, 1, 1, 1] is expanded to [N, G, C/G, H, W] and reshaped to x's shape:
    // each channel gets its own group's value (no other expansion reshapes back that way).
    let ty = eg[x].data.ty().cloned();
    let stats = [n, groups, 1, 1, 1];
    let groups_back = divs.iter().flat_map(|&class| eg[class].nodes.iter()).any(|div| {
        let Kiln::Node(KOp::Ir(ir), a) = div else { return false };
        matches!(ir.op, Op::Binary(BinaryOp::Div))
            && a.len() == 2
            && eg[a[1]].data.ty().cloned() == ty
            && eg[a[1]].nodes.iter().any(|reshape| {
                let Kiln::Node(KOp::Ir(ir), e) = reshape else { return false };
                matches!(ir.op, Op::Reshape { .. })
                    && e.len() == 1
                    && shape(eg, e[0]).is_some_and(|es| es == rs)
                    && eg[e[0]].nodes.iter().any(|expand| {
                        let Kiln::Node(KOp::Ir(ir), q) = expand else { return false };
                        matches!(ir.op, Op::Expand { .. })
                            && q.len() == 1
                            && shape(eg, q[0]).is_some_and(|qs| qs == stats)
                    })
            })
    });
    if !groups_back {
        return None;
    }
    let epsilon = value(eg, eps).filter(|e| e.is_finite() && *e >= 0.0)?;
    let per_channel = |eg: &KGraph, p: Id| {
        is_const(eg, p)
            && shape(eg, p).is_some_and(|ps| {
                (numel(eg, p) == Some(c) || numel(eg, p) == Some(1))
                    && channel_axis(&ps, 4).flatten().is_none_or(|k| k == 1)
            })
    };
    let v = if gated { Some(get(s, "?v")) } else { None };
    if v.is_some_and(|v| !per_channel(eg, v))
        || g.is_some_and(|g| !per_channel(eg, g))
        || b.is_some_and(|b| !per_channel(eg, b))
    {
        return None;
    }
    let v = match v {
        Some(v) => flat_vector(eg, v, c),
        None => filled(eg, eps, c, 0.0),
    };
    let g = match (g, gated) {
        (Some(g), true) => flat_vector(eg, g, c),
        (None, true) => ones(eg, eps, c),
        (Some(g), false) => {
            let g = flat_vector(eg, g, c);
            let two = filled(eg, eps, c, 2.0);
            add_ir(eg, Op::Binary(BinaryOp::Mul), vec![g, two])
        }
        (None, false) => filled(eg, eps, c, 2.0),
    };
    let b = match b {
        Some(b) => flat_vector(eg, b, c),
        None => filled(eg, eps, c, 0.0),
    };
    Some(add_ir(eg, Op::EvoNormS0 { groups, epsilon }, vec![x, v, g, b]))
}

/// Whether `p` is a constant per channel of an NCHW tensor with `c` channels (or one value).
fn per_channel(eg: &KGraph, p: Id, c: usize) -> bool {
    is_const(eg, p)
        && shape(eg, p).is_some_and(|ps| {
            (numel(eg, p) == Some(c) || numel(eg, p) == Some(1))
                && channel_axis(&ps, 4).flatten().is_none_or(|k| k == 1)
        })
}

/// The classes under the ·γ and +β a recognise rule's longer forms wrap the matched term in: the
/// root, or the first operand of `Add(·, β)` / `Mul(·, γ)` there.
fn unwrap_affine(eg: &KGraph, id: Id, g: Option<Id>, b: Option<Id>) -> Vec<Id> {
    let mut inner = vec![eg.find(id)];
    for (op, arg) in [(BinaryOp::Add, b), (BinaryOp::Mul, g)] {
        let Some(arg) = arg.map(|a| eg.find(a)) else { continue };
        inner = inner
            .iter()
            .flat_map(|&class| eg[class].nodes.iter())
            .filter_map(|node| match node {
                Kiln::Node(KOp::Ir(ir), a) if ir.op == Op::Binary(op) && a.len() == 2 && eg.find(a[1]) == arg => {
                    Some(eg.find(a[0]))
                }
                _ => None,
            })
            .collect();
    }
    inner
}

/// γ and β as [c] vectors (1 and 0 when the rule matched without them).
fn gamma_beta(eg: &mut KGraph, g: Option<Id>, b: Option<Id>, like: Id, c: usize) -> (Id, Id) {
    let g = match g {
        Some(g) => flat_vector(eg, g, c),
        None => ones(eg, like, c),
    };
    let b = match b {
        Some(b) => flat_vector(eg, b, c),
        None => filled(eg, like, c, 0.0),
    };
    (g, b)
}

/// EvoNormS0 from the flattened-group spelling (`evonorm-s0-flat-recognise`): ?r is x reshaped
/// to [N, G, C/G·H·W] for an NCHW x (found among ?r's reshapes), ?q is the numerator reshaped to
/// that same shape — a reshape of the gate x·σ(v·x) (v per channel), or of x itself (the
/// ungated form: v = 0, γ doubled, as `evonorm-s0-no-act-recognise`) — and the matched root, of
/// x's type, is the quotient reshaped back. γ, β per channel; ε a non-negative constant.
fn evonorm_s0_flat(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let [q, r, eps] = ["?q", "?r", "?eps"].map(|n| get(s, n));
    if numel(eg, eps)? != 1 {
        return None;
    }
    let epsilon = value(eg, eps).filter(|e| e.is_finite() && *e >= 0.0)?;
    let rs = shape(eg, r)?;
    if shape(eg, q)? != rs || rs.len() != 3 {
        return None;
    }
    let reshape_args = |eg: &KGraph, class: Id| -> Vec<Id> {
        eg[class]
            .nodes
            .iter()
            .filter_map(|node| match node {
                Kiln::Node(KOp::Ir(ir), a) if matches!(ir.op, Op::Reshape { .. }) && a.len() == 1 => {
                    Some(eg.find(a[0]))
                }
                _ => None,
            })
            .collect()
    };
    // x: a non-constant NCHW tensor of the root's type that ?r reshapes into [N, G, C/G·H·W].
    let x = reshape_args(eg, r).into_iter().find(|&x| {
        keeps_type(eg, id, x)
            && !is_const(eg, x)
            && shape(eg, x).is_some_and(|xs| {
                xs.len() == 4
                    && rs[0] == xs[0]
                    && rs[1] > 0
                    && xs[1] % rs[1] == 0
                    && rs[2] == xs[1] / rs[1] * xs[2] * xs[3]
            })
    })?;
    let xs = shape(eg, x)?;
    let (c, groups) = (xs[1], rs[1]);
    // The numerator: x itself (ungated), or x·σ(x·v) with v per channel.
    let sources = reshape_args(eg, q);
    let gate_v = sources.iter().find_map(|&src| {
        eg[src].nodes.iter().find_map(|node| {
            let Kiln::Node(KOp::Ir(ir), a) = node else { return None };
            if ir.op != Op::Binary(BinaryOp::Mul) || a.len() != 2 || eg.find(a[0]) != x {
                return None;
            }
            eg[a[1]].nodes.iter().find_map(|sig| {
                let Kiln::Node(KOp::Ir(ir), t) = sig else { return None };
                if ir.op != Op::Unary(UnaryOp::Sigmoid) || t.len() != 1 {
                    return None;
                }
                eg[t[0]].nodes.iter().find_map(|xv| match xv {
                    Kiln::Node(KOp::Ir(ir), m)
                        if ir.op == Op::Binary(BinaryOp::Mul)
                            && m.len() == 2
                            && eg.find(m[0]) == x
                            && per_channel(eg, m[1], c) =>
                    {
                        Some(m[1])
                    }
                    _ => None,
                })
            })
        })
    });
    let gated = match gate_v {
        Some(_) => true,
        None if sources.contains(&x) => false,
        None => return None,
    };
    let (g, b) = (s.get(super::var("?g")).copied(), s.get(super::var("?b")).copied());
    if g.is_some_and(|g| !per_channel(eg, g, c)) || b.is_some_and(|b| !per_channel(eg, b, c)) {
        return None;
    }
    // The quotient [N, G, C/G·H·W] is reshaped straight back to x's shape.
    let back = unwrap_affine(eg, id, g, b).iter().any(|&class| {
        eg[class].nodes.iter().any(|node| {
            matches!(node, Kiln::Node(KOp::Ir(ir), a) if matches!(ir.op, Op::Reshape { .. }) && a.len() == 1
                && shape(eg, a[0]).is_some_and(|d| d == rs))
        })
    });
    if !back {
        return None;
    }
    let v = match gate_v {
        Some(v) => flat_vector(eg, v, c),
        None => filled(eg, eps, c, 0.0),
    };
    let (mut g, b) = gamma_beta(eg, g, b, eps, c);
    if !gated {
        let two = filled(eg, eps, c, 2.0);
        g = add_ir(eg, Op::Binary(BinaryOp::Mul), vec![g, two]);
    }
    Some(add_ir(eg, Op::EvoNormS0 { groups, epsilon }, vec![x, v, g, b]))
}

/// EvoNormB0 from its written-out form (`evonorm-b0-recognise`): x NCHW and not constant, the
/// matched root of x's type; v, γ, β and m constant per channel, m ≥ 0 in every element (a
/// weight known to be — the folded √(running_var + ε) — or a uniform value); ε a non-negative
/// constant. The running variance becomes m·m − ε, evaluated at compile time.
fn evonorm_b0(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let [x, v, m, eps] = ["?x", "?v", "?m", "?eps"].map(|n| get(s, n));
    if !keeps_type(eg, id, x) || is_const(eg, x) || numel(eg, eps)? != 1 {
        return None;
    }
    let epsilon = value(eg, eps).filter(|e| e.is_finite() && *e >= 0.0)?;
    let xs = shape(eg, x)?;
    let [_, c, _, _] = <[usize; 4]>::try_from(xs).ok()?;
    let (g, b) = (s.get(super::var("?g")).copied(), s.get(super::var("?b")).copied());
    if [Some(v), Some(m), g, b].into_iter().flatten().any(|p| !per_channel(eg, p, c)) {
        return None;
    }
    let m_nonnegative = eg[m].data.uniform.is_some_and(|u| u.get().is_finite() && u.get() >= 0.0)
        || eg[m].nodes.iter().any(|node| {
            matches!(node, Kiln::Leaf(name) if eg.analysis.leaves.get(name).is_some_and(|l| l.is_weight && l.nonnegative))
        });
    if !m_nonnegative || eg[m].data.nonfinite {
        return None;
    }
    let square = add_ir(eg, Op::Binary(BinaryOp::Mul), vec![m, m]);
    let running_var = add_ir(eg, Op::Binary(BinaryOp::Sub), vec![square, eps]);
    let running_var = flat_vector(eg, running_var, c);
    let v = flat_vector(eg, v, c);
    let (g, b) = gamma_beta(eg, g, b, eps, c);
    Some(add_ir(eg, Op::EvoNormB0 { epsilon }, vec![x, v, g, b, running_var]))
}

fn norm_scale(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (n, g) = (get(s, "?n"), get(s, "?g"));
    if !keeps_type(eg, id, n) {
        return None;
    }
    let (rank, d) = (shape(eg, n)?.len(), *shape(eg, n)?.last()?);
    if !last_axis_vector(eg, g, rank, d) {
        return None;
    }
    let (op, args) = last_axis_norms(eg, n).into_iter().find(|(_, a)| a.len() == 2 && value(eg, a[1]) == Some(1.0))?;
    let scale = flat_vector(eg, g, d);
    Some(add_ir(eg, op, vec![args[0], scale]))
}

fn norm_bias(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (n, b) = (get(s, "?n"), get(s, "?b"));
    if !keeps_type(eg, id, n) {
        return None;
    }
    let (rank, d) = (shape(eg, n)?.len(), *shape(eg, n)?.last()?);
    if !last_axis_vector(eg, b, rank, d) {
        return None;
    }
    let (op, args) = last_axis_norms(eg, n)
        .into_iter()
        .find(|(op, a)| a.len() == 2 && matches!(op, Op::LayerNormalization { .. }) && is_const(eg, a[1]))?;
    let bias = flat_vector(eg, b, d);
    Some(add_ir(eg, op, vec![args[0], args[1], bias]))
}

fn softplus(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (x, one) = (get(s, "?x"), get(s, "?one"));
    (value(eg, one) == Some(1.0) && keeps_type(eg, id, x)).then(|| add_ir(eg, Op::Unary(UnaryOp::Softplus), vec![x]))
}

fn hardswish_hardsigmoid(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (x, h) = (get(s, "?x"), get(s, "?h"));
    if !keeps_type(eg, id, x) {
        return None;
    }
    let x = eg.find(x);
    let found = eg[h].nodes.iter().any(|n| match n {
        Kiln::Node(KOp::Ir(ir), c) => {
            matches!(ir.op, Op::Unary(UnaryOp::HardSigmoid { alpha, beta })
                if near(Some(alpha), 1.0 / 6.0) && beta == 0.5)
                && eg.find(c[0]) == x
        }
        _ => false,
    });
    found.then(|| add_ir(eg, Op::Unary(UnaryOp::HardSwish), vec![x]))
}

fn hardswish_relu6(eg: &mut KGraph, id: Id, s: &Subst) -> Option<Id> {
    let (x, r, sixth) = (get(s, "?x"), get(s, "?r"), get(s, "?sixth"));
    if !keeps_type(eg, id, x) || !near(value(eg, sixth), 1.0 / 6.0) {
        return None;
    }
    let x = eg.find(x);
    // r = clip(x + 3, 0, 6)
    let plus_three = |eg: &KGraph, a: Id| {
        eg[a].nodes.iter().any(|n| match n {
            Kiln::Node(KOp::Ir(ir), c) => {
                matches!(ir.op, Op::Binary(BinaryOp::Add)) && eg.find(c[0]) == x && value(eg, c[1]) == Some(3.0)
            }
            _ => false,
        })
    };
    let found = eg[r].nodes.iter().any(|n| match n {
        Kiln::Node(KOp::Ir(ir), c) => {
            matches!(ir.op, Op::Unary(UnaryOp::Clip { min: Some(0.0), max: Some(6.0) })) && plus_three(eg, c[0])
        }
        _ => false,
    });
    found.then(|| add_ir(eg, Op::Unary(UnaryOp::HardSwish), vec![x]))
}

fn gelu(eg: &mut KGraph, id: Id, s: &Subst, tanh: bool) -> Option<Id> {
    let x = get(s, "?x");
    if !keeps_type(eg, id, x) || is_const(eg, x) {
        return None;
    }
    let [h, r, one] = ["?h", "?r", "?one"].map(|v| value(eg, get(s, v)));
    if !near(h, 0.5) || one != Some(1.0) {
        return None;
    }
    let ok = if tanh {
        near(r, (2.0 / std::f64::consts::PI).sqrt()) && near(value(eg, get(s, "?k")), 0.044715)
    } else {
        near(r, std::f64::consts::FRAC_1_SQRT_2)
    };
    // Every constant must be a single value, so that none of them broadcasts x.
    let singles = ["?h", "?r", "?one"].iter().chain(tanh.then_some(&"?k")).all(|v| numel(eg, get(s, v)) == Some(1));
    (ok && singles).then(|| add_ir(eg, Op::Unary(UnaryOp::Gelu { tanh }), vec![x]))
}

fn transpose_gemm(eg: &mut KGraph, id: Id, s: &Subst, trans_a: bool) -> Option<Id> {
    let (x, w) = (get(s, "?x"), get(s, "?w"));
    let (xs, ws) = (shape(eg, x)?, shape(eg, w)?);
    if xs.len() != 2 || ws.len() != 2 || eg[id].data.ty().is_none_or(|t| t.dtype != DType::F32) {
        return None;
    }
    // The transposed operand: a 2-D Transpose (perm [1, 0] or the default reversal) in its class.
    let t = if trans_a { x } else { w };
    let transposed = eg
        .lookup(Kiln::ir(Op::Transpose { perm: Some(vec![1, 0]) }, vec![t]))
        .or_else(|| eg.lookup(Kiln::ir(Op::Transpose { perm: None }, vec![t])))?;
    let (a, b) = if trans_a { (transposed, w) } else { (x, transposed) };
    eg.lookup(Kiln::ir(Op::MatMul, vec![a, b])).filter(|&m| eg.find(m) == eg.find(id))?;
    let op = Op::Gemm { alpha: 1.0, beta: 1.0, trans_a, trans_b: !trans_a };
    Some(add_ir(eg, op, vec![x, w]))
}

fn conv_affine(eg: &mut KGraph, id: Id, s: &Subst, mul: bool) -> Option<Id> {
    let (y, v) = (get(s, "?y"), get(s, "?a"));
    if !keeps_type(eg, id, y) || !is_const(eg, v) || is_const(eg, y) {
        return None;
    }
    let has_conv = eg[y].nodes.iter().any(|n| matches!(n, Kiln::Node(KOp::Ir(ir), _) if ir.name() == "Conv"));
    let (ys, vs) = (shape(eg, y)?, shape(eg, v)?);
    // Per output channel (axis 1 of NCHW) or a single value.
    if !has_conv || ys.len() != 4 || channel_axis(&vs, 4)?.is_some_and(|k| k != 1) {
        return None;
    }
    if channel_axis(&vs, 4)?.is_some() && vs[vs.len() - 3] != ys[1] {
        return None;
    }
    let (a, c) = if mul {
        (v, add_fold(eg, FoldOp::Fill(F32Bits::new(0.0)), vec![v]))
    } else {
        (add_fold(eg, FoldOp::Fill(F32Bits::new(1.0)), vec![v]), v)
    };
    Some(add_meta(eg, MetaOp::Affine, vec![y, a, c]))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{check, check_not};
    use super::super::{KRewrite, algebra};

    fn rules() -> Vec<KRewrite> {
        let mut r = super::rules();
        r.extend(algebra::rules());
        r
    }

    const L: &[&str] = &[
        "x?f32[2,3,8]",
        "two:f32[]=2.0",
        "three:f32[]=3.0",
        "eps:f32[]=1e-5",
        "one:f32[]=1.0",
        "half:f32[]=0.5",
        "g:f32[8]",
        "b:f32[8]",
        "gc:f32[1,1,8]",
        "gr:f32[3,1]",
        "d:f32[]=8.0",
    ];

    #[test]
    fn pow_becomes_multiplications() {
        check(L, &rules(), "(Pow x two)", "(Mul x x)");
        check(L, &rules(), "(Pow x three)", "(Mul (Mul x x) x)");
        // A non-integer exponent stays.
        check_not(&["x?f32[4]", "e:f32[]=2.5"], &rules(), "(Pow x e)", "(Mul x x)");
        // A [4] exponent broadcasts a [1] base: not x·x.
        check_not(&["x?f32[1]", "e:f32[4]=2.0"], &rules(), "(Pow x e)", "(Mul x x)");
    }

    #[test]
    fn layernorm_from_primitives() {
        let mu = "(Sub x (ReduceMean<axes=[2]> x))";
        let ln = format!("(Div {mu} (Sqrt (Add (ReduceMean<axes=[-1]> (Pow {mu} two)) eps)))");
        check(L, &rules(), &ln, "(LayerNormalization<epsilon=1e-5> x (Expand<shape=[8]> (flat (fill<1.0> eps))))");
        // With affine: ·γ + β.
        check(L, &rules(), &format!("(Add (Mul {ln} g) b)"), "(LayerNormalization<epsilon=1e-5> x (flat g) (flat b))");
        // Reciprocal·Mul spelling and ε on the left.
        let rcp = format!("(Mul {mu} (Reciprocal (Sqrt (Add eps (ReduceMean<axes=[-1]> (Mul {mu} {mu}))))))");
        check(L, &rules(), &rcp, "(LayerNormalization<epsilon=1e-5> x (Expand<shape=[8]> (flat (fill<1.0> eps))))");
    }

    #[test]
    fn negative_layernorm_look_alikes() {
        let any_ln = "(LayerNormalization<epsilon=1e-5> x (Expand<shape=[8]> (flat (fill<1.0> eps))))";
        // The statistics over axis 1, not the last one.
        let mu1 = "(Sub x (ReduceMean<axes=[1]> x))";
        let wrong_axis = format!("(Div {mu1} (Sqrt (Add (ReduceMean<axes=[1]> (Mul {mu1} {mu1})) eps)))");
        check_not(L, &rules(), &wrong_axis, any_ln);
        // ε outside the root.
        let mu = "(Sub x (ReduceMean<axes=[-1]> x))";
        let outside = format!("(Div {mu} (Add (Sqrt (ReduceMean<axes=[-1]> (Mul {mu} {mu}))) eps))");
        check_not(L, &rules(), &outside, any_ln);
        // The mean over axis 1, the variance over the last axis.
        let mixed = format!("(Div {mu1} (Sqrt (Add (ReduceMean<axes=[-1]> (Mul {mu1} {mu1})) eps)))");
        check_not(L, &rules(), &mixed, any_ln);
        // keepdims=0 statistics do not broadcast back per row.
        let nokeep = "(Sub x (ReduceMean<axes=[-1];keepdims=0> x))";
        let flat = format!("(Div {nokeep} (Sqrt (Add (ReduceMean<axes=[-1]> (Mul {nokeep} {nokeep})) eps)))");
        check_not(L, &rules(), &flat, any_ln);
    }

    #[test]
    fn rmsnorm_as_t5_and_llama_write_it() {
        let rms = "(RMSNormalization<epsilon=1e-5> x (flat g))";
        // T5LayerNorm: weight · (x · rsqrt(mean(x²) + ε)), x cast to f32.
        let t5 = "(Mul g (Mul x (Reciprocal (Sqrt (Add (ReduceMean<axes=[-1]> (Pow (Cast<to=f32> x) two)) eps)))))";
        check(L, &rules(), t5, rms);
        // Llama: rsqrt as 1/√ via Div, and the sum-of-squares spelling Σx²/d.
        let llama = "(Mul (Mul x (Div one (Sqrt (Add (Div (ReduceSum<axes=[-1]> (Mul x x)) d) eps)))) g)";
        check(L, &rules(), llama, rms);
        // ε outside the root is not an RMSNorm.
        let outside = "(Div x (Add (Sqrt (ReduceMean<axes=[-1]> (Mul x x))) eps))";
        check_not(
            L,
            &rules(),
            outside,
            "(RMSNormalization<epsilon=1e-5> x (Expand<shape=[8]> (flat (fill<1.0> eps))))",
        );
        // A per-row scale is no RMSNorm weight.
        let row = "(Mul (Div x (Sqrt (Add (ReduceMean<axes=[-1]> (Mul x x)) eps))) gr)";
        check_not(L, &rules(), row, "(RMSNormalization<epsilon=1e-5> x (flat gr))");
    }

    #[test]
    fn activations_from_primitives() {
        let l = &[
            "x?f32[4,6]",
            "half:f32[]=0.5",
            "one:f32[]=1.0",
            "sqrt2:f32[]=1.4142135",
            "r:f32[]=0.70710677",
            "k:f32[]=0.044715",
            "s:f32[]=0.7978846",
            "three:f32[]=3.0",
            "six:f32[]=6.0",
            "wrong:f32[]=0.6",
        ];
        let erf = "(Add (Erf (Div x sqrt2)) one)";
        for gelu in [
            format!("(Mul (Mul x half) {erf})"),
            format!("(Mul x (Mul {erf} half))"),
            format!("(Mul (Mul x {erf}) half)"),
            "(Mul (Mul half x) (Add one (Erf (Mul x r))))".to_string(),
        ] {
            check(l, &rules(), &gelu, "(Gelu x)");
        }
        let tanh = "(Mul (Mul half x) (Add one (Tanh (Mul s (Add x (Mul k (Pow x three)))))))";
        check(l, &rules(), tanh, "(Gelu<approximate=tanh> x)");
        // A different constant is not GELU.
        check_not(l, &rules(), "(Mul (Mul x half) (Add (Erf (Mul x wrong)) one))", "(Gelu x)");
        check(l, &rules(), "(Mul (Sigmoid x) x)", "(Silu x)");
        check(l, &rules(), "(Mul x (Tanh (Log (Add (Exp x) one))))", "(Mish x)");
        check(l, &rules(), "(Div (Mul x (Clip<max=6.0;min=0.0> (Add x three))) six)", "(HardSwish x)");
        check(l, &rules(), "(Mul x (HardSigmoid<alpha=0.16666667> x))", "(HardSwish x)");
        // HardSigmoid's default α (0.2) is not HardSwish's.
        check_not(l, &rules(), "(Mul x (HardSigmoid x))", "(HardSwish x)");
        // x·σ(y) is not SiLU.
        check_not(&["x?f32[4]", "y?f32[4]"], &rules(), "(Mul x (Sigmoid y))", "(Silu x)");
    }

    #[test]
    fn transposes_fold_into_gemm() {
        let l = &["x?f32[3,4]", "w?f32[5,4]", "a?f32[4,3]", "v?f32[4,5]", "x3?f32[2,3,4]"];
        check(l, &rules(), "(MatMul x (Transpose<perm=[1,0]> w))", "(Gemm<transB=1> x w)");
        check(l, &rules(), "(MatMul (Transpose a) v)", "(Gemm<transA=1> a v)");
        // A batched operand is no Gemm operand.
        check_not(l, &rules(), "(MatMul x3 (Transpose<perm=[1,0]> w))", "(Gemm<transB=1> x3 w)");
    }

    #[test]
    fn conv_add_and_mul_become_affines() {
        let l = &["x?f32[1,2,5,5]", "w:f32[3,2,3,3]", "c:f32[3,1,1]", "h:f32[3]"];
        check(l, &rules(), "(Add (Conv x w) c)", "(affine (Conv x w) (fill<1.0> c) c)");
        check(l, &rules(), "(Mul (Conv x w) c)", "(affine (Conv x w) c (fill<0.0> c))");
        // Varying along the width, not the channels: no conv fold.
        check_not(l, &rules(), "(Add (Conv x w) h)", "(affine (Conv x w) (fill<1.0> h) h)");
    }
}
