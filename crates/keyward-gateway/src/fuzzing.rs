//! The properties behind the fuzz targets `h1_head` and `chunked` (see
//! `fuzz/README.md`): the door through which `fuzz/` reaches the fast
//! path's codec, so no item is made more visible for it. Each function
//! takes the fuzzer's bytes and panics when a property does not hold;
//! `cargo test` replays every saved input (`fuzz/regressions/<target>/`)
//! through the same functions on stable Rust. Not part of the gateway's
//! API: compiled for tests and with the `fuzzing` feature only.

/// The HTTP/1 fast path's head handling: request framing, the request
/// target, Content-Length, list tokens, Connection-listed names, response
/// framing (see `h1/fuzzing.rs`).
pub fn h1_head(data: &[u8]) {
    crate::h1::fuzzing::head(data);
}

/// The fast path's chunked body decoder against a reference decoder.
pub fn chunked(data: &[u8]) {
    crate::h1::fuzzing::chunked(data);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use keyward_core::fuzzing::replay_regressions as replay;

    #[test]
    fn h1_head_regressions_replay() {
        replay("h1_head", super::h1_head);
    }

    #[test]
    fn chunked_regressions_replay() {
        replay("chunked", super::chunked);
    }
}
