//! Event types and the filters endpoints subscribe with.
//!
//! An event type is 1 to 100 characters: lowercase segments of `[a-z0-9_-]`
//! separated by single dots, e.g. `key.created` or `vox.call.ended`.
//! Uppercase is refused rather than folded, so a type has one spelling.
//!
//! A filter is a list of 1 to 50 distinct patterns, each one of:
//! - an exact type, `key.created`;
//! - `prefix.*`, every type that starts with `prefix.` (`vox.*` matches
//!   `vox.call` and `vox.call.ended`, not `vox` nor `voxel.x`);
//! - `*`, every type.
//!
//! Stored in SQL, a pattern is a pair ([`EventPattern::sql_pair`]): `exact`
//! or `prefix`, the prefix including its trailing dot (`*` is the empty
//! prefix), so a query matches with
//! `type = exact OR substr(type, 1, length(prefix)) = prefix`.

/// The longest event type.
pub const MAX_EVENT_TYPE_LEN: usize = 100;
/// The most patterns one filter holds.
pub const MAX_PATTERNS: usize = 50;

/// Checks that `t` is a well-formed event type (see the module docs).
pub fn check_event_type(t: &str) -> Result<(), FilterError> {
    let bad = |why: &'static str| FilterError::EventType {
        value: shorten(t),
        why,
    };
    if t.is_empty() {
        return Err(bad("it is empty"));
    }
    if t.len() > MAX_EVENT_TYPE_LEN {
        return Err(bad("it is longer than 100 characters"));
    }
    for segment in t.split('.') {
        if segment.is_empty() {
            return Err(bad(
                "it has an empty segment (a leading, trailing or doubled dot)",
            ));
        }
        if !segment
            .bytes()
            .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
        {
            return Err(bad(
                "segments may hold only lowercase letters, digits, '_' and '-'",
            ));
        }
    }
    Ok(())
}

/// Echoed input is bounded, so an error message stays readable.
fn shorten(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One pattern of a filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventPattern {
    /// `*`: every event type.
    All,
    /// `prefix.*`; holds the prefix WITH its trailing dot (`"vox.call."`).
    Prefix(String),
    /// One event type.
    Exact(String),
}

impl EventPattern {
    /// Parses one pattern: `*`, `prefix.*` or an exact event type.
    pub fn parse(pattern: &str) -> Result<EventPattern, FilterError> {
        if pattern == "*" {
            return Ok(EventPattern::All);
        }
        if let Some(prefix) = pattern.strip_suffix(".*") {
            check_pattern_part(pattern, prefix)?;
            return Ok(EventPattern::Prefix(format!("{prefix}.")));
        }
        check_pattern_part(pattern, pattern)?;
        Ok(EventPattern::Exact(pattern.to_owned()))
    }

    /// Rebuilds a pattern from its stored pair ([`EventPattern::sql_pair`]).
    pub fn from_sql_pair(
        exact: Option<&str>,
        prefix: Option<&str>,
    ) -> Result<EventPattern, FilterError> {
        match (exact, prefix) {
            (Some(t), None) => EventPattern::parse(t).and_then(|p| match p {
                EventPattern::Exact(_) => Ok(p),
                _ => Err(FilterError::StoredPair),
            }),
            (None, Some("")) => Ok(EventPattern::All),
            (None, Some(p)) => match p.strip_suffix('.') {
                Some(stem) => EventPattern::parse(&format!("{stem}.*")),
                None => Err(FilterError::StoredPair),
            },
            _ => Err(FilterError::StoredPair),
        }
    }

    /// The exact type this pattern names, if it is one.
    pub fn exact(&self) -> Option<&str> {
        match self {
            EventPattern::Exact(t) => Some(t),
            _ => None,
        }
    }

    /// The prefix this pattern matches, trailing dot included; `*` is the
    /// empty prefix.
    pub fn prefix(&self) -> Option<&str> {
        match self {
            EventPattern::All => Some(""),
            EventPattern::Prefix(p) => Some(p),
            EventPattern::Exact(_) => None,
        }
    }

    /// `(exact, prefix)`, one of them set, for storing in SQL.
    pub fn sql_pair(&self) -> (Option<String>, Option<String>) {
        (
            self.exact().map(str::to_owned),
            self.prefix().map(str::to_owned),
        )
    }

    /// Whether `event_type` is matched by this pattern.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            EventPattern::All => true,
            EventPattern::Prefix(p) => event_type.starts_with(p.as_str()),
            EventPattern::Exact(t) => event_type == t,
        }
    }
}

impl std::fmt::Display for EventPattern {
    /// The pattern as the user wrote it: `*`, `vox.call.*`, `key.created`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventPattern::All => f.write_str("*"),
            EventPattern::Prefix(p) => write!(f, "{p}*"),
            EventPattern::Exact(t) => f.write_str(t),
        }
    }
}

fn check_pattern_part(pattern: &str, part: &str) -> Result<(), FilterError> {
    check_event_type(part).map_err(|e| match e {
        FilterError::EventType { .. } if part.contains('*') => FilterError::Pattern {
            value: shorten(pattern),
            why: "'*' may only stand alone or as the last segment ('prefix.*')",
        },
        FilterError::EventType { why, .. } => FilterError::Pattern {
            value: shorten(pattern),
            why,
        },
        other => other,
    })
}

/// The event types an endpoint subscribes to: 1 to 50 distinct patterns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    patterns: Vec<EventPattern>,
}

impl EventFilter {
    /// Parses a list of patterns (see the module docs). An empty list is
    /// refused: an endpoint that wants everything says `*`.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<EventFilter, FilterError> {
        if patterns.is_empty() {
            return Err(FilterError::Empty);
        }
        if patterns.len() > MAX_PATTERNS {
            return Err(FilterError::TooMany {
                count: patterns.len(),
            });
        }
        let mut parsed: Vec<EventPattern> = Vec::with_capacity(patterns.len());
        for p in patterns {
            let pattern = EventPattern::parse(p.as_ref())?;
            if parsed.contains(&pattern) {
                return Err(FilterError::Duplicate {
                    value: pattern.to_string(),
                });
            }
            parsed.push(pattern);
        }
        Ok(EventFilter { patterns: parsed })
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[EventPattern] {
        &self.patterns
    }

    /// Whether any pattern matches `event_type`.
    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(event_type))
    }
}

/// Why an event type or filter was refused. The messages are sentences for
/// the user; [`FilterError::code`] is stable for the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("The event type '{value}' is not valid: {why}.")]
    EventType { value: String, why: &'static str },
    #[error(
        "The event filter '{value}' is not valid: {why}. Use an event type, 'prefix.*' or '*'."
    )]
    Pattern { value: String, why: &'static str },
    #[error("An endpoint needs at least one event filter; use '*' for every event.")]
    Empty,
    #[error("An endpoint takes at most 50 event filters, not {count}.")]
    TooMany { count: usize },
    #[error("The event filter '{value}' is listed twice.")]
    Duplicate { value: String },
    #[error("A stored event filter has neither or both of its exact type and prefix.")]
    StoredPair,
}

impl FilterError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            FilterError::EventType { .. } => "invalid_event_type",
            FilterError::Pattern { .. } => "invalid_event_filter",
            FilterError::Empty => "no_event_filter",
            FilterError::TooMany { .. } => "too_many_event_filters",
            FilterError::Duplicate { .. } => "duplicate_event_filter",
            FilterError::StoredPair => "invalid_stored_filter",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types() {
        for ok in [
            "key.created",
            "a",
            "vox.call.ended",
            "x_y-z.0",
            &"a".repeat(100),
        ] {
            assert_eq!(check_event_type(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Key.created",
            "key..created",
            ".key",
            "key.",
            "key created",
            "key.*",
            "*",
            "clé.x",
            &"a".repeat(101),
        ] {
            let e = check_event_type(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_event_type", "{bad}");
        }
    }

    #[test]
    fn error_messages_are_sentences_and_bounded() {
        let e = check_event_type("Key.created").unwrap_err();
        assert_eq!(
            e.to_string(),
            "The event type 'Key.created' is not valid: segments may hold only lowercase letters, digits, '_' and '-'."
        );
        let long = "é".repeat(300);
        assert!(check_event_type(&long).unwrap_err().to_string().len() < 250);
    }

    #[test]
    fn patterns_parse_and_expose_sql_pairs() {
        let all = EventPattern::parse("*").unwrap();
        assert_eq!(all, EventPattern::All);
        assert_eq!(all.sql_pair(), (None, Some(String::new())));
        let prefix = EventPattern::parse("vox.call.*").unwrap();
        assert_eq!(prefix, EventPattern::Prefix("vox.call.".into()));
        assert_eq!(prefix.sql_pair(), (None, Some("vox.call.".into())));
        assert_eq!(prefix.to_string(), "vox.call.*");
        let exact = EventPattern::parse("key.created").unwrap();
        assert_eq!(exact.sql_pair(), (Some("key.created".into()), None));
        assert_eq!(exact.to_string(), "key.created");
        for p in [&all, &prefix, &exact] {
            let (e, pre) = p.sql_pair();
            assert_eq!(
                &EventPattern::from_sql_pair(e.as_deref(), pre.as_deref()).unwrap(),
                p
            );
        }
        assert_eq!(
            EventPattern::from_sql_pair(Some("a"), Some("b.")),
            Err(FilterError::StoredPair)
        );
        assert_eq!(
            EventPattern::from_sql_pair(None, None),
            Err(FilterError::StoredPair)
        );
        assert_eq!(
            EventPattern::from_sql_pair(None, Some("nodot")),
            Err(FilterError::StoredPair)
        );
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "", "**", "*.x", "a.*.b", "a*", "a.b*", ".*", "A.*", "a..*", "a.**",
        ] {
            let e = EventPattern::parse(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_event_filter", "{bad}: {e}");
        }
    }

    #[test]
    fn prefix_matches_whole_segments_only() {
        let f = EventFilter::parse(&["vox.*"]).unwrap();
        assert!(f.matches("vox.call"));
        assert!(f.matches("vox.call.ended"));
        assert!(!f.matches("vox"));
        assert!(!f.matches("voxel.call"));
        assert!(!f.matches("a.vox.call"));
    }

    #[test]
    fn filters_match_any_pattern() {
        let f = EventFilter::parse(&["key.created", "vox.call.*"]).unwrap();
        assert!(f.matches("key.created"));
        assert!(!f.matches("key.created.later"));
        assert!(!f.matches("key.revoked"));
        assert!(f.matches("vox.call.ended"));
        assert!(!f.matches("vox.call"));
        let all = EventFilter::parse(&["*"]).unwrap();
        assert!(all.matches("anything.at.all"));
        assert_eq!(f.patterns().len(), 2);
    }

    #[test]
    fn filter_lists_are_bounded_and_distinct() {
        assert_eq!(
            EventFilter::parse::<&str>(&[]).unwrap_err(),
            FilterError::Empty
        );
        let fifty: Vec<String> = (0..50).map(|i| format!("t{i}")).collect();
        assert!(EventFilter::parse(&fifty).is_ok());
        let fifty_one: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
        assert_eq!(
            EventFilter::parse(&fifty_one).unwrap_err(),
            FilterError::TooMany { count: 51 }
        );
        let e = EventFilter::parse(&["a.*", "b", "a.*"]).unwrap_err();
        assert_eq!(e.code(), "duplicate_event_filter");
        assert_eq!(e.to_string(), "The event filter 'a.*' is listed twice.");
    }

    /// The SQL rule `type = exact OR substr(type, 1, length(prefix)) = prefix`
    /// agrees with `matches`.
    #[test]
    fn sql_rule_agrees_with_matches() {
        let types = [
            "key.created",
            "vox.call",
            "vox.call.ended",
            "vox",
            "voxel.a",
        ];
        let patterns = ["*", "vox.*", "vox.call.*", "key.created", "vox"];
        for p in patterns {
            let pattern = EventPattern::parse(p).unwrap();
            let (exact, prefix) = pattern.sql_pair();
            for t in types {
                let sql = exact.as_deref() == Some(t)
                    || prefix
                        .as_deref()
                        .is_some_and(|pre| t.get(..pre.len()) == Some(pre));
                assert_eq!(sql, pattern.matches(t), "{p} vs {t}");
            }
        }
    }
}
