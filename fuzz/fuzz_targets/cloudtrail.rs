#![no_main]
//! See `skywarden::fuzzing::cloudtrail`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| skywarden::fuzzing::cloudtrail(data));
