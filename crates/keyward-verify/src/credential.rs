//! Finding the presented key in a request (`keys.schemes`) and the client address.
//!
//! Accepted, as configured: `Authorization: Bearer <secret>`,
//! `<header>: <secret>`, `Authorization: Basic base64(key_id:secret)`.
//! A key in the query string or a cookie is refused with an error that says
//! where to put it instead: by the parameter or cookie name other products
//! use for keys (`api_key`, `token`, …), and by value — any well-formed key
//! of this deployment's format anywhere in the query string or a `Cookie`
//! header, as sent or percent-decoded (once or twice), even beside a valid
//! key in the right header, so a secret never travels on to an upstream
//! ([`refuse_embedded_keys`]). Header values that are not UTF-8 or not
//! decodable are `invalid_api_key`, never a panic.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use http::{HeaderMap, Uri};
use ipnet::IpNet;
use keyward_core::allowlist::canonical;
use keyward_core::secret::KeyFormat;
use zeroize::Zeroizing;

/// How a credential may be presented (`keys.schemes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `Authorization: Bearer <secret>`
    Bearer,
    /// `<keys.header>: <secret>`
    Header,
    /// `Authorization: Basic base64(key_id:secret)`
    Basic,
}

/// The deployment's rules for finding keys: the API-key header's name and
/// the key format (to recognise keys presented where they do not belong).
#[derive(Debug, Clone)]
pub struct CredentialRules {
    pub header: String,
    pub format: KeyFormat,
}

/// A credential that is present but unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Not decodable, or in an `Authorization` scheme not accepted here.
    #[error("the API key is not valid")]
    Invalid,
    /// In the query string or a cookie; `header` is where it belongs.
    #[error("API keys are not accepted in the {place}")]
    Misplaced { place: &'static str, header: String },
}

/// Query parameter and cookie names that carry keys in other products.
const MISPLACED_NAMES: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "key",
    "token",
    "access_token",
    "x-api-key",
];

/// A credential as presented.
#[derive(Debug)]
pub enum Presented {
    Secret(Secret),
    /// HTTP Basic: both must match the same key.
    Basic {
        key_id: String,
        secret: Secret,
    },
}

impl Presented {
    pub fn secret(&self) -> &str {
        match self {
            Presented::Secret(s) | Presented::Basic { secret: s, .. } => s.expose(),
        }
    }
}

/// A presented secret: never printed, wiped from memory on drop.
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(Zeroizing::new(s))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Read access to a request's headers, whatever holds them: a parsed
/// [`HeaderMap`] (the axum path) or the raw `httparse` headers of the
/// gateway's HTTP/1 path, so both find credentials by the same code.
pub trait HeaderSource {
    /// The values of the header `name` (any case), in order.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a;

    fn first<'a>(&'a self, name: &'a str) -> Option<&'a [u8]> {
        self.values(name).next()
    }
}

impl HeaderSource for HeaderMap {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).iter().map(|v| v.as_bytes())
    }
}

impl HeaderSource for [httparse::Header<'_>] {
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// A header value as text if it is visible ASCII (tabs allowed), the rule
/// of `HeaderValue::to_str`, so both header sources agree on what is text.
pub fn header_text(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// Every scheme: keyward's own management API accepts them all, whatever
/// the deployment chose for its gateway routes.
pub const ALL_SCHEMES: &[Scheme] = &[Scheme::Bearer, Scheme::Header, Scheme::Basic];

/// Extracts the credential accepting only `schemes` (the deployment's
/// `keys.schemes`, or [`ALL_SCHEMES`]), or `Ok(None)` if none was presented.
pub fn extract(
    headers: &HeaderMap,
    uri: &Uri,
    rules: &CredentialRules,
    schemes: &[Scheme],
) -> Result<Option<Presented>, CredentialError> {
    extract_from(headers, uri.query(), rules, schemes)
}

/// Extracts the credential from any [`HeaderSource`] and the query string.
pub fn extract_from<H: HeaderSource + ?Sized>(
    headers: &H,
    query: Option<&str>,
    rules: &CredentialRules,
    schemes: &[Scheme],
) -> Result<Option<Presented>, CredentialError> {
    refuse_misplaced(headers, query, &rules.header)?;
    refuse_embedded_keys(headers, query, rules)?;
    let invalid = || CredentialError::Invalid;
    if let Some(value) = headers.first("authorization") {
        let value = header_text(value).ok_or_else(invalid)?.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && schemes.contains(&Scheme::Bearer) {
            return Ok(Some(Presented::Secret(Secret::new(rest.to_owned()))));
        }
        if scheme.eq_ignore_ascii_case("basic") && schemes.contains(&Scheme::Basic) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| invalid())?;
            let text = String::from_utf8(decoded).map_err(|_| invalid())?;
            let (key_id, secret) = text.split_once(':').ok_or_else(invalid)?;
            return Ok(Some(Presented::Basic {
                key_id: key_id.to_owned(),
                secret: Secret::new(secret.to_owned()),
            }));
        }
        if !schemes.contains(&Scheme::Header) {
            return Err(invalid());
        }
    }
    if schemes.contains(&Scheme::Header) {
        if let Some(value) = headers.first(&rules.header) {
            let value = header_text(value).ok_or_else(invalid)?.trim();
            return Ok(Some(Presented::Secret(Secret::new(value.to_owned()))));
        }
    }
    if headers.first("authorization").is_some() {
        // An Authorization scheme this deployment does not accept.
        return Err(invalid());
    }
    Ok(None)
}

fn refuse_misplaced<H: HeaderSource + ?Sized>(
    headers: &H,
    query: Option<&str>,
    header: &str,
) -> Result<(), CredentialError> {
    let misplaced = |name: &str| MISPLACED_NAMES.iter().any(|m| m.eq_ignore_ascii_case(name));
    if let Some(q) = query {
        if q.split('&')
            .any(|pair| misplaced(pair.split('=').next().unwrap_or("")))
        {
            return Err(CredentialError::Misplaced {
                place: "query string",
                header: header.to_owned(),
            });
        }
    }
    for cookie in headers.values("cookie") {
        let Some(cookie) = header_text(cookie) else {
            continue;
        };
        if cookie
            .split(';')
            .any(|c| misplaced(c.trim().split('=').next().unwrap_or("")))
        {
            return Err(CredentialError::Misplaced {
                place: "Cookie header",
                header: header.to_owned(),
            });
        }
    }
    Ok(())
}

/// Refuses a request whose query string or `Cookie` headers hold a
/// well-formed key of the deployment's format (any prefix, checksum valid),
/// whatever the parameter or cookie is called: `credentials_misplaced`, as
/// for a key presented there alone. The gateway calls this on routes
/// without `auth` too, so no route forwards a key to its upstream.
pub fn refuse_embedded_keys<H: HeaderSource + ?Sized>(
    headers: &H,
    query: Option<&str>,
    rules: &CredentialRules,
) -> Result<(), CredentialError> {
    let format = &rules.format;
    let header = &rules.header;
    if query.is_some_and(|q| holds_key(format, q.as_bytes())) {
        return Err(CredentialError::Misplaced {
            place: "query string",
            header: header.to_owned(),
        });
    }
    if headers.values("cookie").any(|c| holds_key(format, c)) {
        return Err(CredentialError::Misplaced {
            place: "Cookie header",
            header: header.to_owned(),
        });
    }
    Ok(())
}

/// Whether `text`, as sent or percent-decoded once or twice (an upstream
/// or a framework behind it may decode it), holds a key of `format`.
fn holds_key(format: &KeyFormat, text: &[u8]) -> bool {
    if format.holds_key(text) {
        return true;
    }
    let Some(once) = percent_decoded(text) else {
        return false;
    };
    format.holds_key(&once) || percent_decoded(&once).is_some_and(|twice| format.holds_key(&twice))
}

/// `text` with `%XX` escapes decoded, or `None` if it has none (malformed
/// escapes stay as they are).
fn percent_decoded(text: &[u8]) -> Option<Vec<u8>> {
    if !text.contains(&b'%') {
        return None;
    }
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let escaped = (text[i] == b'%')
            .then(|| Some((hex(*text.get(i + 1)?)?, hex(*text.get(i + 2)?)?)))
            .flatten();
        match escaped {
            Some((hi, lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            None => {
                out.push(text[i]);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The client address: the socket peer, or, when the peer is a trusted
/// proxy, the right-most untrusted address in `X-Forwarded-For`.
pub fn client_ip<H: HeaderSource + ?Sized>(
    peer: Option<SocketAddr>,
    headers: &H,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = canonical(peer?.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut chain: Vec<IpAddr> = Vec::new();
    for v in headers.values("x-forwarded-for") {
        let Some(v) = header_text(v) else {
            return Some(peer);
        };
        for part in v.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => chain.push(canonical(ip)),
                Err(_) => return Some(peer),
            }
        }
    }
    Some(
        chain
            .into_iter()
            .rev()
            .find(|ip| !is_trusted(ip))
            .unwrap_or(peer),
    )
}

#[cfg(test)]
mod tests {
    use http::{header, HeaderValue};

    use super::*;
    use keyward_core::secret::KeyFormat;

    fn settings() -> CredentialRules {
        CredentialRules {
            header: "x-api-key".into(),
            format: KeyFormat::new([("live", "kw_live_"), ("test", "kw_test_")], "kw_root_")
                .unwrap(),
        }
    }

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn bearer_header_and_basic() {
        let s = settings();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(
            extract(&h, &uri("/"), &s, ALL_SCHEMES)
                .unwrap()
                .unwrap()
                .secret(),
            "abc"
        );
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("xyz"));
        assert_eq!(
            extract(&h, &uri("/"), &s, ALL_SCHEMES)
                .unwrap()
                .unwrap()
                .secret(),
            "xyz"
        );
        let mut h = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode("key_1:sec");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {b64}")).unwrap(),
        );
        match extract(&h, &uri("/"), &s, ALL_SCHEMES).unwrap().unwrap() {
            Presented::Basic { key_id, secret } => {
                assert_eq!(key_id, "key_1");
                assert_eq!(secret.expose(), "sec");
            }
            other => panic!("{other:?}"),
        }
        assert!(extract(&HeaderMap::new(), &uri("/"), &s, ALL_SCHEMES)
            .unwrap()
            .is_none());
    }

    #[test]
    fn misplaced_and_broken_credentials_are_refused() {
        let s = settings();
        let e = extract(
            &HeaderMap::new(),
            &uri("/v1/me?api_key=kw_live_x"),
            &s,
            ALL_SCHEMES,
        )
        .unwrap_err();
        assert!(matches!(e, CredentialError::Misplaced { .. }));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        );
        assert!(matches!(
            extract(&h, &uri("/"), &s, ALL_SCHEMES),
            Err(CredentialError::Invalid)
        ));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(matches!(
            extract(&h, &uri("/"), &s, ALL_SCHEMES),
            Err(CredentialError::Invalid)
        ));
    }

    #[test]
    fn keys_in_any_cookie_or_query_value_are_refused_even_beside_a_good_header() {
        use keyward_core::secret::{KeyKind, OsEntropy};
        let s = settings();
        let key = s
            .format
            .generate(&KeyKind::Environment("test".into()), &OsEntropy)
            .unwrap();
        let key = key.expose();
        let root = s.format.generate(&KeyKind::Root, &OsEntropy).unwrap();
        let encoded = key.replace('_', "%5F");
        let twice = key.replace('_', "%255F");
        let with_bearer = |cookies: &[&str]| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
            );
            for c in cookies {
                h.append(header::COOKIE, HeaderValue::from_str(c).unwrap());
            }
            h
        };
        let refused = |h: &HeaderMap, target: &str| {
            matches!(
                extract(h, &uri(target), &s, ALL_SCHEMES),
                Err(CredentialError::Misplaced { .. })
            )
        };
        for cookies in [
            vec![format!("session={key}")],
            vec![format!("a=1; theme=dark; sid=\"{key}\"")],
            vec!["a=1".to_owned(), format!("b={encoded}")],
            vec![format!("b={twice}")],
            vec![format!("r={}", root.expose())],
        ] {
            let cookies: Vec<&str> = cookies.iter().map(String::as_str).collect();
            assert!(refused(&with_bearer(&cookies), "/v1/items"), "{cookies:?}");
        }
        for target in [
            format!("/v1/items?q={key}"),
            format!("/v1/items?a=1&q={encoded}&b=2"),
            format!("/v1/items?q={twice}"),
            format!("/v1/items?{key}"),
            format!("/v1/items?q=Bearer%20{key}"),
        ] {
            assert!(refused(&with_bearer(&[]), &target), "{target}");
        }
        // Ordinary cookies and queries, and broken keys, pass.
        let mut broken = key.to_owned();
        broken.truncate(key.len() - 1);
        let h = with_bearer(&["session=abc; theme=dark", &format!("x={broken}")]);
        let q = format!("/v1/items?a=1&b=%41%zz&c={broken}");
        assert_eq!(
            extract(&h, &uri(&q), &s, ALL_SCHEMES)
                .unwrap()
                .unwrap()
                .secret(),
            key
        );
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.9, 10.0.0.2"),
        );
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(
            client_ip(Some(peer), &h, &trusted),
            Some("198.51.100.9".parse().unwrap())
        );
        let outsider: SocketAddr = "203.0.113.1:5000".parse().unwrap();
        assert_eq!(
            client_ip(Some(outsider), &h, &trusted),
            Some("203.0.113.1".parse().unwrap())
        );
    }
}
