//! Fuzzes the kiln JSON reader: any text must give a model or an error, never a panic, a hang or a
//! huge allocation. No base directory, so safetensors files are refused and no file is touched.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = kiln_frontends::json::parse_json(text, None, "fuzz");
    }
});
