//! The IR text form of every bundled model: snapshotted (a changed snapshot is a claim that the new
//! IR is better) and round-tripped (print → parse gives an equal graph).

use std::path::Path;

fn bundled_models() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut models: Vec<_> = std::fs::read_dir(&dir)
        .expect("models/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    models.sort();
    models
}

#[test]
fn text_form_round_trips_for_every_bundled_model() {
    let models = bundled_models();
    assert!(models.len() >= 2);
    for path in models {
        let model = kiln::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let text = kiln::ir::text::print(&model.graph);
        let parsed = kiln::ir::text::parse(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
        assert!(parsed.graph == model.graph, "{} does not round-trip:\n{text}", path.display());
        assert_eq!(kiln::ir::text::print(&parsed.graph), text);
    }
}

#[test]
fn text_form_snapshots() {
    // Every model small enough to read: the bundled ones and the zoo (its *_bench variants differ
    // from their small twins only in sizes).
    let models: Vec<_> = bundled_models()
        .into_iter()
        .filter(|p| !p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().ends_with("_bench"))
        .collect();
    assert!(models.len() >= 16, "{models:?}");
    for path in models {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let model = kiln::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        insta::assert_snapshot!(name, kiln::ir::text::print(&model.graph));
    }
}
