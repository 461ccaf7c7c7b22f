#![no_main]
//! See `skywarden::fuzzing::json_stream`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| skywarden::fuzzing::json_stream(data));
