//! Per-call cost of the embedding API on a tiny model (issue 15): `CompiledModel::run` (owned
//! inputs checked by name, owned outputs allocated per call) against `run_into` (borrowed inputs,
//! outputs written into the caller's buffers), on the JIT at one thread, so that the difference
//! is the API's, not the kernels' (`cargo bench --bench call_overhead`).

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::{DataMut, TensorData, TensorRef};
use std::hint::black_box;
use std::path::Path;

fn call_overhead(c: &mut Criterion) {
    // mlp_bn: a small MLP with BatchNorm on an 8×16 batch, microseconds of compute.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mlp_bn.json");
    let model = kiln::load(&path).expect("bundled model loads");
    let inputs = kiln::default_inputs(&model.graph).expect("inputs");
    let options = kiln::Options { threads: Some(1), ..kiln::Options::default() };
    let compiled = kiln::compile(model, &options).expect("compiles");
    let mut outputs: Vec<TensorData> =
        compiled.output_types().iter().map(|(_, ty)| TensorData::F32(vec![0.0; ty.num_elements()])).collect();
    let views: Vec<(&str, TensorRef<'_>)> = inputs.iter().map(|(n, t)| (n.as_str(), TensorRef::from(t))).collect();
    let mut group = c.benchmark_group("call_overhead/mlp_bn");
    group.bench_function("run", |b| b.iter(|| compiled.run(black_box(&inputs)).expect("runs")));
    group.bench_function("run_into", |b| {
        b.iter(|| {
            let mut bufs: Vec<DataMut<'_>> = outputs.iter_mut().map(DataMut::from).collect();
            compiled.run_into(black_box(&views), &mut bufs).expect("runs")
        })
    });
    group.finish();
}

criterion_group!(benches, call_overhead);
criterion_main!(benches);
