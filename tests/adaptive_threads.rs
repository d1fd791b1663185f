//! A JIT-compiled model's first runs measure all threads against one and keep the faster
//! (`kiln::threads`). The choice must never show in the results: every run, whichever
//! thread count it used, gives the same outputs bit for bit (the model here makes no NaN, whose payload may differ).

use kiln::threads::{MAX_UNDECIDED_RUNS, SAMPLES};
use kiln::{Backend, OptLevel, Options, Tensor};

fn compile(adaptive_threads: bool, backend: Backend) -> kiln::CompiledModel {
    // Its GEMMs, LayerNorms and softmax split across two threads when they are allowed to.
    let model = kiln::load("models/transformer_block.json").expect("loads");
    let options =
        Options { backend, opt_level: OptLevel::O2, threads: Some(2), adaptive_threads, ..Default::default() };
    kiln::compile(model, &options).expect("compiles")
}

fn bits(outputs: &[(String, Tensor)]) -> Vec<Vec<u32>> {
    outputs.iter().map(|(_, t)| t.as_f32().expect("f32 outputs").iter().map(|x| x.to_bits()).collect()).collect()
}

#[test]
fn the_first_runs_choose_a_count_and_every_run_gives_the_same_bits() {
    let compiled = compile(true, Backend::Jit);
    let inputs = kiln::default_inputs(compiled.graph()).expect("inputs");
    assert_eq!(compiled.threads_in_use(), None, "nothing measured before the first run");
    let first = bits(&compiled.run(&inputs).expect("runs"));
    // The warm-up run, then SAMPLES runs on each side (and SAMPLES of a per-step plan when the
    // steps disagree): the last of them makes the choice.
    for run in 1..MAX_UNDECIDED_RUNS {
        assert_eq!(bits(&compiled.run(&inputs).expect("runs")), first, "run {run}");
        if run < 2 * SAMPLES {
            assert_eq!(compiled.threads_in_use(), None, "still measuring after run {run}");
        }
    }
    let chosen = compiled.threads_in_use().expect("chosen after the sample runs");
    assert!(chosen == 1 || chosen == 2, "{chosen}");
    for run in 0..3 {
        assert_eq!(bits(&compiled.run(&inputs).expect("runs")), first, "after the choice, run {run}");
    }
}

#[test]
fn fixed_threads_and_the_interpreter_do_not_measure() {
    let fixed = compile(false, Backend::Jit);
    assert_eq!(fixed.threads_in_use(), Some(2));
    let inputs = kiln::default_inputs(fixed.graph()).expect("inputs");
    for _ in 0..MAX_UNDECIDED_RUNS + 2 {
        fixed.run(&inputs).expect("runs");
    }
    assert_eq!(fixed.threads_in_use(), Some(2));
    assert_eq!(compile(true, Backend::Interp).threads_in_use(), None);
}

#[test]
fn profiled_runs_are_not_samples() {
    let compiled = compile(true, Backend::Jit);
    let inputs = kiln::default_inputs(compiled.graph()).expect("inputs");
    for _ in 0..MAX_UNDECIDED_RUNS + 2 {
        compiled.run_profiled(&inputs).expect("runs");
    }
    assert_eq!(compiled.threads_in_use(), None, "timing each step would bias the choice");
}
