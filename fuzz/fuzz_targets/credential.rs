#![no_main]
//! See `keyward_verify::fuzzing::credential` for the input layout and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_verify::fuzzing::credential(data));
