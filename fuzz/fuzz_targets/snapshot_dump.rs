#![no_main]
//! See `skywarden::fuzzing::snapshot_dump`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| skywarden::fuzzing::snapshot_dump(data));
