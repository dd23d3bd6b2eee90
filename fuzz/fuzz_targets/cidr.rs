#![no_main]
//! See `keyward_core::fuzzing::cidr` for the input layout and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_core::fuzzing::cidr(data));
