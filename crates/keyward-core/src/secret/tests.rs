use proptest::prelude::*;

use super::*;

fn format() -> KeyFormat {
    KeyFormat::new([("live", "kw_live_"), ("test", "kw_test_")], "kw_root_").unwrap()
}

/// Deterministic entropy for property tests (xorshift64*; not for keys).
struct Seeded(std::sync::Mutex<u64>);

impl Entropy for Seeded {
    fn fill(&self, dest: &mut [u8]) -> Result<(), EntropyError> {
        let mut s = self.0.lock().unwrap();
        for b in dest {
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            *b = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
        Ok(())
    }
}

#[test]
fn generated_keys_have_the_documented_shape() {
    let f = format();
    let k = f
        .generate(&KeyKind::Environment("live".into()), &OsEntropy)
        .unwrap();
    let s = k.expose();
    assert!(s.starts_with("kw_live_"));
    assert_eq!(s.len(), "kw_live_".len() + BODY_LEN + CHECKSUM_LEN);
    assert_eq!(k.start(), s[..12].to_string());
    let parsed = f.parse(s).unwrap();
    assert_eq!(parsed.kind, &KeyKind::Environment("live".into()));
    let root = f.generate(&KeyKind::Root, &OsEntropy).unwrap();
    assert_eq!(f.parse(root.expose()).unwrap().kind, &KeyKind::Root);
}

#[test]
fn secrets_never_print() {
    let k = format().generate(&KeyKind::Root, &OsEntropy).unwrap();
    assert_eq!(format!("{k}"), "<redacted>");
    assert!(!format!("{k:?}").contains(k.expose()));
}

#[test]
fn longest_prefix_wins() {
    let f = KeyFormat::new([("live", "ak_"), ("test", "ak_test_")], "root_").unwrap();
    let k = f
        .generate(&KeyKind::Environment("test".into()), &OsEntropy)
        .unwrap();
    assert_eq!(
        f.parse(k.expose()).unwrap().kind,
        &KeyKind::Environment("test".into())
    );
}

#[test]
fn rejects_garbage_before_lookup() {
    let f = format();
    assert_eq!(f.parse("").unwrap_err(), Malformed::Length);
    assert_eq!(f.parse("hello").unwrap_err(), Malformed::Prefix);
    assert_eq!(f.parse("kw_live_short").unwrap_err(), Malformed::Length);
    let k = f
        .generate(&KeyKind::Environment("test".into()), &OsEntropy)
        .unwrap();
    let truncated = &k.expose()[..k.expose().len() - 1];
    assert!(f.parse(truncated).is_err());
    let spaced = format!("{} ", k.expose());
    assert_eq!(f.parse(&spaced).unwrap_err(), Malformed::Alphabet);
    assert_eq!(
        f.parse(&"x".repeat(MAX_SECRET_LEN + 1)).unwrap_err(),
        Malformed::Length
    );
}

#[test]
fn config_errors_are_named() {
    assert_eq!(
        KeyFormat::new([("live", "kw_")], "kw_").unwrap_err(),
        KeyFormatError::DuplicatePrefix("kw_".into())
    );
    assert!(matches!(
        KeyFormat::new([("Live", "kw_")], "r_"),
        Err(KeyFormatError::BadEnvironment(_))
    ));
    assert!(matches!(
        KeyFormat::new([("live", "kw-")], "r_"),
        Err(KeyFormatError::BadPrefix(_))
    ));
}

/// Found by the `key_parse` fuzz target: with `kw_vel_i` and `kw_vel_iz01`,
/// a `kw_vel_i` key whose body starts `z01` read as a short `kw_vel_iz01`
/// key (refused, or the wrong kind).
#[test]
fn prefixes_that_continue_others_with_key_characters_are_refused() {
    assert_eq!(
        KeyFormat::new([("live", "kw_vel_i"), ("test", "kw_vel_iz01")], "kw_root_").unwrap_err(),
        KeyFormatError::AmbiguousPrefix {
            shorter: "kw_vel_i".into(),
            longer: "kw_vel_iz01".into()
        }
    );
    assert!(matches!(
        KeyFormat::new([("live", "ak")], "akR"),
        Err(KeyFormatError::AmbiguousPrefix { .. })
    ));
    // Not when what follows the shorter one cannot start a body.
    assert!(KeyFormat::new([("live", "ak_"), ("test", "ak_test_")], "root_").is_ok());
}

#[test]
fn hash_hex_round_trips() {
    let h = KeyHash::of("kw_test_abc");
    assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
    assert_eq!(KeyHash::from_hex("zz"), None);
}

#[test]
fn scan_regex_names_every_prefix() {
    let r = format().scan_regex();
    for p in ["kw_live_", "kw_test_", "kw_root_"] {
        assert!(r.contains(p), "{r}");
    }
}

#[test]
fn keys_are_found_anywhere_in_a_text() {
    let f = format();
    let k = f
        .generate(&KeyKind::Environment("live".into()), &OsEntropy)
        .unwrap();
    let key = k.expose();
    let root = f.generate(&KeyKind::Root, &OsEntropy).unwrap();
    for text in [
        key.to_owned(),
        format!("session={key}"),
        format!("a=1; b=\"{key}\"; c=2"),
        format!("Bearer {key}"),
        format!("x{key}"),
        format!("{key}abc"),
        format!("{key}_tail"),
        format!("kw_live_kw_test_{key}"),
        root.expose().to_owned(),
    ] {
        assert!(f.holds_key(text.as_bytes()), "{text}");
    }
    let mut broken = key.to_owned();
    broken.pop();
    broken.push(if key.ends_with('0') { '1' } else { '0' });
    let unknown_prefix = key.replacen("kw_live_", "zz_live_", 1);
    for text in [
        "".to_owned(),
        "kw_live_".to_owned(),
        "kw_live_short".to_owned(),
        broken.clone(),
        format!("q={broken}&r=1"),
        unknown_prefix,
        key[1..].to_owned(),
        "kw_live_".repeat(1000),
        "A".repeat(10_000),
    ] {
        assert!(!f.holds_key(text.as_bytes()), "{text}");
    }
}

#[test]
fn the_finder_reports_every_valid_key_where_it_stands_and_nothing_else() {
    let f = format();
    let finder = KeyFinder::new(&f).unwrap();
    let live = f
        .generate(&KeyKind::Environment("live".into()), &OsEntropy)
        .unwrap();
    let test = f
        .generate(&KeyKind::Environment("test".into()), &OsEntropy)
        .unwrap();
    let root = f.generate(&KeyKind::Root, &OsEntropy).unwrap();
    let mut broken = live.expose().to_owned();
    broken.pop();
    broken.push(if live.expose().ends_with('0') {
        '1'
    } else {
        '0'
    });
    let text = format!(
        "let a = \"{}\";\nkw_live_ kw_test_short {broken}\nx{}abc,{}\nkw_live_kw_test_{}",
        live.expose(),
        test.expose(),
        root.expose(),
        live.expose()
    );
    let found = finder.find(text.as_bytes());
    let keys: Vec<(&str, &KeyKind)> = found.iter().map(|m| (&text[m.range()], m.kind)).collect();
    let env = |e: &str| KeyKind::Environment(e.into());
    assert_eq!(
        keys,
        vec![
            (live.expose(), &env("live")),
            (test.expose(), &env("test")),
            (root.expose(), &KeyKind::Root),
            (live.expose(), &env("live")),
        ]
    );
    assert_eq!(found[0].offset, text.find(live.expose()).unwrap());
    assert_eq!(found[0].prefix_len, "kw_live_".len());
    assert_eq!(
        display_start(&text[found[2].range()], found[2].prefix_len),
        root.start()
    );
    assert!(finder.find(broken.as_bytes()).is_empty());
    assert!(finder.find(b"").is_empty());
    assert!(finder.find("kw_live_".repeat(1000).as_bytes()).is_empty());
}

proptest! {
    /// Every single-character change of a valid key is rejected: CRC32
    /// detects every error burst of up to 32 bits, and one changed character
    /// is an 8-bit burst.
    #[test]
    fn every_single_character_change_is_rejected(
        seed in 1u64..,
        pos in 0usize..(8 + BODY_LEN + CHECKSUM_LEN),
        replacement in proptest::char::range('!', '~'),
    ) {
        let f = format();
        let k = f.generate(&KeyKind::Environment("live".into()), &Seeded(std::sync::Mutex::new(seed))).unwrap();
        let original = k.expose();
        let mut bytes = original.as_bytes().to_vec();
        prop_assume!(bytes[pos] != replacement as u8);
        bytes[pos] = replacement as u8;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert!(f.parse(&changed).is_err(), "accepted {changed} (from {original})");
    }

    #[test]
    fn parse_never_panics(s in ".{0,300}") {
        let _ = format().parse(&s);
    }

    /// The finder and `holds_key` agree, and every match is a key `parse`
    /// accepts, whatever surrounds it.
    #[test]
    fn the_finder_agrees_with_holds_key(
        seed in 1u64..,
        before in proptest::collection::vec(any::<u8>(), 0..200),
        after in proptest::collection::vec(any::<u8>(), 0..200),
        with_key in any::<bool>(),
    ) {
        let f = format();
        let finder = KeyFinder::new(&f).unwrap();
        let mut text = before.clone();
        if with_key {
            let k = f.generate(&KeyKind::Root, &Seeded(std::sync::Mutex::new(seed))).unwrap();
            text.extend_from_slice(b" ");
            text.extend_from_slice(k.expose().as_bytes());
            text.extend_from_slice(b" ");
        }
        text.extend_from_slice(&after);
        let found = finder.find(&text);
        prop_assert_eq!(!found.is_empty(), f.holds_key(&text));
        prop_assert!(!with_key || !found.is_empty());
        for m in found {
            let s = std::str::from_utf8(&text[m.range()]).unwrap();
            prop_assert!(f.parse(s).is_ok());
        }
    }

    #[test]
    fn holds_key_never_panics(s in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = format().holds_key(&s);
    }

    #[test]
    fn generated_keys_always_parse(seed in 1u64..) {
        let f = format();
        let k = f.generate(&KeyKind::Environment("test".into()), &Seeded(std::sync::Mutex::new(seed))).unwrap();
        prop_assert!(f.parse(k.expose()).is_ok());
    }
}
