#![no_main]
//! See `keyward_gateway::fuzzing::chunked` for the input layout and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_gateway::fuzzing::chunked(data));
