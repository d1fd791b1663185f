//! The soak runner: `kiln-difftest --graphs N --seed S [--jobs J] [--out DIR]`.
//!
//! Seeds S..S+N run in worker processes (this binary with `--worker`), J at a time, each under a
//! memory limit (`--mem-mb`, through `ulimit -v`) and a per-graph time limit (`--timeout`), so that
//! a crash (SIGSEGV, an abort on heap corruption), a hang or a runaway allocation costs one seed,
//! not the soak: the parent names the seed and carries on with the next. Failures are shrunk by the
//! worker and written to DIR/seed-S/ (model.json, inputs, repro.sh, failure.txt); a crashing or
//! hanging seed's case is written unshrunk. The last line is a summary.

use kiln_difftest::check::CheckConfig;
use kiln_difftest::{GenConfig, generate, run_seed, write_reproducer};
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    graphs: u64,
    seed: u64,
    jobs: usize,
    out: PathBuf,
    max_steps: usize,
    const_chains: bool,
    shrink_budget: usize,
    timeout: u64,
    mem_mb: u64,
    avoid_known: bool,
    worker: bool,
    dump: bool,
    chunk: u64,
}

const USAGE: &str = "usage: kiln-difftest --graphs N --seed S [--jobs J] [--out DIR] [--max-steps K] \
[--shrink-budget B] [--timeout SECS] [--mem-mb MB] [--chunk C] [--no-const-chains] [--avoid-known] [--dump]
--avoid-known generates none of issue 11's open defects (GenConfig::avoid_known_defects);
--dump writes the cases of the seeds to DIR/seed-S/ with the interpreter's outputs in expected/,\nwithout checking them, and prints the nodes the generator made that Op::infer refused.";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        graphs: 1000,
        seed: 0,
        jobs: 1,
        out: PathBuf::from("difftest-out"),
        max_steps: 8,
        const_chains: true,
        shrink_budget: 300,
        timeout: 60,
        mem_mb: 4096,
        avoid_known: false,
        worker: false,
        dump: false,
        chunk: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: {v:?} is not a number"));
        match flag.as_str() {
            "--graphs" => a.graphs = num(value()?)?,
            "--seed" => a.seed = num(value()?)?,
            "--jobs" => a.jobs = num(value()?)?.max(1) as usize,
            "--out" => a.out = PathBuf::from(value()?),
            "--max-steps" => a.max_steps = num(value()?)? as usize,
            "--shrink-budget" => a.shrink_budget = num(value()?)? as usize,
            "--timeout" => a.timeout = num(value()?)?,
            "--mem-mb" => a.mem_mb = num(value()?)?,
            "--chunk" => a.chunk = num(value()?)?.max(1),
            "--no-const-chains" => a.const_chains = false,
            "--avoid-known" => a.avoid_known = true,
            "--worker" => a.worker = true,
            "--dump" => a.dump = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

impl Args {
    fn gen_config(&self) -> GenConfig {
        GenConfig {
            max_steps: self.max_steps,
            const_chains: self.const_chains,
            avoid_known_defects: self.avoid_known,
            ..GenConfig::default()
        }
    }
}

/// Worker: runs seeds in order, printing `BEGIN s` before and `OK s` / `FAIL s ...` after each.
fn worker(args: &Args) -> ExitCode {
    // Panics are caught and reported as failures; the default hook would print each one too
    // (DIFFTEST_QUIET=0 keeps it, to see where a panic that aborts comes from).
    if std::env::var("DIFFTEST_QUIET").as_deref() != Ok("0") {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let gen_config = args.gen_config();
    let check_config = CheckConfig::default();
    let stdout = std::io::stdout();
    for seed in args.seed..args.seed.saturating_add(args.graphs) {
        let _ = writeln!(stdout.lock(), "BEGIN {seed}");
        let r = run_seed(seed, &gen_config, &check_config);
        let mut line = match r.failures.first() {
            None => format!("OK {seed} {}", r.rejected),
            Some(f) => {
                let written = match write_reproducer(&r.case, f, &check_config, &args.out, args.shrink_budget) {
                    Ok((dir, small)) => format!(" -> {} ({} nodes)", dir.display(), small.nodes.len()),
                    Err(e) => format!(" (not written: {e})"),
                };
                format!("FAIL {seed} {} {}{written}", r.rejected, f.to_string().replace('\n', " "))
            }
        };
        line.push('\n');
        let _ = stdout.lock().write_all(line.as_bytes());
        let _ = stdout.lock().flush();
    }
    ExitCode::SUCCESS
}

enum Event {
    Line(String),
    Exit,
}

/// Runs seeds [from, to) in worker processes, restarting after a crash or hang; returns result
/// lines (`OK`, `FAIL`, `CRASH`, `HANG`).
fn run_chunk(args: &Args, exe: &PathBuf, from: u64, to: u64) -> Vec<String> {
    let mut results = Vec::new();
    let mut next = from;
    while next < to {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -v {}; exec \"$0\" \"$@\"", args.mem_mb * 1024))
            .arg(exe)
            .args(["--worker", "--seed", &next.to_string(), "--graphs", &(to - next).to_string()])
            .args(["--out", &args.out.display().to_string(), "--max-steps", &args.max_steps.to_string()])
            .args(["--shrink-budget", &args.shrink_budget.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if !args.const_chains {
            cmd.arg("--no-const-chains");
        }
        if args.avoid_known {
            cmd.arg("--avoid-known");
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                results.push(format!("CRASH {next} cannot start a worker: {e}"));
                return results;
            }
        };
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(Event::Line(line));
                }
                let _ = tx.send(Event::Exit);
            });
        }
        let mut current: Option<u64> = None;
        let mut last_progress = Instant::now();
        // Shrinking a failure takes many checks: allow it more time than one graph.
        let limit = Duration::from_secs(args.timeout);
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Event::Line(line)) => {
                    last_progress = Instant::now();
                    if let Some(s) = line.strip_prefix("BEGIN ") {
                        current = s.trim().parse().ok();
                    } else {
                        if let Some(seed) = current.take() {
                            next = seed + 1;
                        }
                        results.push(line);
                    }
                }
                Ok(Event::Exit) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                    if let Some(seed) = current.take() {
                        results.push(format!("CRASH {seed} worker died: {status}"));
                        write_unshrunk(args, seed, &format!("crash: worker died: {status}"));
                        next = seed + 1;
                    } else {
                        next = to;
                    }
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if last_progress.elapsed() > limit * if current.is_some() { 1 } else { 2 } {
                        let _ = child.kill();
                        let _ = child.wait();
                        let seed = current.unwrap_or(next);
                        results.push(format!("HANG {seed} no result in {} s", args.timeout));
                        write_unshrunk(args, seed, &format!("hang: no result in {} s", args.timeout));
                        next = seed + 1;
                        break;
                    }
                }
            }
        }
    }
    results
}

fn write_unshrunk(args: &Args, seed: u64, note: &str) {
    let case = generate(seed, &args.gen_config()).case;
    let dir = args.out.join(format!("seed-{seed}"));
    if let Err(e) = case.write_to(&dir, note) {
        eprintln!("seed {seed}: {e}");
    }
    let _ = std::fs::write(dir.join("failure.txt"), format!("{note}\n"));
}

/// Writes the interpreter's outputs of a seed's case to DIR/seed-S/expected/NAME.npy.
fn write_expected(args: &Args, seed: u64) -> Result<(), String> {
    let case = generate(seed, &args.gen_config()).case;
    let model = case.model().map_err(|e| e.to_string())?;
    let options = kiln::Options {
        backend: kiln::Backend::Interp,
        opt_level: kiln::OptLevel::O0,
        threads: Some(1),
        ..Default::default()
    };
    let outputs = kiln::compile(model, &options).and_then(|c| c.run(&case.inputs)).map_err(|e| e.to_string())?;
    let dir = args.out.join(format!("seed-{seed}")).join("expected");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (name, t) in &outputs {
        kiln::npy::write_npy(&dir.join(format!("{name}.npy")), t)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.worker {
        return worker(&args);
    }
    if args.dump {
        for seed in args.seed..args.seed.saturating_add(args.graphs) {
            write_unshrunk(&args, seed, "dumped unrun");
            // The oracle's outputs, for cross-checks outside kiln (tools/difftest/ort_check.py).
            if let Err(e) = write_expected(&args, seed) {
                println!("seed {seed}: no expected outputs: {e}");
            }
            // What the generator got wrong, so that its mistakes stay visible.
            for r in generate(seed, &args.gen_config()).rejected {
                println!("seed {seed}: rejected {r}");
            }
        }
        return ExitCode::SUCCESS;
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot find this executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let end = args.seed.saturating_add(args.graphs);
    let chunks: VecDeque<(u64, u64)> =
        (args.seed..end).step_by(args.chunk as usize).map(|s| (s, (s + args.chunk).min(end))).collect();
    let chunks = Arc::new(Mutex::new(chunks));
    let results: Arc<Mutex<Vec<String>>> = Arc::default();
    let args = Arc::new(args);
    let handles: Vec<_> = (0..args.jobs)
        .map(|_| {
            let (chunks, results, args, exe) = (chunks.clone(), results.clone(), args.clone(), exe.clone());
            std::thread::spawn(move || {
                // The queue's lock is taken and released inside `next`, not held over a chunk.
                let next = || chunks.lock().ok().and_then(|mut q| q.pop_front());
                while let Some((from, to)) = next() {
                    let lines = run_chunk(&args, &exe, from, to);
                    for l in lines.iter().filter(|l| !l.starts_with("OK ")) {
                        println!("{l}");
                    }
                    if let Ok(mut r) = results.lock() {
                        r.extend(lines);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let results = results.lock().map(|r| r.clone()).unwrap_or_default();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut rejected = 0u64;
    for l in &results {
        let mut words = l.split_whitespace();
        let kind = words.next().unwrap_or("?");
        *counts.entry(kind).or_default() += 1;
        if matches!(kind, "OK" | "FAIL") {
            rejected += words.nth(1).and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    let bad = get("FAIL") + get("CRASH") + get("HANG");
    println!(
        "difftest: {} graphs, seeds {}..{}: {} ok, {} mismatches/errors, {} crashes, {} hangs; \
         {} generator rejections; {:.0} s; reproducers in {}",
        results.len(),
        args.seed,
        end,
        get("OK"),
        get("FAIL"),
        get("CRASH"),
        get("HANG"),
        rejected,
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
