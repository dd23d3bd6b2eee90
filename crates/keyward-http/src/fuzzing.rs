//! The property behind the fuzz target `path` (see `fuzz/README.md`): the
//! door through which `fuzz/` reaches this crate, so no item is made more
//! visible for it. The function takes the fuzzer's bytes and panics when a
//! property does not hold; `cargo test` replays every saved input
//! (`fuzz/regressions/path/`) through the same function on stable Rust. Not
//! part of keyward's API: compiled for tests and with the `fuzzing` feature
//! only.
#![allow(clippy::unwrap_used, clippy::panic)]

/// The request-path rule ([`crate::path::normalize`]). The input
/// is a path (lossy UTF-8), tried as it is and behind a `/`. Properties: a
/// normal form starts with `/`, has no `.` or `..` segment, no empty
/// segment but a trailing one, no NUL, no escape of `/`, `\`, NUL or of an
/// unreserved character (and escapes in upper case); it is its own normal
/// form (so is returned borrowed); a path returned borrowed is unchanged.
pub fn path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_path(&text);
    check_path(&format!("/{text}"));
}

fn check_path(p: &str) {
    use crate::path::normalize;
    use std::borrow::Cow;
    let Ok(out) = normalize(p) else {
        return;
    };
    if let Cow::Borrowed(b) = out {
        assert_eq!(b, p);
    }
    assert!(out.starts_with('/'), "{p:?} -> {out:?}");
    assert!(!out.contains("//"), "{p:?} -> {out:?}");
    assert!(!out.contains('\0'), "{p:?} -> {out:?}");
    for seg in out.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "{p:?} -> {out:?}");
    }
    let b = out.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        let escape = b
            .get(i + 1..i + 3)
            .unwrap_or_else(|| panic!("{p:?} -> {out:?}"));
        assert!(
            escape
                .iter()
                .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
            "{p:?} -> {out:?}"
        );
        let c = u8::from_str_radix(std::str::from_utf8(escape).unwrap(), 16).unwrap();
        let unreserved = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        assert!(
            !unreserved && !matches!(c, b'/' | b'\\' | 0),
            "{p:?} -> {out:?}"
        );
        i += 3;
    }
    match normalize(&out) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, out),
        other => panic!("{p:?} -> {out:?} -> {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use keyward_core::fuzzing::replay_regressions as replay;

    #[test]
    fn path_regressions_replay() {
        replay("path", super::path);
    }
}
