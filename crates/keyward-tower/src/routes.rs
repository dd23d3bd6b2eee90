//! What each route requires: a small table of method + path template →
//! [`Rule`] (scopes, rate-limit cost, credits, or open), matched on the
//! path in normal form. A request no entry matches gets the table's
//! fallback rule: by default a valid key with no particular scope, so a
//! route left out of the table is never open by mistake.

use std::sync::Arc;

use http::Method;

/// What a route requires of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// No key is checked (a key in the query or a cookie is still refused).
    pub(crate) open: bool,
    pub(crate) scopes: Vec<String>,
    pub(crate) cost: u64,
    pub(crate) credits: i64,
}

impl Rule {
    /// A valid key with these scopes; cost 1, no credits.
    pub fn scopes<I, S>(scopes: I) -> Rule
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Rule {
            open: false,
            scopes: scopes.into_iter().map(Into::into).collect(),
            cost: 1,
            credits: 0,
        }
    }

    /// A valid key, any scopes.
    pub fn authenticated() -> Rule {
        Rule::scopes(Vec::<String>::new())
    }

    /// No key needed.
    pub fn open() -> Rule {
        Rule {
            open: true,
            ..Rule::authenticated()
        }
    }

    /// Rate-limit tokens a request costs (default 1).
    pub fn cost(mut self, cost: u64) -> Rule {
        self.cost = cost;
        self
    }

    /// Credits a request costs, spent from the key's tenant (default 0).
    pub fn credits(mut self, credits: i64) -> Rule {
        self.credits = credits;
        self
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn required_scopes(&self) -> &[String] {
        &self.scopes
    }
}

/// A path template that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("route {template:?}: {reason}")]
pub struct RouteError {
    pub template: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: any one segment.
    Param,
    /// `{*name}`, last: the rest of the path (one segment or more).
    Rest,
}

#[derive(Debug, Clone)]
struct Entry {
    /// `None`: any method.
    method: Option<Method>,
    segments: Vec<Segment>,
    rule: Arc<Rule>,
}

/// Method + path template → [`Rule`]. Templates are `/`-separated
/// segments: literals, `{param}` (one segment) and a final `{*rest}`. The
/// first entry that matches wins; a literal segment wins over a parameter
/// only by coming first, so list specific routes before general ones.
#[derive(Debug, Clone)]
pub struct RouteTable {
    entries: Vec<Entry>,
    fallback: Arc<Rule>,
}

impl Default for RouteTable {
    fn default() -> RouteTable {
        RouteTable::new()
    }
}

impl RouteTable {
    /// An empty table whose fallback is [`Rule::authenticated`].
    pub fn new() -> RouteTable {
        RouteTable {
            entries: Vec::new(),
            fallback: Arc::new(Rule::authenticated()),
        }
    }

    /// Adds `method template → rule`; `method` `None` matches any method.
    pub fn route(
        mut self,
        method: impl Into<Option<Method>>,
        template: &str,
        rule: Rule,
    ) -> Result<RouteTable, RouteError> {
        let segments = parse(template)?;
        self.entries.push(Entry {
            method: method.into(),
            segments,
            rule: Arc::new(rule),
        });
        Ok(self)
    }

    /// The rule of requests no entry matches.
    pub fn fallback(mut self, rule: Rule) -> RouteTable {
        self.fallback = Arc::new(rule);
        self
    }

    /// The rule for `method path` (`path` in normal form, without query).
    pub fn rule(&self, method: &Method, path: &str) -> &Arc<Rule> {
        self.entries
            .iter()
            .find(|e| {
                e.method
                    .as_ref()
                    .is_none_or(|m| m == method || (*m == Method::GET && method == Method::HEAD))
                    && matches(&e.segments, path)
            })
            .map_or(&self.fallback, |e| &e.rule)
    }
}

fn parse(template: &str) -> Result<Vec<Segment>, RouteError> {
    let err = |reason| RouteError {
        template: template.to_owned(),
        reason,
    };
    let rest = template
        .strip_prefix('/')
        .ok_or_else(|| err("must start with /"))?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let seg = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) if name.starts_with('*') => {
                if i + 1 != parts.len() {
                    return Err(err("{*rest} must be the last segment"));
                }
                Segment::Rest
            }
            Some(name) if !name.is_empty() && !name.contains(['{', '}']) => Segment::Param,
            Some(_) => return Err(err("a parameter needs a name")),
            None if part.is_empty() => return Err(err("empty segment")),
            None if part.contains(['{', '}']) => {
                return Err(err("a parameter must be a whole segment"))
            }
            None => Segment::Literal((*part).to_owned()),
        };
        out.push(seg);
    }
    Ok(out)
}

fn matches(segments: &[Segment], path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if segments.is_empty() {
        return rest.is_empty();
    }
    let mut parts = rest.split('/');
    for seg in segments {
        match seg {
            Segment::Rest => return parts.next().is_some_and(|p| !p.is_empty()),
            Segment::Param => match parts.next() {
                Some(p) if !p.is_empty() => {}
                _ => return false,
            },
            Segment::Literal(l) => {
                if parts.next() != Some(l.as_str()) {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::new()
            .route(Method::GET, "/health", Rule::open())
            .unwrap()
            .route(Method::GET, "/v1/calls", Rule::scopes(["calls:read"]))
            .unwrap()
            .route(
                Method::POST,
                "/v1/calls",
                Rule::scopes(["calls:write"]).credits(1),
            )
            .unwrap()
            .route(
                Method::GET,
                "/v1/calls/{id}/recording",
                Rule::scopes(["calls:read", "recordings:read"]).cost(5),
            )
            .unwrap()
            .route(None, "/files/{*path}", Rule::scopes(["files:read"]))
            .unwrap()
            .route(Method::GET, "/", Rule::open())
            .unwrap()
    }

    #[test]
    fn routes_match_by_method_and_template() {
        let t = table();
        assert!(t.rule(&Method::GET, "/health").is_open());
        assert!(t.rule(&Method::HEAD, "/health").is_open(), "HEAD is GET's");
        assert!(t.rule(&Method::GET, "/").is_open());
        assert_eq!(
            t.rule(&Method::GET, "/v1/calls").required_scopes(),
            ["calls:read"]
        );
        let post = t.rule(&Method::POST, "/v1/calls");
        assert_eq!(post.required_scopes(), ["calls:write"]);
        assert_eq!(post.credits, 1);
        let rec = t.rule(&Method::GET, "/v1/calls/call_1/recording");
        assert_eq!(rec.cost, 5);
        assert_eq!(rec.scopes.len(), 2);
        for m in [Method::GET, Method::DELETE] {
            assert_eq!(
                t.rule(&m, "/files/a/b.txt").required_scopes(),
                ["files:read"]
            );
        }
    }

    #[test]
    fn what_no_entry_matches_needs_a_key() {
        let t = table();
        for (m, p) in [
            (Method::POST, "/health"),
            (Method::GET, "/health/"),
            (Method::GET, "/healthz"),
            (Method::GET, "/v1/calls/"),
            (Method::GET, "/v1/calls/x/recording/more"),
            (Method::GET, "/v1/calls//recording"),
            (Method::GET, "/files"),
            (Method::GET, "/files/"),
            (Method::DELETE, "/v1/calls"),
        ] {
            let r = t.rule(&m, p);
            assert!(!r.is_open(), "{m} {p}");
            assert!(r.required_scopes().is_empty(), "{m} {p}");
        }
        let closed = RouteTable::new().fallback(Rule::scopes(["admin"]));
        assert_eq!(closed.rule(&Method::GET, "/x").required_scopes(), ["admin"]);
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "health",
            "/a//b",
            "/a/{}",
            "/a/{*rest}/b",
            "/a/x{id}",
            "/a/",
        ] {
            assert!(
                RouteTable::new().route(None, bad, Rule::open()).is_err(),
                "{bad}"
            );
        }
    }
}
