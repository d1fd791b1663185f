//! The `kiln` command: run, compile and check models.
//!
//! Exit codes: 0 success, 1 a problem with the model or the inputs, 2 a usage error.

use clap::{Args, Parser, Subcommand, ValueEnum};
use kiln::{Backend, CompiledModel, Error, OptLevel, Options, Tensor, TensorData};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kiln", version, about = "A neural-network model compiler: model graph in, native function out.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compile and run a model, printing a summary line per output.
    Run(RunArgs),
    /// Compile a model and print what it became.
    Compile(CompileArgs),
    /// Validate a model and print every problem found.
    Check {
        /// The model file (.json or .kir).
        model: PathBuf,
    },
}

#[derive(Args)]
struct CompileFlags {
    /// Optimisation level: -O0, -O1 or -O2.
    #[arg(short = 'O', value_name = "LEVEL", default_value = "2", value_parser = parse_opt_level)]
    opt_level: OptLevel,
    /// Worker threads (default: all cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
}

#[derive(Args)]
struct RunArgs {
    /// The model file (.json or .kir).
    model: PathBuf,
    /// An input as NAME=FILE.npy; repeat for each input. Inputs not given get seeded random values.
    #[arg(long = "input", value_name = "NAME=FILE", value_parser = parse_input_arg)]
    inputs: Vec<(String, PathBuf)>,
    /// Write each output to DIR/NAME.npy.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Which engine runs the model.
    #[arg(long, value_enum, default_value_t = BackendArg::Interp)]
    backend: BackendArg,
    #[command(flatten)]
    flags: CompileFlags,
}

#[derive(Args)]
struct CompileArgs {
    /// The model file (.json or .kir).
    model: PathBuf,
    /// What to print: the IR text form, a Graphviz graph, or statistics as one JSON object.
    #[arg(long, value_enum)]
    emit: Emit,
    #[command(flatten)]
    flags: CompileFlags,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// The reference interpreter.
    Interp,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    Ir,
    Dot,
    Stats,
}

fn parse_opt_level(s: &str) -> Result<OptLevel, String> {
    match s {
        "0" => Ok(OptLevel::O0),
        "1" => Ok(OptLevel::O1),
        "2" => Ok(OptLevel::O2),
        _ => Err(format!("expected 0, 1 or 2 (as in -O2), got {s:?}")),
    }
}

fn parse_input_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => Ok((name.to_string(), PathBuf::from(file))),
        _ => Err(format!("expected NAME=FILE.npy, got {s:?}")),
    }
}

fn options(flags: &CompileFlags, backend: Backend) -> Options {
    Options { backend, opt_level: flags.opt_level, threads: flags.threads.map(|n| n as usize) }
}

fn load_and_compile(model: &Path, options: &Options) -> Result<CompiledModel, Error> {
    let model = kiln::load(model)?;
    kiln::compile(model, options)
}

/// `NAME f32[d0,d1] mean=… std=… min=… max=…`
fn summary_line(name: &str, tensor: &Tensor) -> String {
    let values: Vec<f64> = match tensor.data() {
        TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
    };
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{name} {} mean={mean:.6} std={std:.6} min={min:.6} max={max:.6}", tensor.ty())
}

/// Output file names keep `[A-Za-z0-9._-]` and replace everything else with `_`.
fn file_name_for(tensor_name: &str) -> String {
    tensor_name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

fn run(args: &RunArgs) -> Result<(), Error> {
    let backend = match args.backend {
        BackendArg::Interp => Backend::Interp,
    };
    let compiled = load_and_compile(&args.model, &options(&args.flags, backend))?;
    let mut inputs = kiln::default_inputs(compiled.graph())?;
    let declared = compiled.input_types();
    for (name, path) in &args.inputs {
        let Some((_, expected)) = declared.iter().find(|(n, _)| n == name) else {
            let names: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::new(
                format!("--input {name}"),
                format!("the model has no input '{name}' (its inputs: {})", names.join(", ")),
            ));
        };
        let tensor = kiln::npy::read_npy(path).map_err(|e| Error::new(format!("--input {name}"), e))?;
        if tensor.ty() != *expected {
            return Err(Error::new(
                format!("--input {name}"),
                format!("{} holds {} but input '{name}' is {expected}", path.display(), tensor.ty()),
            ));
        }
        if let Some(slot) = inputs.iter_mut().find(|(n, _)| n == name) {
            slot.1 = tensor;
        }
    }
    let outputs = compiled.run(&inputs)?;
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("--output-dir {}", dir.display()), format!("cannot create: {e}")))?;
    }
    for (name, tensor) in &outputs {
        println!("{}", summary_line(name, tensor));
        if let Some(dir) = &args.output_dir {
            let path = dir.join(format!("{}.npy", file_name_for(name)));
            kiln::npy::write_npy(&path, tensor).map_err(|e| Error::new(format!("output '{name}'"), e))?;
        }
    }
    Ok(())
}

fn compile_cmd(args: &CompileArgs) -> Result<(), Error> {
    let compiled = load_and_compile(&args.model, &options(&args.flags, Backend::Interp))?;
    match args.emit {
        Emit::Ir => print!("{}", kiln::ir::text::print(compiled.graph())),
        Emit::Dot => print!("{}", kiln::dot::to_dot(compiled.graph())),
        Emit::Stats => {
            let stats = compiled.stats();
            let json = serde_json::json!({
                "ops_before": stats.ops_before,
                "ops_after": stats.ops_after,
                "compile_ms": stats.compile_ms,
            });
            println!("{json}");
        }
    }
    Ok(())
}

fn check(model: &Path) -> Result<(), Error> {
    let model = kiln::load(model)?;
    model.weights.check_against(&model.graph)?;
    println!(
        "{}: ok ({} ops, {} inputs, {} outputs)",
        model.graph.name(),
        model.graph.num_op_nodes(),
        model.graph.inputs().len(),
        model.graph.outputs().len()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match &cli.command {
        Command::Run(args) => run(args),
        Command::Compile(args) => compile_cmd(args),
        Command::Check { model } => check(model),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            for d in error.diagnostics() {
                eprintln!("error: {d}");
            }
            ExitCode::from(1)
        }
    }
}
