//! The reference interpreter on the bundled models: a baseline that the JIT's numbers are read
//! against (`cargo bench --bench interpreter`).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;

fn interpreter(c: &mut Criterion) {
    for name in ["mlp_bn", "transformer_block"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("models/{name}.json"));
        let model = kiln::load(&path).expect("bundled model loads");
        let inputs = kiln::default_inputs(&model.graph).expect("inputs");
        let compiled =
            kiln::compile(model, &kiln::Options { backend: kiln::Backend::Interp, ..kiln::Options::default() })
                .expect("compiles");
        c.bench_function(&format!("interp/{name}"), |b| b.iter(|| compiled.run(black_box(&inputs)).expect("runs")));
    }
}

criterion_group!(benches, interpreter);
criterion_main!(benches);
