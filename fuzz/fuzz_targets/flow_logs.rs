#![no_main]
//! See `skywarden::fuzzing::flow_logs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| skywarden::fuzzing::flow_logs(data));
