//! Throughput of one compiled model served from several threads at once (issue 13: concurrent
//! runs must not serialise behind one pool).
//!
//! `cargo run --release --example throughput -- MODEL POOL_THREADS CALLERS SECONDS`
//! prints runs per second over all callers and the median latency of one run.

use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, pool, callers, secs] = args.as_slice() else {
        return Err("usage: throughput MODEL POOL_THREADS CALLERS SECONDS".into());
    };
    let options = kiln::Options { threads: Some(pool.parse()?), ..Default::default() };
    let compiled = kiln::compile(kiln::load(model)?, &options)?;
    let inputs = kiln::default_inputs(compiled.graph())?;
    compiled.run(&inputs)?;
    let callers: usize = callers.parse()?;
    let span = Duration::from_secs_f64(secs.parse()?);
    let start = Instant::now();
    let mut latencies: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                s.spawn(|| {
                    let mut lat = Vec::new();
                    while start.elapsed() < span {
                        let t = Instant::now();
                        let out = compiled.run(&inputs).expect("runs");
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                        std::hint::black_box(out);
                    }
                    lat
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("caller thread")).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    println!(
        "{model}: pool={pool} callers={callers} runs={} runs_per_s={:.1} median_ms={median:.4}",
        latencies.len(),
        latencies.len() as f64 / wall
    );
    Ok(())
}
