//! The served OpenAPI document: complete (every path parameter declared,
//! every error a problem), true to the server (errors it answers are the
//! ones it documents) and as strict as the validation (values at a
//! schema's limits are accepted, values past them refused). The snapshot
//! test in `api.rs` keeps `docs/openapi.json` equal to the served document;
//! `scripts/schemathesis.sh` fuzzes a running server against it.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::kit::{default_config, Backend, Reply, Server};

const PROBLEM: &str = "#/components/schemas/ProblemDoc";

async fn served(s: &Server) -> Value {
    let r = s.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    r.body
}

/// `(path template, method, operation)` for every operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((path.clone(), method.clone(), op.clone()));
        }
    }
    assert!(out.len() >= 21, "only {} operations", out.len());
    out
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

fn documented(op: &Value) -> BTreeSet<u16> {
    op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn every_path_parameter_is_declared_by_every_operation() {
    let s = Server::start().await;
    let doc = served(&s).await;
    let mut ids = BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        let declared: Vec<&Value> = op["parameters"]
            .as_array()
            .map(|p| p.iter().filter(|p| p["in"] == "path").collect())
            .unwrap_or_default();
        let wanted = path_params(&path);
        for name in &wanted {
            assert!(
                declared
                    .iter()
                    .any(|p| p["name"] == *name && p["required"] == true),
                "{method} {path} does not declare its path parameter {name}"
            );
        }
        assert_eq!(
            declared.len(),
            wanted.len(),
            "{method} {path} declares path parameters its path does not have"
        );
        let id = op["operationId"].as_str().unwrap().to_owned();
        assert!(ids.insert(id.clone()), "operationId {id} is used twice");
    }
}

#[tokio::test]
async fn every_operation_documents_its_errors_as_problems() {
    let s = Server::start().await;
    let doc = served(&s).await;
    for (path, method, op) in operations(&doc) {
        let statuses = documented(&op);
        let errors: Vec<u16> = statuses.iter().copied().filter(|s| *s >= 400).collect();
        assert!(
            errors.iter().any(|s| (400..500).contains(s)),
            "{method} {path} documents no 4xx"
        );
        for status in errors {
            let r = &op["responses"][status.to_string()];
            assert_eq!(
                r["content"],
                json!({ "application/problem+json": { "schema": { "$ref": PROBLEM } } }),
                "{method} {path} {status} is not a problem"
            );
            assert!(
                r["description"].as_str().is_some_and(|d| d.contains('`')),
                "{method} {path} {status} names no code"
            );
        }
        // The front door's errors, on every operation.
        for status in [400, 408] {
            assert!(statuses.contains(&status), "{method} {path} lacks {status}");
        }
        let authenticated = op["security"].as_array().is_some_and(|s| !s.is_empty());
        if authenticated {
            for status in [400, 401, 403, 503] {
                assert!(statuses.contains(&status), "{method} {path} lacks {status}");
            }
        }
        if !path_params(&path).is_empty() {
            assert!(statuses.contains(&404), "{method} {path} lacks 404");
        }
        if let Some(body) = op.get("requestBody") {
            for status in [400, 413, 422] {
                assert!(statuses.contains(&status), "{method} {path} lacks {status}");
            }
            if body["required"] == true {
                assert!(statuses.contains(&415), "{method} {path} lacks 415");
            }
        }
    }
}

/// A request for `path` with its parameters filled in with `id`.
fn concrete(path: &str, id: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { id } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[track_caller]
fn assert_documented(op: &Value, method: &str, path: &str, r: &Reply, why: &str) {
    let statuses = documented(op);
    assert!(
        statuses.contains(&r.status.as_u16()),
        "{method} {path} ({why}) answered {} (documented: {statuses:?}): {}",
        r.status,
        r.body
    );
    if r.status.as_u16() >= 400 {
        assert_eq!(
            r.content_type(),
            "application/problem+json",
            "{method} {path} ({why}): {}",
            r.body
        );
        assert_eq!(
            r.body["status"],
            r.status.as_u16(),
            "{method} {path} ({why})"
        );
        assert!(r.body["code"].is_string(), "{method} {path} ({why})");
    }
}

/// Errors provoked on every operation over real HTTP are documented for it,
/// as problems.
#[tokio::test]
async fn errors_the_server_answers_are_documented() {
    let s = Server::start().await;
    let doc = served(&s).await;
    let tenant = s.tenant("Probe").await;
    let (_, unscoped) = s.key(&tenant, "unscoped", json!({ "scopes": [] })).await;
    let http = reqwest::Client::new();
    for (path, method, op) in operations(&doc) {
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let authenticated = op["security"].as_array().is_some_and(|s| !s.is_empty());
        let url = s.url(&concrete(&path, "nope"));
        let json_body = op
            .pointer("/requestBody/content/application~1json")
            .is_some();
        let body_required = op.pointer("/requestBody/required") == Some(&json!(true));
        let send = |key: Option<&str>, content_type: Option<&str>, body: Option<Vec<u8>>| {
            let mut req = http.request(m.clone(), &url);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            if let Some(t) = content_type {
                req = req.header("content-type", t);
            }
            if let Some(b) = body {
                req = req.body(b);
            }
            async move { Reply::from(req.send().await.unwrap()).await }
        };
        let mut probes: Vec<(&str, Reply)> = Vec::new();
        if authenticated {
            probes.push(("no key", send(None, None, None).await));
            let r = http
                .request(m.clone(), format!("{url}?api_key={}", s.root))
                .send()
                .await
                .unwrap();
            probes.push(("key in the query", Reply::from(r).await));
            if path != "/v1/me" {
                probes.push(("no scope", send(Some(&unscoped), None, None).await));
            }
        }
        if !path_params(&path).is_empty() {
            // Not UTF-8 once decoded: no id is such a string (this was a
            // text/plain 400 from axum's Path extractor).
            let bad = s.url(&concrete(&path, "%FF"));
            let mut req = http.request(m.clone(), bad).bearer_auth(&s.root);
            if json_body {
                req = req.json(&json!({}));
            }
            let r = Reply::from(req.send().await.unwrap()).await;
            r.assert_problem(404, "not_found");
            probes.push(("id not UTF-8", r));
        }
        if json_body {
            let root = Some(s.root.as_str());
            let json = Some("application/json");
            probes.push(("not JSON", send(root, json, Some(b"{".to_vec())).await));
            probes.push((
                "unknown field",
                send(root, json, Some(br#"{"surely_unknown": 1}"#.to_vec())).await,
            ));
            probes.push((
                "too large",
                send(root, json, Some(vec![b' '; 70 * 1024])).await,
            ));
            if body_required {
                let r = send(root, Some("text/plain"), Some(b"{}".to_vec())).await;
                r.assert_problem(415, "unsupported_media_type");
                probes.push(("not application/json", r));
            }
        }
        for (why, r) in probes {
            assert_documented(&op, &method, &path, &r, why);
        }
    }
}

/// The schema of `name` with `$ref`s followed.
fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]
}

/// A request whose body is `base` plus one property: what each limit of the
/// schema `schema_name` says must be accepted is (2xx), and what it says
/// must be refused is (4xx). The `make` closure sends one body and returns
/// its reply; it is called afresh for every body (fresh names and keys).
struct Limits<'a> {
    doc: &'a Value,
    schema_name: &'static str,
    /// Properties whose limits are checked elsewhere or need other context.
    skip: &'a [&'a str],
}

impl Limits<'_> {
    /// `(property, value, must be accepted)` for each limit of the schema.
    fn cases(&self) -> Vec<(String, Value, bool)> {
        let mut out = Vec::new();
        let props = schema(self.doc, self.schema_name)["properties"]
            .as_object()
            .unwrap();
        for (prop, p) in props {
            if self.skip.contains(&prop.as_str()) {
                continue;
            }
            if let Some(max) = p["maxLength"].as_u64() {
                let max = usize::try_from(max).unwrap();
                out.push((prop.clone(), json!(unique_text(max)), true));
                out.push((prop.clone(), json!(unique_text(max + 1)), false));
            }
            if let Some(min) = p["minLength"].as_u64() {
                if min > 0 {
                    out.push((prop.clone(), json!(""), false));
                }
            }
            if p.get("pattern").is_some() && p["pattern"].as_str().unwrap().contains("u0000") {
                out.push((prop.clone(), json!("tab\there"), false));
            }
            if let Some(max) = p["maximum"].as_u64() {
                out.push((prop.clone(), json!(max), true));
                // Past u64::MAX is past what JSON numbers here can say.
                if let Some(past) = max.checked_add(1) {
                    out.push((prop.clone(), json!(past), false));
                }
            }
            if let Some(min) = p["minimum"].as_i64() {
                out.push((prop.clone(), json!(min), true));
                out.push((prop.clone(), json!(min - 1), false));
            }
            if let Some(values) = p["enum"].as_array() {
                for v in values {
                    out.push((prop.clone(), v.clone(), true));
                }
                out.push((prop.clone(), json!("surely-not-a-value"), false));
            }
            if let (Some(max), Some(items)) = (p["maxItems"].as_u64(), p.get("items")) {
                let max = usize::try_from(max).unwrap();
                let sample = item_sample(items);
                out.push((prop.clone(), json!(vec![sample.clone(); max]), true));
                out.push((prop.clone(), json!(vec![sample; max + 1]), false));
            }
            if let Some(values) = p["items"]["enum"].as_array() {
                for v in values {
                    out.push((prop.clone(), json!([v]), true));
                }
                out.push((prop.clone(), json!(["surely-not-a-scope"]), false));
            }
        }
        assert!(!out.is_empty(), "{} has no limits", self.schema_name);
        out
    }
}

/// A valid item of an array schema (an enum's first value, an address).
fn item_sample(items: &Value) -> Value {
    if let Some(v) = items["enum"].as_array().and_then(|v| v.first()) {
        return v.clone();
    }
    if items.get("anyOf").is_some() {
        return json!("10.0.0.0/8");
    }
    json!("sub-1")
}

/// Text of exactly `len` characters, different every call (key names must
/// be unique in a tenant).
fn unique_text(len: usize) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed).to_string();
    let mut s: String = "é".repeat(len.saturating_sub(n.len()));
    s.push_str(&n);
    s.chars()
        .rev()
        .take(len)
        .collect::<String>()
        .chars()
        .rev()
        .collect()
}

async fn check_limits<F, Fut>(limits: Limits<'_>, base: Value, send: F)
where
    F: Fn(Value) -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let mut failures = BTreeMap::new();
    for (prop, value, accept) in limits.cases() {
        let mut body = base.clone();
        body[prop.as_str()] = value.clone();
        let r = send(body).await;
        let ok = if accept {
            r.status.is_success()
        } else {
            r.status == StatusCode::UNPROCESSABLE_ENTITY || r.status == StatusCode::BAD_REQUEST
        };
        if !ok {
            let shown = value.to_string().chars().take(80).collect::<String>();
            failures.insert(
                format!("{}.{prop} = {shown}", limits.schema_name),
                format!(
                    "{} (schema says {}): {}",
                    r.status,
                    if accept { "valid" } else { "invalid" },
                    r.body
                ),
            );
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Values at each limit a request schema states are accepted, values past
/// it refused: the schema is neither looser nor stricter than the checks,
/// at its edges. With a catalog and tiers, so the deployment's enums are
/// checked too (every offered scope and tier can be granted).
#[tokio::test]
async fn request_schemas_are_as_strict_as_the_validation() {
    let mut config = default_config();
    config.keys.scopes = vec!["vox:read".into(), "vox:calls:create".into()];
    config.limits.tiers = crate::kit::config_from_toml(
        "[limits.tiers.free]\nlimit = 10\nwindow_seconds = 60\n[limits.tiers.pro]\nlimit = 100\nwindow_seconds = 60\n",
    )
    .limits
    .tiers;
    let s = Server::start_with(Backend::Sqlite, config).await;
    let doc = served(&s).await;
    let tenant = s.tenant("Limits").await;

    let create_tenant = Limits {
        doc: &doc,
        schema_name: "CreateTenant",
        skip: &["id"],
    };
    check_limits(create_tenant, json!({ "name": "T" }), |body| {
        s.post("/v1/tenants", &s.root, body)
    })
    .await;
    let update_tenant = Limits {
        doc: &doc,
        schema_name: "UpdateTenant",
        skip: &[],
    };
    let path = format!("/v1/tenants/{tenant}");
    check_limits(update_tenant, json!({}), |body| {
        s.patch(&path, &s.root, body)
    })
    .await;

    let create_key = Limits {
        doc: &doc,
        schema_name: "CreateKey",
        skip: &[],
    };
    check_limits(
        create_key,
        json!({ "tenant_id": tenant, "environment": "live" }),
        |mut body| {
            if body.get("name").is_none() {
                body["name"] = json!(unique_text(8));
            }
            s.post("/v1/keys", &s.root, body)
        },
    )
    .await;
    let (key, _) = s.key(&tenant, "to-update", json!({})).await;
    let update_key = Limits {
        doc: &doc,
        schema_name: "UpdateKey",
        skip: &[],
    };
    let path = format!("/v1/keys/{key}");
    check_limits(update_key, json!({}), |body| s.patch(&path, &s.root, body)).await;

    let rotate = Limits {
        doc: &doc,
        schema_name: "RotateKey",
        skip: &[],
    };
    check_limits(rotate, json!({}), |body| async {
        let (key, _) = s.key(&tenant, &unique_text(8), json!({})).await;
        s.post(&format!("/v1/keys/{key}/rotate"), &s.root, body)
            .await
    })
    .await;
    let revoke = Limits {
        doc: &doc,
        schema_name: "RevokeKey",
        skip: &[],
    };
    check_limits(revoke, json!({}), |body| async {
        let (key, _) = s.key(&tenant, &unique_text(8), json!({})).await;
        s.post(&format!("/v1/keys/{key}/revoke"), &s.root, body)
            .await
    })
    .await;
    let verify = Limits {
        doc: &doc,
        schema_name: "VerifyKey",
        skip: &[],
    };
    check_limits(verify, json!({ "key": "kw_live_nope" }), |body| {
        s.post("/v1/keys/verify", &s.root, body)
    })
    .await;
    let rate_limit = Limits {
        doc: &doc,
        schema_name: "RateLimitSpec",
        // Bounded by the window (at most 10^6 per second), below.
        skip: &["limit"],
    };
    let with_rate = |rate: Value| {
        s.post(
            "/v1/keys",
            &s.root,
            json!({ "tenant_id": tenant, "environment": "live", "name": unique_text(8), "rate_limit": rate }),
        )
    };
    check_limits(
        rate_limit,
        json!({ "limit": 10, "window_seconds": 60 }),
        with_rate,
    )
    .await;
    for (limit, accept) in [(0, false), (1, true), (1_000_000, true), (1_000_001, false)] {
        let r = with_rate(json!({ "limit": limit, "window_seconds": 1 })).await;
        assert_eq!(r.status.is_success(), accept, "limit {limit}: {}", r.body);
    }
    let credits = Limits {
        doc: &doc,
        schema_name: "ChangeCredits",
        skip: &["kind"],
    };
    let path = format!("/v1/tenants/{tenant}/credits");
    check_limits(credits, json!({ "kind": "grant", "amount": 5 }), |body| {
        s.post(&path, &s.root, body)
    })
    .await;
    for (body, accept) in [
        (json!({ "kind": "grant", "amount": 1 }), true),
        (json!({ "kind": "grant", "amount": 0 }), false),
        (json!({ "kind": "adjust", "amount": -1 }), true),
        (json!({ "kind": "adjust", "amount": 0 }), false),
        (json!({ "kind": "refund", "amount": 1 }), false),
    ] {
        let r = s.post(&path, &s.root, body.clone()).await;
        assert_eq!(r.status.is_success(), accept, "{body}: {}", r.body);
    }
    let refill = Limits {
        doc: &doc,
        schema_name: "RefillSpec",
        skip: &[],
    };
    let path = format!("/v1/tenants/{tenant}/credits/refill");
    check_limits(
        refill,
        json!({ "amount": 5, "every": "daily", "mode": "set" }),
        |body| s.call(Method::PUT, &path, Some(&s.root), Some(body)),
    )
    .await;
}
