#![no_main]
//! See `keyward_server::fuzzing::chunked` for the input layout and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_server::fuzzing::chunked(data));
