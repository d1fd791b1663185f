//! `kiln compile --explain`: snapshots of the explanation of every zoo model, the optimised graph
//! unchanged by explaining, every rule and node an explanation names real, and the CLI contract.

use kiln::{Backend, Explanation, Model, OptLevel, Options};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// models/*.json, the *_bench variants included or not.
fn zoo(bench: bool) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut models: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("models/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| bench || !stem(p).ends_with("_bench"))
        .collect();
    models.sort();
    models
}

fn stem(path: &Path) -> String {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string()
}

fn options(explain: bool) -> Options {
    let mut options = Options { backend: Backend::Interp, opt_level: OptLevel::O2, ..Options::default() };
    options.optimizer.explain = explain;
    options
}

/// The optimised graph's text and the explanation.
fn compile(model: &Model, explain: bool) -> (String, Option<Explanation>) {
    let compiled = kiln::compile(model.clone(), &options(explain)).unwrap_or_else(|e| panic!("{e}"));
    (kiln::ir::text::print(compiled.graph()), compiled.explanation().cloned())
}

#[test]
fn explain_snapshots_of_every_zoo_model() {
    let models = zoo(false);
    assert!(models.len() >= 16, "{models:?}");
    for path in models {
        let name = stem(&path);
        let model = kiln::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (_, explanation) = compile(&model, true);
        let explanation = explanation.unwrap_or_else(|| panic!("{name}: no explanation at -O2 with explain on"));
        insta::assert_snapshot!(name, explanation.to_string());
    }
}

/// Explaining only logs: the optimised graph (and its weights' names, in the text) is the same.
#[test]
fn explaining_changes_nothing_that_is_optimised() {
    for path in zoo(true) {
        let name = stem(&path);
        let model = kiln::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (plain, none) = compile(&model, false);
        let (explained, some) = compile(&model, true);
        assert!(none.is_none() && some.is_some(), "{name}");
        assert!(plain == explained, "{name}: the optimised graph differs with --explain");
    }
}

/// Every rule an explanation names exists, every input node it names is a node of the input graph,
/// every output node a node, weight or input of the optimised graph, and each chain starts at a
/// node of the input graph.
#[test]
fn explanations_name_rules_and_nodes_that_exist() {
    let rules: HashSet<String> =
        kiln_passes::rules::families().iter().flat_map(|f| f.rules.iter().map(|r| r.name.to_string())).collect();
    let mut chains = 0;
    for path in zoo(false) {
        let name = stem(&path);
        let model = kiln::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let compiled = kiln::compile(model.clone(), &options(true)).unwrap_or_else(|e| panic!("{e}"));
        let explanation = compiled.explanation().expect("explained");
        let names = |g: &kiln::Graph| -> HashSet<String> {
            g.dag()
                .node_indices()
                .flat_map(|id| {
                    let node = g.node(id);
                    std::iter::once(node.name.clone()).chain(node.outputs.iter().map(|o| o.name.clone()))
                })
                .collect()
        };
        let (input, output) = (names(&model.graph), names(compiled.graph()));
        assert_eq!(explanation.input_nodes, model.graph.num_op_nodes(), "{name}");
        let mut seen = HashSet::new();
        for change in &explanation.changed {
            assert!(input.contains(&change.node), "{name}: {} is not an input node", change.node);
            assert!(seen.insert(&change.node), "{name}: {} explained twice", change.node);
            assert!(change.into.iter().all(|n| input.contains(n)), "{name}: {:?}", change.into);
            match change.fate {
                kiln::Fate::Absorbed => {
                    assert!(!change.into.is_empty(), "{name}: {} absorbed into nothing", change.node)
                }
                _ => assert!(!change.by.is_empty(), "{name}: {} changed into nothing", change.node),
            }
            for d in &change.by {
                assert!(output.contains(&d.node) || input.contains(&d.node), "{name}: {} not in the output", d.node);
                for step in &d.rules {
                    assert!(rules.contains(&step.rule), "{name}: unknown rule {}", step.rule);
                }
                if let Some(first) = d.rules.first() {
                    chains += 1;
                    assert!(
                        input.contains(&first.at),
                        "{name}: {}'s chain starts at {}, not an input node",
                        d.node,
                        first.at
                    );
                }
            }
        }
    }
    assert!(chains > 20, "only {chains} rule chains over the zoo");
}

/// The JSON names the same changed nodes, fates, nodes of the optimised graph and rule steps as
/// the text, and the text nothing more: every JSON entry is found on its line of the text, and the
/// text has exactly one line per changed node and per derivation.
fn assert_json_matches_text(name: &str, explanation: &Explanation) {
    let text = explanation.to_string();
    let json = kiln::explanation_json(explanation);
    assert_eq!(json["schema"], "kiln-explain/1", "{name}");
    assert_eq!(json["graph"], explanation.graph.as_str(), "{name}");
    assert_eq!(json["input_nodes"], explanation.input_nodes, "{name}");
    let changed = json["changed"].as_array().expect("changed is an array");
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with(&format!("explain {}: {} of ", explanation.graph, changed.len())), "{name}: {header}");
    let lines: Vec<&str> = lines.collect();
    let heads: Vec<&str> = lines.iter().copied().filter(|l| !l.starts_with("  -> ")).collect();
    assert_eq!(heads.len(), changed.len(), "{name}: one text line per changed node");
    let mut derivation_lines = 0;
    let mut at = 0;
    for (c, head) in changed.iter().zip(&heads) {
        let (node, op, fate) = (c["node"].as_str(), c["op"].as_str(), c["fate"].as_str());
        let (node, op, fate) = (node.expect("node"), op.expect("op"), fate.expect("fate"));
        assert!(head.starts_with(&format!("{node} ({op}): {fate}")), "{name}: {head} vs {c}");
        for key in ["into", "absorbs", "recentred", "recentred_for"] {
            for n in c[key].as_array().expect("array") {
                assert!(head.contains(n.as_str().expect("a name")), "{name}: {head} lacks {key} {n}");
            }
        }
        // This change's derivation lines follow its head line.
        at += lines[at..].iter().position(|l| l == head).expect("head line") + 1;
        let body: Vec<&str> = lines[at..].iter().copied().take_while(|l| l.starts_with("  -> ")).collect();
        let by = c["by"].as_array().expect("by is an array");
        if fate == "merged" {
            assert!(body.is_empty(), "{name}: {head}");
        } else {
            assert_eq!(body.len(), by.len(), "{name}: {head}");
            derivation_lines += body.len();
        }
        for (i, d) in by.iter().enumerate() {
            let line = if fate == "merged" { *head } else { body[i] };
            let (dn, dop) = (d["node"].as_str().expect("node"), d["op"].as_str().expect("op"));
            let shown = if fate == "merged" { format!("with {dn}") } else { format!("  -> {dop} '{dn}'") };
            assert!(line.contains(&shown), "{name}: {line} lacks {shown}");
            let steps: Vec<String> = d["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .map(|s| format!("{} @ {}", s["rule"].as_str().expect("rule"), s["at"].as_str().expect("at")))
                .collect();
            if !steps.is_empty() {
                assert!(line.ends_with(&format!(" by {}", steps.join(" -> "))), "{name}: {line} vs {steps:?}");
            }
        }
    }
    assert_eq!(derivation_lines, lines.len() - heads.len(), "{name}: derivation lines the JSON lacks");
}

/// Same model, same text; over the whole zoo, the JSON says the same as the text.
#[test]
fn explanations_are_deterministic_and_the_json_matches_the_text() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/prelm_transformer.json");
    let model = kiln::load(&path).expect("loads");
    let (_, a) = compile(&model, true);
    let (_, b) = compile(&model, true);
    let (a, b) = (a.expect("explained"), b.expect("explained"));
    assert_eq!(a.to_string(), b.to_string());
    for path in zoo(false) {
        let name = stem(&path);
        let model = kiln::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (_, explanation) = compile(&model, true);
        assert_json_matches_text(&name, &explanation.expect("explained"));
    }
}

/// `--explain --json` of a BatchNorm-folding MLP and of a transformer block (LayerNorm γ/β folded
/// into the projections, Attention recognised), as data.
#[test]
fn explain_json_snapshots() {
    for model in ["mlp_bn", "transformer_block"] {
        let out = kiln_cli(&["compile", &format!("models/{model}.json"), "--explain", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
        let pretty = serde_json::to_string_pretty(&value).expect("prints");
        insta::assert_snapshot!(format!("{model}_json"), pretty);
    }
}

mod common;
use common::{kiln as kiln_cli, stderr, stdout};

#[test]
fn cli_explain_text_and_json() {
    let text = kiln_cli(&["compile", "models/mlp_bn.json", "--explain"]);
    assert!(text.status.success(), "{}", stderr(&text));
    let text = stdout(&text);
    assert!(text.starts_with("explain mlp_bn: 4 of 7 input nodes changed\n"), "{text}");
    assert!(text.contains("bn0 (BatchNormalization): replaced, absorbing fc0\n"), "{text}");
    assert!(text.contains("  -> Gemm 'fc0' by batchnorm-affine @ bn0 -> affine-after-gemm @ "), "{text}");

    let json = kiln_cli(&["compile", "models/mlp_bn.json", "--explain", "--json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    assert_eq!(value["schema"], "kiln-explain/1");
    assert_eq!(value["changed"].as_array().map(Vec::len), Some(4));

    // An ONNX model explains as a kiln JSON one does (node names from the ONNX file).
    let onnx = kiln_cli(&["compile", "models/onnx/graph_transformer.onnx", "--explain"]);
    assert!(onnx.status.success(), "{}", stderr(&onnx));
    let onnx = stdout(&onnx);
    assert!(onnx.starts_with("explain graph_transformer: "), "{onnx}");
    assert!(onnx.contains("l0.h_att (Div): replaced"), "{onnx}");
}

/// At -O0 nothing changed, and it says so (exit 0); a saved .kiln file (-O0 by default) too.
#[test]
fn cli_explain_at_o0_says_nothing_changed() {
    let out = kiln_cli(&["compile", "models/mlp_bn.json", "--explain", "-O0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "explain mlp_bn: 0 of 7 input nodes changed (-O0: the optimizer did not run)\n");
    let json = kiln_cli(&["compile", "models/mlp_bn.json", "--explain", "--json", "-O0"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("one JSON object");
    assert_eq!(value["changed"].as_array().map(Vec::len), Some(0));
    assert_eq!(value["note"], "-O0: the optimizer did not run");

    let dir = std::env::temp_dir().join(format!("kiln-explain-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let saved = dir.join("mlp_bn.kiln");
    let saved_str = saved.to_str().expect("utf-8 temp path");
    // -o with --explain: saved, and explained on stdout.
    let out = kiln_cli(&["compile", "models/mlp_bn.json", "--explain", "-o", saved_str]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("explain mlp_bn: 4 of 7"), "{}", stdout(&out));
    let out = kiln_cli(&["compile", saved_str, "--explain"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "explain mlp_bn: 0 of 5 input nodes changed (-O0: the optimizer did not run)\n");
    let _ = std::fs::remove_dir_all(&dir);
}

/// With --emit the emitted output is unchanged on stdout and the explanation goes to stderr.
#[test]
fn cli_explain_with_emit_keeps_stdout_as_it_was() {
    for emit in ["ir", "stats"] {
        let plain = kiln_cli(&["compile", "models/mlp_bn.json", "--emit", emit]);
        let explained = kiln_cli(&["compile", "models/mlp_bn.json", "--emit", emit, "--explain"]);
        assert!(explained.status.success(), "{}", stderr(&explained));
        if emit == "ir" {
            assert_eq!(stdout(&plain), stdout(&explained));
        } else {
            // compile_ms differs between runs: the same keys, one JSON object.
            let a: serde_json::Value = serde_json::from_slice(&plain.stdout).expect("stats");
            let b: serde_json::Value = serde_json::from_slice(&explained.stdout).expect("stats");
            let keys = |v: &serde_json::Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(keys(&a), keys(&b));
        }
        assert!(stderr(&explained).starts_with("explain mlp_bn: 4 of 7"), "{}", stderr(&explained));
    }
    let out = kiln_cli(&["compile", "models/mlp_bn.json", "--emit", "stats", "--explain", "--json"]);
    let _: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is the stats object alone");
    let explanation: serde_json::Value = serde_json::from_slice(&out.stderr).expect("stderr is the explanation");
    assert_eq!(explanation["schema"], "kiln-explain/1");
}

#[test]
fn cli_explain_usage_errors_and_help() {
    // --json without --explain (on compile): a usage error, exit 2.
    let out = kiln_cli(&["compile", "models/mlp_bn.json", "--emit", "stats", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // A bad model is exit 1 with --explain as without.
    for flag in ["--explain", "--emit=ir"] {
        let out = kiln_cli(&["compile", "models/no_such_model.json", flag]);
        assert_eq!(out.status.code(), Some(1), "{flag}: {}", stderr(&out));
    }
    let help = kiln_cli(&["compile", "--help"]);
    assert!(help.status.success());
    let help = stdout(&help);
    assert!(help.contains("--explain") && help.contains("--json") && help.contains("kiln-explain/1"), "{help}");
}
