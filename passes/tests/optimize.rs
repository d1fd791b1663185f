//! The optimizer end to end: small graphs optimised, checked structurally (what was folded, what
//! must not be) and numerically against the unoptimised graph on the reference interpreter.
//!
//! Tolerance: |optimised − original| ≤ 1e-4 + 1e-4·|original|. Folding reassociates f32 sums
//! (per element ≈ 1.2e-7 × the reduction length ≤ 64, times a few ops ≈ 1e-5); 1e-4 leaves a
//! margin of 10 while still catching any wrong fold, whose errors are of the order of the values.

mod common;

use common::{Build, count, optimize_and_compare};
use kiln_passes::{OptimizeConfig, optimize};

const RTOL: f32 = 1e-4;
const ATOL: f32 = 1e-4;

/// x → Conv(pad 1) → BN → out
fn conv_bn(also_output_conv: bool) -> Build {
    let mut b = Build::new("conv_bn");
    b.input("x", &[1, 2, 5, 5])
        .weight("w", &[3, 2, 3, 3], -1.0, 1.0)
        .weight("cb", &[3], -1.0, 1.0)
        .weight("g", &[3], 0.5, 1.5)
        .weight("beta", &[3], -1.0, 1.0)
        .weight("mean", &[3], -1.0, 1.0)
        .weight("var", &[3], 0.5, 2.0)
        .node("c", "Conv<pads=[1,1,1,1]>", &["x", "w", "cb"])
        .node("y", "BatchNormalization", &["c", "g", "beta", "mean", "var"])
        .output("y");
    if also_output_conv {
        b.output("c");
    }
    b
}

#[test]
fn batchnorm_after_conv_folds_into_it() {
    let (model, feeds) = conv_bn(false).finish(0);
    let (opt, report) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert_eq!(count(&opt, "BatchNormalization"), 0, "{:?}", opt.graph.op_counts());
    assert_eq!(opt.graph.num_op_nodes(), 1);
    assert_eq!((report.ops_before, report.ops_after), (2, 1));
    assert!(report.rules_fired.get("batchnorm-affine").is_some_and(|&n| n > 0));
    assert!(report.rules_fired.contains_key("affine-after-conv"));
    // The folded weights are new, the originals untouched and not reused under their names.
    assert!(opt.weights.get("w").is_none());
    assert!(opt.weights.iter().all(|(name, _)| !["g", "beta", "mean", "var"].contains(&name)));
}

#[test]
fn batchnorm_whose_input_is_an_output_keeps_both_values() {
    let (model, feeds) = conv_bn(true).finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    // Both outputs are still produced under their names (checked numerically above); the conv the
    // output needs is computed once.
    assert_eq!(count(&opt, "Conv"), 1, "{:?}", opt.graph.op_counts());
}

/// x → BN → Conv → out, with or without zero padding.
fn bn_conv(pads: &str) -> Build {
    let mut b = Build::new("bn_conv");
    b.input("x", &[1, 2, 5, 5])
        .weight("g", &[2], 0.5, 1.5)
        .weight("beta", &[2], -1.0, 1.0)
        .weight("mean", &[2], -1.0, 1.0)
        .weight("var", &[2], 0.5, 2.0)
        .weight("w", &[3, 2, 3, 3], -1.0, 1.0)
        .weight("cb", &[3], -1.0, 1.0)
        .node("n", "BatchNormalization", &["x", "g", "beta", "mean", "var"])
        .node("y", &format!("Conv{pads}"), &["n", "w", "cb"])
        .output("y");
    b
}

#[test]
fn batchnorm_before_an_unpadded_conv_folds_backwards() {
    let (model, feeds) = bn_conv("").finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert_eq!(opt.graph.num_op_nodes(), 1, "{:?}", opt.graph.op_counts());
}

#[test]
fn negative_batchnorm_before_a_zero_padded_conv_is_not_folded_into_it() {
    let (model, feeds) = bn_conv("<pads=[1,1,1,1]>").finish(0);
    let (opt, report) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert!(!report.rules_fired.contains_key("affine-before-conv"), "{:?}", report.rules_fired);
    // The conv still reads a normalised tensor, not x.
    let conv = opt.graph.op_nodes().into_iter().find(|&id| opt.graph.node(id).op().unwrap().name() == "Conv").unwrap();
    let first = opt.graph.node_inputs(conv)[0];
    assert_ne!(opt.graph.value_name(first), "x");
}

/// A Pre-LN transformer stack over token embeddings: h = E[ids] + P; per layer
/// h += W2·relu(W1·LN(h) + b1) + b2 (optionally gated: h += gate ⊙ branch); out = LN(h)·Wh.
fn pre_ln(layers: usize, gated: bool) -> Build {
    // Big enough that a norm's memory traffic, not the per-kernel overhead, decides the cost.
    let (d, t) = (32, 16);
    let mut b = Build::new("pre_ln");
    b.input_i64("ids", &[t]).weight("emb", &[10, d], -1.0, 1.0).weight("pos", &[t, d], -0.5, 0.5);
    if gated {
        b.input("gate", &[t, d]);
    }
    b.node("e", "Gather", &["emb", "ids"]).node("h0", "Add", &["e", "pos"]);
    for l in 0..layers {
        let h = format!("h{l}");
        let p = |s: &str| format!("{s}{l}");
        b.weight(&p("g"), &[d], 0.5, 1.5)
            .weight(&p("bt"), &[d], -0.5, 0.5)
            .weight(&p("w1"), &[d, 2 * d], -0.5, 0.5)
            .weight(&p("b1"), &[2 * d], -0.5, 0.5)
            .weight(&p("w2"), &[2 * d, d], -0.5, 0.5)
            .weight(&p("b2"), &[d], -0.5, 0.5)
            .node(&p("ln"), "LayerNormalization", &[&h, &p("g"), &p("bt")])
            .node(&p("m1"), "MatMul", &[&p("ln"), &p("w1")])
            .node(&p("a1"), "Add", &[&p("m1"), &p("b1")])
            .node(&p("r"), "Relu", &[&p("a1")])
            .node(&p("m2"), "MatMul", &[&p("r"), &p("w2")])
            .node(&p("a2"), "Add", &[&p("m2"), &p("b2")]);
        let write = if gated {
            b.node(&p("gated"), "Mul", &[&p("a2"), "gate"]);
            p("gated")
        } else {
            p("a2")
        };
        b.node(&format!("h{}", l + 1), "Add", &[&h, &write]);
    }
    b.weight("gf", &[d], 0.5, 1.5)
        .weight("bf", &[d], -0.5, 0.5)
        .weight("wh", &[d, 3], -0.5, 0.5)
        .node("lnf", "LayerNormalization", &[&format!("h{layers}"), "gf", "bf"])
        .node("out", "MatMul", &["lnf", "wh"])
        .output("out");
    b
}

#[test]
fn pre_ln_stack_becomes_pre_rmsnorm() {
    let (model, feeds) = pre_ln(2, false).finish(10);
    let (opt, report) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert_eq!(count(&opt, "LayerNormalization"), 0, "{:?}\n{report:?}", opt.graph.op_counts());
    assert_eq!(count(&opt, "RMSNormalization"), 3, "{:?}", opt.graph.op_counts());
    // Every RMSNorm carries the name of the LayerNorm it replaces, and no optimizer node has a
    // made-up name: each one starts with the name of a node of the input graph.
    let names = op_names(&opt);
    for ln in ["ln0", "ln1", "lnf"] {
        assert_eq!(names.get(ln).map(String::as_str), Some("RMSNormalization"), "{names:?}");
    }
    let original = op_names(&model);
    for name in names.keys() {
        let source = name.split('.').next().unwrap_or_default();
        assert!(original.contains_key(source), "node {name} does not name a source node: {names:?}");
    }
}

/// Op nodes by name.
fn op_names(model: &kiln_ir::Model) -> std::collections::BTreeMap<String, String> {
    let g = &model.graph;
    g.dag()
        .node_indices()
        .filter_map(|id| g.node(id).op().map(|op| (g.node(id).name.clone(), op.name().to_string())))
        .collect()
}

#[test]
fn a_batchnorm_folded_into_a_conv_keeps_the_conv_name() {
    let mut b = Build::new("conv_bn");
    b.input("x", &[1, 2, 5, 5])
        .weight("w", &[3, 2, 3, 3], -0.5, 0.5)
        .weight("g", &[3], 0.5, 1.5)
        .weight("bt", &[3], -0.5, 0.5)
        .weight("mu", &[3], -0.5, 0.5)
        .weight("var", &[3], 0.5, 2.0)
        .node("conv", "Conv<pads=[1,1,1,1]>", &["x", "w"])
        .node("bn", "BatchNormalization", &["conv", "g", "bt", "mu", "var"])
        .output("bn");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    let names = op_names(&opt);
    assert_eq!(names.into_iter().collect::<Vec<_>>(), vec![("conv".to_string(), "Conv".to_string())]);
}

#[test]
fn negative_gated_residual_stream_keeps_layernorm() {
    let (model, feeds) = pre_ln(2, true).finish(10);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert_eq!(count(&opt, "RMSNormalization"), 0, "{:?}", opt.graph.op_counts());
    // The first LN reads the (re-centrable) embedding sum, but every later one reads a gated stream.
    assert!(count(&opt, "LayerNormalization") >= 2, "{:?}", opt.graph.op_counts());
}

#[test]
fn negative_layernorm_of_an_input_is_not_converted() {
    let mut b = Build::new("ln");
    b.input("x", &[2, 8])
        .weight("g", &[8], 0.5, 1.5)
        .weight("bt", &[8], -0.5, 0.5)
        .node("y", "LayerNormalization", &["x", "g", "bt"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert_eq!(count(&opt, "RMSNormalization"), 0);
    assert_eq!(count(&opt, "LayerNormalization"), 1);
}

#[test]
fn expanded_softmax_is_recognised() {
    let mut b = Build::new("softmax");
    b.input("x", &[2, 3, 5])
        .node("m", "ReduceMax<axes=[2]>", &["x"])
        .node("s", "Sub", &["x", "m"])
        .node("e", "Exp", &["s"])
        .node("z", "ReduceSum<axes=[-1]>", &["e"])
        .node("y", "Div", &["e", "z"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, 1e-5, 1e-6);
    assert_eq!(opt.graph.op_counts().into_iter().collect::<Vec<_>>(), vec![("Softmax", 1)]);
}

#[test]
fn layernorm_scaling_folds_into_gamma() {
    let mut b = Build::new("lns");
    b.input("x", &[2, 8])
        .weight("g", &[8], 0.5, 1.5)
        .weight("bt", &[8], -0.5, 0.5)
        .weight_data("inv_sqrt_l", &[], vec![1.0 / 3f32.sqrt()])
        .node("n", "LayerNormalization", &["x", "g", "bt"])
        .node("y", "Mul", &["n", "inv_sqrt_l"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert_eq!(count(&opt, "Mul"), 0, "{:?}", opt.graph.op_counts());
}

#[test]
fn neutral_elements_and_transposes_disappear() {
    let mut b = Build::new("algebra");
    b.input("x", &[2, 3])
        .weight_data("ones", &[3], vec![1.0; 3])
        .weight_data("zeros", &[2, 3], vec![0.0; 6])
        .node("a", "Mul", &["x", "ones"])
        .node("b", "Add", &["a", "zeros"])
        .node("t", "Transpose<perm=[1,0]>", &["b"])
        .node("y", "Transpose<perm=[1,0]>", &["t"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, 0.0, 0.0);
    // Only the Identity that keeps the output's name is left.
    assert_eq!(opt.graph.op_counts().into_iter().collect::<Vec<_>>(), vec![("Identity", 1)]);
}

#[test]
fn limits_are_reported_as_stop_reasons() {
    let (model, _) = pre_ln(2, false).finish(10);
    let config = OptimizeConfig { iter_limit: 1, ..OptimizeConfig::default() };
    let (_, report) = optimize(&model, &config).unwrap();
    assert!(report.stop_reason.contains("iteration limit 1"), "{}", report.stop_reason);
    assert_eq!(report.iterations, 2);
    assert!(report.egraph_nodes > 0 && report.egraph_classes > 0);
    let phases: Vec<&str> = report.phase_ms.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(phases, ["lift", "recognise", "fold", "extract", "lower", "crms"]);
}

#[test]
fn scaled_masked_attention_becomes_one_op() {
    let mut b = Build::new("attention");
    b.input("q", &[2, 4, 8])
        .input("k", &[2, 6, 8])
        .input("v", &[2, 6, 5])
        .input("mask", &[4, 6])
        .weight_data("sqrt_d", &[], vec![8f32.sqrt()])
        .node("kt", "Transpose<perm=[0,2,1]>", &["k"])
        .node("s", "MatMul", &["q", "kt"])
        .node("scaled", "Div", &["s", "sqrt_d"])
        .node("biased", "Add", &["scaled", "mask"])
        .node("p", "Softmax<axis=2>", &["biased"])
        .node("y", "MatMul", &["p", "v"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, report) = optimize_and_compare(&model, &feeds, 1e-5, 1e-6);
    assert_eq!(count(&opt, "Attention"), 1, "{:?} {:?}", opt.graph.op_counts(), report.rules_fired);
    assert_eq!(count(&opt, "Softmax"), 0);
}

#[test]
fn graph_transformer_masked_attention_uses_masked_softmax() {
    // a_i = Σ_j exp(clamp(S_ij))·M_ij V_j / Σ_j exp(clamp(S_ij))·M_ij, every row with an edge.
    let mut b = Build::new("graph_attention");
    let mut mask = vec![0.0f32; 36];
    for i in 0..6 {
        mask[i * 6 + (i + 1) % 6] = 1.0;
        mask[i * 6 + (i + 3) % 6] = 1.0;
    }
    b.input("s", &[2, 6, 6])
        .input("v", &[2, 6, 4])
        .weight_data("m", &[6, 6], mask)
        .node("c", "Clip<max=5.0;min=-5.0>", &["s"])
        .node("e", "Exp", &["c"])
        .node("p", "Mul", &["e", "m"])
        .node("num", "MatMul", &["p", "v"])
        .node("den", "ReduceSum<axes=[2]>", &["p"])
        .node("y", "Div", &["num", "den"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, 1e-5, 1e-6);
    assert_eq!(count(&opt, "MaskedSoftmax"), 1, "{:?}", opt.graph.op_counts());
    assert_eq!(count(&opt, "Exp"), 0);
}

#[test]
fn unified_norm_folds_into_the_next_linear() {
    let mut b = Build::new("un");
    b.input("x", &[3, 8])
        .weight("g", &[8], 0.5, 1.5)
        .weight("bt", &[8], -0.5, 0.5)
        .weight("rv", &[8], 0.5, 2.0)
        .weight("w", &[8, 4], -0.5, 0.5)
        .weight("bias", &[4], -0.5, 0.5)
        .node("n", "UnifiedNorm", &["x", "g", "bt", "rv"])
        .node("m", "MatMul", &["n", "w"])
        .node("y", "Add", &["m", "bias"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert_eq!(count(&opt, "UnifiedNorm"), 0, "{:?}", opt.graph.op_counts());
    assert_eq!(opt.graph.num_op_nodes(), 2, "{:?}", opt.graph.op_counts());
}

#[test]
fn powernorm_keeps_group_scaling_and_folds_its_affine() {
    let mut b = Build::new("pn");
    b.input("x", &[3, 8])
        .weight("g", &[8], 0.5, 1.5)
        .weight("bt", &[8], -0.5, 0.5)
        .weight("phi", &[8], 0.5, 2.0)
        .weight("w", &[8, 4], -0.5, 0.5)
        .node("n", "PowerNorm<groups=2>", &["x", "g", "bt", "phi"])
        .node("y", "MatMul", &["n", "w"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert_eq!(count(&opt, "PowerNorm"), 1, "{:?}", opt.graph.op_counts());
}

#[test]
fn eval_instance_norm_as_batchnorm_folds_through_reflect_padding() {
    // GDWCT's ConvBlock: ReflectionPad → Conv(pad 0) → IN(eval, running stats) → ReLU, twice.
    let mut b = Build::new("gdwct_block");
    b.input("x", &[1, 2, 6, 6])
        .weight("w1", &[2, 2, 3, 3], -0.5, 0.5)
        .weight("b1", &[2], -0.5, 0.5)
        .weight("g", &[2], 0.5, 1.5)
        .weight("bt", &[2], -0.5, 0.5)
        .weight("mu", &[2], -0.5, 0.5)
        .weight("var", &[2], 0.5, 2.0)
        .weight("w2", &[3, 2, 3, 3], -0.5, 0.5)
        .node("p1", "Pad<mode=reflect;pads=[0,0,1,1,0,0,1,1]>", &["x"])
        .node("c1", "Conv", &["p1", "w1", "b1"])
        .node("n1", "BatchNormalization", &["c1", "g", "bt", "mu", "var"])
        .node("p2", "Pad<mode=reflect;pads=[0,0,1,1,0,0,1,1]>", &["n1"])
        .node("y", "Conv", &["p2", "w2"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert_eq!(count(&opt, "BatchNormalization"), 0, "{:?}", opt.graph.op_counts());
    assert_eq!(opt.graph.num_op_nodes(), 4, "{:?}", opt.graph.op_counts());
}

#[test]
fn batchnorm1d_after_gemm_folds_into_it() {
    let mut b = Build::new("gemm_bn");
    b.input("x", &[3, 6])
        .weight("w", &[4, 6], -0.5, 0.5)
        .weight("c", &[4], -0.5, 0.5)
        .weight("g", &[4], 0.5, 1.5)
        .weight("bt", &[4], -0.5, 0.5)
        .weight("mu", &[4], -0.5, 0.5)
        .weight("var", &[4], 0.5, 2.0)
        .node("h", "Gemm<transB=1>", &["x", "w", "c"])
        .node("y", "BatchNormalization", &["h", "g", "bt", "mu", "var"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    assert_eq!(opt.graph.op_counts().into_iter().collect::<Vec<_>>(), vec![("Gemm", 1)]);
}

#[test]
fn batchnorm_output_that_is_also_a_graph_output_keeps_its_value() {
    // x → BN → y (an output) → Conv(no padding) → z (an output): folding BN into the Conv must not
    // lose y.
    let mut b = Build::new("bn_output");
    b.input("x", &[1, 2, 5, 5])
        .weight("g", &[2], 0.5, 1.5)
        .weight("beta", &[2], -1.0, 1.0)
        .weight("mean", &[2], -1.0, 1.0)
        .weight("var", &[2], 0.5, 2.0)
        .weight("w", &[3, 2, 3, 3], -1.0, 1.0)
        .node("y", "BatchNormalization", &["x", "g", "beta", "mean", "var"])
        .node("z", "Conv", &["y", "w"])
        .output("y")
        .output("z");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, RTOL, ATOL);
    let outputs: Vec<&str> = opt.graph.outputs().iter().map(|&v| opt.graph.value_name(v)).collect();
    assert_eq!(outputs, ["y", "z"]);
}

#[test]
fn fused_kiln_ops_can_be_turned_off_for_a_backend_without_them() {
    let mut b = Build::new("attention_plain");
    b.input("q", &[2, 4, 8])
        .input("kt", &[2, 8, 6])
        .input("v", &[2, 6, 5])
        .node("s", "MatMul", &["q", "kt"])
        .node("e", "Exp", &["s"])
        .node("z", "ReduceSum<axes=[-1]>", &["e"])
        .node("p", "Div", &["e", "z"])
        .node("y", "MatMul", &["p", "v"])
        .output("y");
    let (model, _) = b.finish(0);
    let config = OptimizeConfig { kiln_ops: false, ..OptimizeConfig::default() };
    let (opt, _) = optimize(&model, &config).unwrap();
    assert_eq!(count(&opt, "Attention"), 0, "{:?}", opt.graph.op_counts());
    assert_eq!(count(&opt, "Softmax"), 1, "{:?}", opt.graph.op_counts());
    let (opt, _) = optimize(&model, &OptimizeConfig::default()).unwrap();
    assert_eq!(count(&opt, "Attention"), 1, "{:?}", opt.graph.op_counts());
}

#[test]
fn weight_reparameterisations_are_evaluated_at_compile_time() {
    // W = tanh(V)·s (a Weight-Compander-style re-parameterisation) computed in the graph.
    let mut b = Build::new("reparam");
    b.input("x", &[3, 4])
        .weight("v", &[4, 5], -1.0, 1.0)
        .weight_data("s", &[], vec![0.5])
        .node("t", "Tanh", &["v"])
        .node("w", "Mul", &["t", "s"])
        .node("y", "MatMul", &["x", "w"])
        .output("y");
    let (model, feeds) = b.finish(0);
    let (opt, _) = optimize_and_compare(&model, &feeds, 1e-6, 1e-6);
    assert_eq!(opt.graph.op_counts().into_iter().collect::<Vec<_>>(), vec![("MatMul", 1)]);
    assert_eq!(opt.weights.len(), 1);
}
