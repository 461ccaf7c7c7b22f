#![no_main]
//! See `skywarden::fuzzing::rego_check`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| skywarden::fuzzing::rego_check(data));
