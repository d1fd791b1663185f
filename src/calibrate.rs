//! `kiln calibrate`: the cost model's four machine figures ([`CostModel`]) measured on this
//! machine, by compiling and timing small models on the JIT at a given thread count, instead of
//! the defaults guessed for one core of the reference machine. The optimizer's extraction then
//! weighs a GEMM against a memory-bound kernel and a kernel launch against a fused op as the JIT
//! runs them here.
//!
//! Each figure comes from a model that isolates it:
//! - `peak_flops`: a 256×512 by 512×512 MatMul with a constant weight (the packed GEMM);
//! - `bandwidth`: a Relu over 16 MiB (read 16 MiB, write 16 MiB, one pass, out of cache);
//! - `kernel_overhead`: the time per kernel of a chain of 64 Softmax row kernels on a 1×16 row,
//!   over a chain of 1 (the difference is the launches, not the work);
//! - `fused_overhead`: the time per op of a chain of 64 elementwise ops on 1×256 values that the
//!   scheduler fuses into one kernel, over a chain of 1, less the op's flops at `peak_flops`.
//!
//! Each time is the median of repeated runs after warm-up: these machines are shared and noisy.

use crate::{Backend, CompiledModel, DataMut, Error, OptLevel, Options, TensorRef};
use kiln_ir::{Model, Tensor, TensorData};
use kiln_passes::CostModel;
use std::time::Instant;

/// The figures measured at one thread count.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Worker threads the models ran on.
    pub threads: usize,
    /// The instruction set the JIT's kernels used.
    pub isa: String,
    pub cost_model: CostModel,
}

/// Measures the cost model's figures on the JIT at `threads` worker threads (`None`: all cores).
/// Takes a few seconds.
pub fn calibrate(threads: Option<usize>) -> Result<Calibration, Error> {
    let options = Options { backend: Backend::Jit, opt_level: OptLevel::O0, threads, ..Options::default() };

    let (m, k, n) = (256usize, 512usize, 512usize);
    let mut gemm = model(&format!(
        "graph calibrate_gemm\ninput a: f32[{m},{k}]\nweight w: f32[{k},{n}]\nnode mm = MatMul(a, w) -> y\noutput y\n"
    ))?;
    let w = (0..k * n).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
    gemm.weights.insert("w".to_string(), tensor(vec![k, n], w)?);
    let mut gemm = Timed::new(gemm, &options)?;
    let t_gemm = gemm.median(9, 0.05)?;
    let peak_flops = (2 * m * k * n) as f64 / t_gemm;

    let len = 4 << 20;
    let mut relu = Timed::new(
        model(&format!("graph calibrate_stream\ninput x: f32[{len}]\nnode r = Relu(x) -> y\noutput y\n"))?,
        &options,
    )?;
    let t_stream = relu.median(9, 0.05)?;
    let bandwidth = (2 * len * 4) as f64 / t_stream;

    let chain = |ops: usize, op: &str, width: usize| -> Result<Timed, Error> {
        let mut text = format!("graph calibrate_chain\ninput x: f32[1,{width}]\nweight c: f32[] = [0.5]\n");
        let mut prev = "x".to_string();
        for i in 0..ops {
            let node = match op {
                "Softmax" => format!("node s{i} = Softmax({prev}) -> v{i}\n"),
                _ if i % 2 == 0 => format!("node s{i} = Mul({prev}, c) -> v{i}\n"),
                _ => format!("node s{i} = Add({prev}, c) -> v{i}\n"),
            };
            text.push_str(&node);
            prev = format!("v{i}");
        }
        text.push_str(&format!("output {prev}\n"));
        Timed::new(model(&text)?, &options)
    };
    const CHAIN: usize = 64;
    let per_op = |long: f64, short: f64| ((long - short) / (CHAIN - 1) as f64).max(0.0);
    let kernel_overhead =
        per_op(chain(CHAIN, "Softmax", 16)?.median(51, 0.02)?, chain(1, "Softmax", 16)?.median(51, 0.02)?);
    let width = 256;
    let fused_increment = per_op(
        chain(CHAIN, "Elementwise", width)?.median(51, 0.02)?,
        chain(1, "Elementwise", width)?.median(51, 0.02)?,
    );
    let fused_overhead = (fused_increment - width as f64 / peak_flops).max(0.0);

    let cost_model = CostModel { peak_flops, bandwidth, kernel_overhead, fused_overhead };
    let isa = gemm.compiled.isa().map_or("none", |isa| isa.name()).to_string();
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok(Calibration { threads, isa, cost_model })
}

impl Calibration {
    /// `{"threads": …, "isa": …, "peak_flops": …, "bandwidth": …, "kernel_overhead": …,
    /// "fused_overhead": …}` (flop/s, bytes/s, seconds, seconds).
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.cost_model;
        serde_json::json!({
            "threads": self.threads,
            "isa": self.isa,
            "peak_flops": c.peak_flops,
            "bandwidth": c.bandwidth,
            "kernel_overhead": c.kernel_overhead,
            "fused_overhead": c.fused_overhead,
        })
    }
}

/// Reads a file written by `kiln calibrate` (a JSON list of [`Calibration::to_json`] entries, one
/// per thread count) and returns the cost model of the entry for `threads` (`None`: all cores):
/// the entry with the most threads not above it, else the one with the fewest.
pub fn read_cost_model(path: &std::path::Path, threads: Option<usize>) -> Result<CostModel, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::new(&shown, format!("cannot read the calibration: {e}")).with_kind(crate::ErrorKind::Io))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::new(&shown, format!("not a calibration (JSON: {e})")))?;
    let entries =
        json.as_array().ok_or_else(|| Error::new(&shown, "not a calibration: expected a JSON list of entries"))?;
    let mut parsed = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = |name: &str| {
            entry.get(name).and_then(|v| v.as_f64()).filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| {
                Error::new(format!("{shown}: entry {i}"), format!("'{name}' is missing or not a non-negative number"))
            })
        };
        let model = CostModel {
            peak_flops: field("peak_flops")?,
            bandwidth: field("bandwidth")?,
            kernel_overhead: field("kernel_overhead")?,
            fused_overhead: field("fused_overhead")?,
        };
        if model.peak_flops == 0.0 || model.bandwidth == 0.0 {
            return Err(Error::new(format!("{shown}: entry {i}"), "peak_flops and bandwidth must be positive"));
        }
        parsed.push((field("threads")? as usize, model));
    }
    let want = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let at_most = parsed.iter().filter(|(t, _)| *t <= want).max_by_key(|(t, _)| *t);
    at_most
        .or_else(|| parsed.iter().min_by_key(|(t, _)| *t))
        .map(|(_, m)| *m)
        .ok_or_else(|| Error::new(&shown, "the calibration has no entries"))
}

fn model(body: &str) -> Result<Model, Error> {
    kiln_ir::text::parse(&format!("kir 1\n{body}"))
}

fn tensor(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor, Error> {
    Tensor::from_f32(shape, data).map_err(|e| Error::new("calibration", e))
}

/// A compiled model with its inputs and output buffers, run repeatedly.
struct Timed {
    compiled: CompiledModel,
    inputs: Vec<(String, Tensor)>,
    outputs: Vec<TensorData>,
}

impl Timed {
    fn new(model: Model, options: &Options) -> Result<Timed, Error> {
        let inputs = crate::default_inputs(&model.graph)?;
        let compiled = crate::compile(model, options)?;
        let outputs =
            compiled.output_types().iter().map(|(_, ty)| TensorData::F32(vec![0.0; ty.num_elements()])).collect();
        Ok(Timed { compiled, inputs, outputs })
    }

    /// The median of `samples` timings, each the mean over as many runs as fill `min_seconds`,
    /// after one warm-up sample.
    fn median(&mut self, samples: usize, min_seconds: f64) -> Result<f64, Error> {
        let views: Vec<(&str, TensorRef<'_>)> =
            self.inputs.iter().map(|(n, t)| (n.as_str(), TensorRef::from(t))).collect();
        let run = |outputs: &mut Vec<TensorData>| -> Result<(), Error> {
            let mut bufs: Vec<DataMut<'_>> = outputs.iter_mut().map(DataMut::from).collect();
            self.compiled.run_into(&views, &mut bufs)
        };
        let start = Instant::now();
        run(&mut self.outputs)?;
        let once = start.elapsed().as_secs_f64().max(1e-9);
        let repeats = ((min_seconds / once).ceil() as usize).clamp(1, 100_000);
        let mut times = Vec::with_capacity(samples);
        for _ in 0..=samples {
            let start = Instant::now();
            for _ in 0..repeats {
                run(&mut self.outputs)?;
            }
            times.push(start.elapsed().as_secs_f64() / repeats as f64);
        }
        times.remove(0);
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}
