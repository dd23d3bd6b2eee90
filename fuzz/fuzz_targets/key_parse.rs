#![no_main]
//! See `keyward_core::fuzzing::key_parse` for the input layout and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_core::fuzzing::key_parse(data));
