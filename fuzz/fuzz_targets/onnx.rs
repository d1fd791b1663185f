//! Fuzzes the ONNX reader: any bytes must give a model or an error, never a panic, a hang or a huge
//! allocation. External data is refused (no base directory), so the fuzzer touches no files.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln_frontends::onnx::parse_onnx(data, None, &[]);
});
