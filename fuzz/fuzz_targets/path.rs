#![no_main]
//! See `keyward_http::fuzzing::path` for the input and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_http::fuzzing::path(data));
