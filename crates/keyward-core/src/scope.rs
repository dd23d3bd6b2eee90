//! Scopes: strings such as `vox:calls:create`. A granted scope ending in `*`
//! covers every scope that starts with what comes before the `*`
//! (`vox:*` covers `vox:calls:create` but not `vox` itself; `*` covers all).
//! A deployment declares its [`ScopeCatalog`]; keys hold only declared scopes
//! or wildcards that cover at least one of them.

use std::collections::BTreeSet;

/// keyward's own management scopes; always part of every catalog.
pub const KEYWARD_SCOPES: &[&str] = &[
    "keyward:keys:read",
    "keyward:keys:write",
    "keyward:keys:verify",
    "keyward:tenants:read",
    "keyward:tenants:write",
    "keyward:audit:read",
    "keyward:credits:read",
    "keyward:credits:write",
];

const MAX_SCOPE_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("{0:?} is not a valid scope: use 1-128 characters of a-z, A-Z, 0-9, and . _ - : / with an optional trailing *")]
    Syntax(String),
    #[error("{0:?} is not in this deployment's scope catalog")]
    Undeclared(String),
}

/// Checks the syntax of a scope (granted or required).
pub fn check_syntax(s: &str) -> Result<(), ScopeError> {
    let stem = s.strip_suffix('*').unwrap_or(s);
    let ok = !s.is_empty()
        && s.len() <= MAX_SCOPE_LEN
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(ScopeError::Syntax(s.to_owned()))
    }
}

/// Whether the granted scope `grant` covers the required scope `need`.
pub fn covers(grant: &str, need: &str) -> bool {
    match grant.strip_suffix('*') {
        Some(stem) => need.len() > stem.len() && need.starts_with(stem),
        None => grant == need,
    }
}

/// The scopes a key holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet {
    grants: Vec<String>,
}

impl ScopeSet {
    pub fn new(grants: impl IntoIterator<Item = String>) -> ScopeSet {
        let set: BTreeSet<String> = grants.into_iter().collect();
        ScopeSet {
            grants: set.into_iter().collect(),
        }
    }

    pub fn grants(&self) -> &[String] {
        &self.grants
    }

    pub fn allows(&self, need: &str) -> bool {
        self.grants.iter().any(|g| covers(g, need))
    }

    /// The required scopes this set does not cover, in the order given.
    pub fn missing<'a>(&self, required: &'a [String]) -> Vec<&'a str> {
        required
            .iter()
            .filter(|r| !self.allows(r))
            .map(String::as_str)
            .collect()
    }
}

/// The scopes a deployment declares.
#[derive(Debug, Clone, Default)]
pub struct ScopeCatalog {
    declared: BTreeSet<String>,
}

impl ScopeCatalog {
    /// A catalog of `declared` plus keyward's own management scopes.
    pub fn new<'a>(
        declared: impl IntoIterator<Item = &'a str>,
    ) -> Result<ScopeCatalog, ScopeError> {
        let mut set = BTreeSet::new();
        for s in declared.into_iter().chain(KEYWARD_SCOPES.iter().copied()) {
            check_syntax(s)?;
            if s.ends_with('*') {
                return Err(ScopeError::Syntax(s.to_owned()));
            }
            set.insert(s.to_owned());
        }
        Ok(ScopeCatalog { declared: set })
    }

    pub fn declared(&self) -> impl Iterator<Item = &str> {
        self.declared.iter().map(String::as_str)
    }

    /// Whether a key may be granted `s`: a declared scope, or a wildcard that
    /// covers at least one declared scope.
    pub fn check_grant(&self, s: &str) -> Result<(), ScopeError> {
        check_syntax(s)?;
        let known = if s.ends_with('*') {
            self.declared.iter().any(|d| covers(s, d))
        } else {
            self.declared.contains(s)
        };
        if known {
            Ok(())
        } else {
            Err(ScopeError::Undeclared(s.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn wildcard_covers_everything_below() {
        assert!(covers("vox:*", "vox:calls:create"));
        assert!(covers("vox:calls:*", "vox:calls:create"));
        assert!(!covers("vox:*", "vox"));
        assert!(!covers("vox:*", "voxel:read"));
        assert!(covers("*", "anything"));
        assert!(covers("vox:read", "vox:read"));
        assert!(!covers("vox:read", "vox:read:all"));
    }

    #[test]
    fn missing_lists_uncovered_scopes_in_order() {
        let s = ScopeSet::new(["vault:read".to_string(), "chat:*".to_string()]);
        let need = [
            "vault:write".to_string(),
            "chat:write".to_string(),
            "a:b".to_string(),
        ];
        assert_eq!(s.missing(&need), vec!["vault:write", "a:b"]);
    }

    #[test]
    fn catalog_accepts_declared_and_covering_wildcards() {
        let c = ScopeCatalog::new(["vox:read", "vox:calls:create"]).unwrap();
        assert!(c.check_grant("vox:read").is_ok());
        assert!(c.check_grant("vox:*").is_ok());
        assert!(c.check_grant("keyward:*").is_ok());
        assert_eq!(
            c.check_grant("vox:write"),
            Err(ScopeError::Undeclared("vox:write".into()))
        );
        assert_eq!(
            c.check_grant("zzz:*"),
            Err(ScopeError::Undeclared("zzz:*".into()))
        );
        assert!(matches!(
            c.check_grant("bad scope"),
            Err(ScopeError::Syntax(_))
        ));
        assert!(ScopeCatalog::new(["a:*"]).is_err());
    }

    proptest! {
        /// A wildcard grant allows exactly the scopes a literal prefix test allows.
        #[test]
        fn wildcard_matches_prefix_rule(stem in "[a-c:]{0,4}", need in "[a-c:]{0,6}") {
            let grant = format!("{stem}*");
            prop_assert_eq!(covers(&grant, &need), need.starts_with(&stem) && need.len() > stem.len());
        }

        /// Adding grants never removes an allowed scope.
        #[test]
        fn grants_are_monotonic(a in proptest::collection::vec("[a-c:*]{1,4}", 0..4), extra in "[a-c:*]{1,4}", need in "[a-c:]{1,5}") {
            let small = ScopeSet::new(a.clone());
            let mut more = a;
            more.push(extra);
            let big = ScopeSet::new(more);
            prop_assert!(!small.allows(&need) || big.allows(&need));
        }
    }
}
