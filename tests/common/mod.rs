//! Helpers shared by the integration tests that run the `kiln` binary.
// Each test crate that declares `mod common;` uses some of these, not all.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs the `kiln` binary built for these tests, from the workspace root.
pub fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the kiln binary runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
