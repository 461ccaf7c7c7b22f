#![no_main]
//! See `skywarden::fuzzing::sigma_rule`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| skywarden::fuzzing::sigma_rule(data));
