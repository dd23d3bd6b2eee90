//! Scopes: strings such as `vox:calls:create`. A granted scope ending in `*`
//! covers every scope that starts with what comes before the `*`
//! (`vox:*` covers `vox:calls:create` but not `vox` itself; `*` covers all).
//! A deployment declares its [`ScopeCatalog`]; keys hold only declared scopes
//! or wildcards that cover at least one of them.
//!
//! Who may give a key which scopes is [`refused_grants`]: operators any scope
//! of the catalog; a tenant's API key at most the scopes it holds itself; a
//! console member of the tenant keyward's own scopes only as far as their
//! role holds them; and everyone but operators only within the tenant's
//! ceiling of grantable scopes, if it has one.

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
    "keyward:leaks:write",
    "keyward:leaks:check",
    "keyward:webhooks:read",
    "keyward:webhooks:write",
    "keyward:events:write",
    "keyward:alerts:read",
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

/// Who gives a key its scopes, which decides what they may give.
#[derive(Debug, Clone, Copy)]
pub enum Grantor<'a> {
    /// An operator (a root key, a console operator): any scope of the
    /// catalog, whatever the tenant's ceiling.
    Operator,
    /// A tenant's API key holding `keyward:keys:write`: only scopes it holds
    /// itself (`vox:*` may grant `vox:calls:read`; `vox:calls:read` may not
    /// grant `vox:*`).
    Key(&'a ScopeSet),
    /// A console member of the tenant acting with their role's scopes: the
    /// deployment's own scopes freely, keyward's management scopes only as
    /// far as the role holds them.
    Member(&'a ScopeSet),
}

/// Why a scope may not be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantRefusal {
    /// Beyond the granting key's (or member's role's) own scopes.
    NotHeld,
    /// Outside the tenant's ceiling of grantable scopes.
    OutsideCeiling,
}

/// The scopes of `requested` that `grantor` may not give a key of a tenant
/// whose ceiling is `ceiling` (`None`: no ceiling), each with why; empty
/// when all may be given.
///
/// `kept` are the scopes the key holds already (empty for a new key or a
/// rotation, whose new secret is a new grant): keeping one of them, or
/// narrowing it (`vox:*` to `vox:read`), gives nothing new and is always
/// allowed. Scopes are compared as grants, not as requirements: a held (or
/// ceiling) scope may give `s` if it covers `s` read literally, so a
/// wildcard is given only by a wildcard at least as wide.
pub fn refused_grants<'r>(
    grantor: Grantor<'_>,
    ceiling: Option<&ScopeSet>,
    kept: &ScopeSet,
    requested: &'r [String],
) -> Vec<(&'r str, GrantRefusal)> {
    let mut refused = Vec::new();
    for s in requested {
        if kept.allows(s) {
            continue;
        }
        let held = match grantor {
            Grantor::Operator => continue,
            Grantor::Key(own) => own.allows(s),
            // Everything `s` would give of keyward's own scopes, the role holds.
            Grantor::Member(role) => KEYWARD_SCOPES
                .iter()
                .all(|k| !covers(s, k) || role.allows(k)),
        };
        if !held {
            refused.push((s.as_str(), GrantRefusal::NotHeld));
        } else if ceiling.is_some_and(|c| !c.allows(s)) {
            refused.push((s.as_str(), GrantRefusal::OutsideCeiling));
        }
    }
    refused
}

/// One declared scope and what it allows, as the console shows it beside
/// the scope's checkbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeEntry {
    pub name: String,
    /// What a key holding the scope may do; `None` when the deployment
    /// gave no description.
    pub description: Option<String>,
}

/// The scopes a deployment declares.
#[derive(Debug, Clone, Default)]
pub struct ScopeCatalog {
    declared: BTreeSet<String>,
    /// Every declared scope once, in catalog order: the deployment's in the
    /// order of its configuration, then keyward's own.
    entries: Vec<ScopeEntry>,
}

/// What keyward's own scopes allow, in [`KEYWARD_SCOPES`] order.
const KEYWARD_SCOPE_DESCRIPTIONS: &[&str] = &[
    "Read API keys through keyward's management API.",
    "Create, change, rotate and revoke API keys through keyward's management API.",
    "Check other keys' secrets with keyward's verify endpoint.",
    "Read tenants through keyward's management API.",
    "Create and change tenants through keyward's management API.",
    "Read the audit log through keyward's management API.",
    "Read credit balances and the ledger through keyward's management API.",
    "Grant credits and change refills through keyward's management API.",
    "Report leaked keys (the policy then revokes, disables or flags them).",
    "Ask which key hashes are live keys (`keyward scan --check`).",
    "Read webhook endpoints and their delivery logs.",
    "Create, change, rotate, test and delete webhook endpoints, and redeliver.",
    "Hand events to keyward for signed delivery to the tenant's webhook endpoints (`POST /v1/events`).",
    "Read alerts (new client addresses, traffic spikes, error rates, dormant and expiring keys, low credits).",
];

impl ScopeCatalog {
    /// A catalog of `declared` plus keyward's own management scopes.
    pub fn new<'a>(
        declared: impl IntoIterator<Item = &'a str>,
    ) -> Result<ScopeCatalog, ScopeError> {
        ScopeCatalog::described(declared.into_iter().map(|s| (s, None)))
    }

    /// A catalog of `declared` scopes, each with an optional description, in
    /// this order, plus keyward's own management scopes. A scope declared
    /// twice keeps its first place and its first description.
    pub fn described<'a>(
        declared: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<ScopeCatalog, ScopeError> {
        let own = KEYWARD_SCOPES
            .iter()
            .zip(KEYWARD_SCOPE_DESCRIPTIONS)
            .map(|(s, d)| (*s, Some(*d)));
        let mut catalog = ScopeCatalog::default();
        for (s, description) in declared.into_iter().chain(own) {
            check_syntax(s)?;
            if s.ends_with('*') {
                return Err(ScopeError::Syntax(s.to_owned()));
            }
            if catalog.declared.insert(s.to_owned()) {
                catalog.entries.push(ScopeEntry {
                    name: s.to_owned(),
                    description: description
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .map(str::to_owned),
                });
            } else if let Some(e) = catalog.entries.iter_mut().find(|e| e.name == s) {
                // keyward's own scopes keep a description the deployment gave.
                if e.description.is_none() {
                    e.description = description.map(str::to_owned);
                }
            }
        }
        Ok(catalog)
    }

    /// The declared scopes, sorted.
    pub fn declared(&self) -> impl Iterator<Item = &str> {
        self.declared.iter().map(String::as_str)
    }

    /// The declared scopes in catalog order, with their descriptions.
    pub fn entries(&self) -> &[ScopeEntry] {
        &self.entries
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

    #[test]
    fn catalog_keeps_declaration_order_and_descriptions() {
        let c = ScopeCatalog::described([
            ("vox:write", Some("Place calls.")),
            ("vox:read", None),
            ("vox:write", Some("ignored")),
            ("keyward:keys:read", Some("Our own words.")),
        ])
        .unwrap();
        let names: Vec<&str> = c.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(&names[..3], ["vox:write", "vox:read", "keyward:keys:read"]);
        assert_eq!(names.len(), 2 + KEYWARD_SCOPES.len());
        assert_eq!(c.entries()[0].description.as_deref(), Some("Place calls."));
        assert_eq!(c.entries()[1].description, None);
        assert_eq!(
            c.entries()[2].description.as_deref(),
            Some("Our own words.")
        );
        assert!(c.entries()[3].description.is_some());
        assert_eq!(KEYWARD_SCOPES.len(), KEYWARD_SCOPE_DESCRIPTIONS.len());
        let sorted: Vec<&str> = c.declared().collect();
        assert_eq!(sorted[0], "keyward:alerts:read");
    }

    fn set(s: &[&str]) -> ScopeSet {
        ScopeSet::new(s.iter().map(|s| (*s).to_owned()))
    }

    fn req(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_key_grants_only_what_it_holds_wildcards_one_way() {
        let own = set(&["vox:*", "keyward:keys:write"]);
        let none = ScopeSet::default();
        let r = req(&[
            "vox:calls:read",
            "vox:*",
            "vox:calls:*",
            "keyward:keys:write",
        ]);
        assert!(refused_grants(Grantor::Key(&own), None, &none, &r).is_empty());
        let narrow = set(&["vox:a", "keyward:keys:write"]);
        let r = req(&[
            "vox:a",
            "vox:*",
            "*",
            "admin:all",
            "keyward:keys:read",
            "vox:a*",
        ]);
        assert_eq!(
            refused_grants(Grantor::Key(&narrow), None, &none, &r),
            vec![
                ("vox:*", GrantRefusal::NotHeld),
                ("*", GrantRefusal::NotHeld),
                ("admin:all", GrantRefusal::NotHeld),
                ("keyward:keys:read", GrantRefusal::NotHeld),
                ("vox:a*", GrantRefusal::NotHeld),
            ]
        );
    }

    #[test]
    fn the_ceiling_bounds_everyone_but_operators() {
        let ceiling = set(&["vox:*", "keyward:keys:*"]);
        let none = ScopeSet::default();
        let own = set(&["*"]);
        let r = req(&[
            "vox:read",
            "vault:read",
            "keyward:keys:read",
            "keyward:audit:read",
        ]);
        let outside = vec![
            ("vault:read", GrantRefusal::OutsideCeiling),
            ("keyward:audit:read", GrantRefusal::OutsideCeiling),
        ];
        assert_eq!(
            refused_grants(Grantor::Key(&own), Some(&ceiling), &none, &r),
            outside
        );
        let role = set(&[
            "keyward:keys:read",
            "keyward:keys:write",
            "keyward:audit:read",
        ]);
        assert_eq!(
            refused_grants(Grantor::Member(&role), Some(&ceiling), &none, &r),
            outside
        );
        assert!(refused_grants(Grantor::Operator, Some(&ceiling), &none, &r).is_empty());
        // An empty ceiling: nothing may be granted, no scopes still may.
        let empty = ScopeSet::default();
        assert_eq!(
            refused_grants(Grantor::Key(&own), Some(&empty), &none, &r).len(),
            4
        );
        assert!(refused_grants(Grantor::Key(&own), Some(&empty), &none, &[]).is_empty());
    }

    #[test]
    fn members_grant_product_scopes_and_their_roles_keyward_scopes() {
        let role = set(&[
            "keyward:keys:read",
            "keyward:keys:write",
            "keyward:tenants:read",
        ]);
        let none = ScopeSet::default();
        let r = req(&[
            "vox:*",
            "vault:read",
            "keyward:keys:read",
            "keyward:keys:*",
            "keyward:audit:read",
            "*",
        ]);
        assert_eq!(
            refused_grants(Grantor::Member(&role), None, &none, &r),
            vec![
                ("keyward:keys:*", GrantRefusal::NotHeld),
                ("keyward:audit:read", GrantRefusal::NotHeld),
                ("*", GrantRefusal::NotHeld),
            ]
        );
    }

    #[test]
    fn keeping_or_narrowing_held_scopes_is_not_a_grant() {
        let own = set(&["keyward:keys:write"]);
        let kept = set(&["admin:*", "vox:read"]);
        let ceiling = set(&["vox:calls:read"]);
        let r = req(&["admin:all", "admin:*", "vox:read"]);
        assert!(refused_grants(Grantor::Key(&own), Some(&ceiling), &kept, &r).is_empty());
        let r = req(&["admin:all", "vox:write"]);
        assert_eq!(
            refused_grants(Grantor::Key(&own), Some(&ceiling), &kept, &r),
            vec![("vox:write", GrantRefusal::NotHeld)]
        );
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

        /// What a key grants gives no more than the key holds: every scope
        /// a granted scope covers, the granting key covers too.
        #[test]
        fn granted_scopes_never_exceed_the_grantor(
            own in proptest::collection::vec("[ab:]{1,3}\\*?", 0..4),
            wanted in "[ab:]{1,3}\\*?",
            need in "[ab:]{1,5}",
        ) {
            let own = ScopeSet::new(own);
            let requested = [wanted.clone()];
            let granted = refused_grants(Grantor::Key(&own), None, &ScopeSet::default(), &requested).is_empty();
            if granted && covers(&wanted, &need) {
                prop_assert!(own.allows(&need), "{wanted} given by {own:?} covers {need}");
            }
            // A literal scope is granted exactly when the key is allowed it.
            if !wanted.ends_with('*') {
                prop_assert_eq!(granted, own.allows(&wanted));
            }
        }

        /// The ceiling is as tight as the grantor's own scopes: nothing
        /// granted under a ceiling reaches past it.
        #[test]
        fn granted_scopes_never_exceed_the_ceiling(
            ceiling in proptest::collection::vec("[ab:]{1,3}\\*?", 0..4),
            wanted in "[ab:]{1,3}\\*?",
            need in "[ab:]{1,5}",
        ) {
            let ceiling = ScopeSet::new(ceiling);
            let everything = ScopeSet::new(["*".to_owned()]);
            let requested = [wanted.clone()];
            let granted = refused_grants(Grantor::Key(&everything), Some(&ceiling), &ScopeSet::default(), &requested).is_empty();
            if granted && covers(&wanted, &need) {
                prop_assert!(ceiling.allows(&need));
            }
        }
    }
}
