//! Fuzz the desired-document parser: any bytes that are UTF-8 must parse or fail with
//! diagnostics, never panic, hang or exhaust the stack. JSON and TOML are both reached, since
//! the format is chosen by the first non-whitespace character.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = edgeroll::spec::parse::parse_document(Path::new("fuzz.toml"), text);
    }
});
