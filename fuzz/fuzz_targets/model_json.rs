//! libFuzzer target: see `../entry.rs` for what it does with each input.
#![no_main]

#[path = "../entry.rs"]
mod entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    entry::model_json(data);
});
