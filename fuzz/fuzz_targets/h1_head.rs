#![no_main]
//! See `keyward_gateway::fuzzing::h1_head` for the input layout and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_gateway::fuzzing::h1_head(data));
