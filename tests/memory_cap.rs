//! The memory cap (issue 11): a model whose weights plus planned intermediates exceed
//! `Options::memory_cap` / `--memory-cap` is refused at compile time with an error naming the
//! model and the size, before anything of that size is allocated — never an abort.

use kiln::{Backend, OptLevel, Options};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the kiln binary runs")
}

/// A model of one tiny input expanded to `elems` f32 twice over (two 8 GiB intermediates at
/// 2³¹ elements, each within MAX_ELEMENTS), written as .kir into a scratch directory.
fn expand_model(test: &str, elems: usize) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-memcap-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big_expand.kir");
    let text = format!(
        "kir 1\ngraph big_expand\ninput x: f32[1]\n\
         node e1 = Expand(x) {{shape=[{elems}]}} -> e1: f32[{elems}]\n\
         node e2 = Neg(e1) -> e2: f32[{elems}]\n\
         node s = ReduceSum(e2) {{keepdims=0}} -> s: f32[]\n\
         output s\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn issue11_plans_above_the_default_cap_are_refused_before_allocation() {
    let path = expand_model("lib", 1 << 31);
    for backend in [Backend::Jit, Backend::Interp] {
        for opt_level in [OptLevel::O0, OptLevel::O2] {
            let model = kiln::load(&path).unwrap();
            let options = Options { backend, opt_level, threads: Some(2), ..Default::default() };
            let t = std::time::Instant::now();
            let err = kiln::compile(model, &options).err().expect("an 8 GiB plan must be refused").to_string();
            assert!(err.contains("big_expand") && err.contains("memory cap"), "{backend:?} {opt_level:?}: {err}");
            // Refused from the plan, not after touching gigabytes.
            assert!(t.elapsed().as_secs_f64() < 30.0, "{backend:?} {opt_level:?} took {:?}", t.elapsed());
        }
    }
}

#[test]
fn issue11_memory_cap_option_and_flag() {
    // Within the default cap, refused under a small one.
    let model = kiln::load("models/mlp_bn.json").unwrap();
    let options = Options { memory_cap: 1024, ..Default::default() };
    let err = kiln::compile(model, &options).err().expect("refused under a 1 KiB cap").to_string();
    assert!(err.contains("mlp_bn") && err.contains("1024"), "{err}");
    assert!(kiln::compile(kiln::load("models/mlp_bn.json").unwrap(), &Options::default()).is_ok());

    for cmd in ["run", "bench", "compile"] {
        let mut args = vec![cmd, "models/mlp_bn.json", "--memory-cap", "1KiB"];
        if cmd == "compile" {
            args.extend(["--emit", "stats"]);
        }
        let out = kiln(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "kiln {cmd}: {stderr}");
        assert!(stderr.contains("mlp_bn") && stderr.contains("memory cap"), "kiln {cmd}: {stderr}");
        args[3] = "16GiB";
        let out = kiln(&args);
        assert!(out.status.success(), "kiln {cmd} --memory-cap 16GiB: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = kiln(&["run", "models/mlp_bn.json", "--memory-cap", "lots"]);
    assert_eq!(out.status.code(), Some(2), "a bad size is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("16GiB"));

    let path = expand_model("cli", 1 << 31);
    let out = kiln(&["run", path.to_str().unwrap(), "-O0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("big_expand") && stderr.contains("memory cap"), "{stderr}");
}
