//! Fuzzes compile-and-run: the input's bytes steer the differential tester's generator (one byte
//! a choice: which op, which operands, which shapes and attributes), the first eight bytes also
//! seed the values; the graph runs on the interpreter and the JIT at -O0 and -O2 with 1 and 2
//! threads (kiln_difftest::check), and any failure — a panic, an error where the interpreter
//! succeeded, a value outside the tolerance — aborts with the failure printed. See
//! docs/robustness.md.
#![no_main]

use kiln_difftest::check::{CheckConfig, check};
use kiln_difftest::generator::{GenConfig, generate_from};
use kiln_difftest::rng::ByteSource;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut seed = [0u8; 8];
    for (s, b) in seed.iter_mut().zip(data) {
        *s = *b;
    }
    let config = GenConfig { max_steps: 6, ..GenConfig::default() };
    let generated = generate_from(&mut ByteSource::new(data), u64::from_le_bytes(seed), &config);
    let failures = check(&generated.case, &CheckConfig::default());
    if let Some(f) = failures.first() {
        panic!("{f}\n{}", serde_json::to_string(&generated.case.to_json()).unwrap_or_default());
    }
});
