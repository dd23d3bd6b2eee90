//! `respond` routes: a JSON template filled from the principal behind the
//! verified key ([`principal`], the same view as the API's `/v1/me`).

use keyward_core::clock::Timestamp;
use keyward_verify::verifier::CachedKey;
use keyward_wire::Principal;
use serde_json::Value;

/// The principal behind a verified key: what `respond` templates and the
/// API's verify and `/v1/me` answers show of it.
pub fn principal(k: &CachedKey) -> Principal {
    let r = &k.record;
    // When the key stops working: its expiry or its rotation grace,
    // whichever is first.
    let expires_at = match (r.expires_at, r.grace_until) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Principal {
        key_id: r.id.clone(),
        key_name: r.name.clone(),
        start: r.start.clone(),
        kind: r.class.as_str().to_owned(),
        tenant_id: r.tenant_id.clone(),
        tenant_name: k.tenant_name.clone(),
        environment: r.environment.clone(),
        scopes: r.scopes.clone(),
        owner: r.owner.clone(),
        tier: r.tier.clone().or_else(|| k.tenant_tier.clone()),
        expires_at: expires_at.map(|ms| Timestamp(ms).to_rfc3339()),
        metadata: r.metadata.clone(),
    }
}

/// Fills `{placeholders}` in every string of `template` from `p`: `{key_id}`,
/// `{key_name}`, `{start}`, `{tenant_id}`, `{tenant_name}`, `{environment}`,
/// `{owner}`, `{tier}`, `{metadata.FIELD}`; a string that is exactly
/// `{scopes}` becomes the scope array. Unknown placeholders stay as written.
pub(crate) fn fill(template: &Value, p: &Principal) -> Value {
    match template {
        Value::String(s) if s == "{scopes}" => Value::from(p.scopes.clone()),
        Value::String(s) => Value::String(fill_str(s, p)),
        Value::Array(a) => Value::Array(a.iter().map(|v| fill(v, p)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), fill(v, p))).collect()),
        other => other.clone(),
    }
}

fn placeholder(name: &str, p: &Principal) -> Option<String> {
    let s = |v: &str| Some(v.to_owned());
    match name {
        "key_id" => s(&p.key_id),
        "key_name" => s(&p.key_name),
        "start" => s(&p.start),
        "tenant_id" => Some(p.tenant_id.clone().unwrap_or_default()),
        "tenant_name" => Some(p.tenant_name.clone().unwrap_or_default()),
        "environment" => s(&p.environment),
        "owner" => Some(p.owner.clone().unwrap_or_default()),
        "tier" => Some(p.tier.clone().unwrap_or_default()),
        "scopes" => Some(p.scopes.join(" ")),
        other => other
            .strip_prefix("metadata.")
            .map(|field| match p.metadata.get(field) {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            }),
    }
}

fn fill_str(s: &str, p: &Principal) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after
            .find('}')
            .and_then(|close| placeholder(&after[..close], p).map(|v| (close, v)))
        {
            Some((close, value)) => {
                out.push_str(&value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
