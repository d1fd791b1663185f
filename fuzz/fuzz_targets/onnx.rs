//! Fuzzes the ONNX reader: any bytes must give a model or an error, never a panic, a hang or a huge
//! allocation. External data is refused (no base directory), so the fuzzer touches no files.
//!
//! The memory cap is 256 MiB here, not the default 4 GiB: load-time folding (ConstantOfShape,
//! Expand, any all-constant node) is bounded by the cap, and libFuzzer's RSS limit is 2 GiB.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = kiln_frontends::ReadLimits { memory_cap: 256 << 20 };
    let _ = kiln_frontends::onnx::parse_onnx_with(data, None, &[], &[], &limits);
});
