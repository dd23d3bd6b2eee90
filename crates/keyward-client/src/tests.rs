//! Unit tests of what needs no server: error bodies, the builder's checks,
//! redaction, and walking pages. (Retry classification is tested in
//! `retry.rs`; the calls themselves against a real server in the keyward
//! crate's `tests/it/typed_client.rs`.)

use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;
use keyward_wire::{ErrorBody, FieldError, ListKeys, Page};

use super::*;
use crate::error::from_status;

#[test]
fn a_problem_body_becomes_a_typed_problem_with_its_field_errors() {
    let body = br#"{
        "type": "https://keyward.dev/errors/validation_failed",
        "title": "Validation failed",
        "status": 422,
        "detail": "The request has invalid fields.",
        "code": "validation_failed",
        "errors": [
            {"field": "environment", "code": "required", "message": "give one of live, test"},
            {"field": "scopes[1]", "code": "unknown_scope", "message": "no such scope"}
        ]
    }"#;
    let e = from_status(StatusCode::UNPROCESSABLE_ENTITY, body);
    let ClientError::Problem { status, problem } = &e else {
        panic!("not a problem: {e:?}");
    };
    assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem.code, "validation_failed");
    assert_eq!(problem.title.as_deref(), Some("Validation failed"));
    assert_eq!(problem.detail, "The request has invalid fields.");
    assert_eq!(
        problem.kind.as_deref(),
        Some("https://keyward.dev/errors/validation_failed")
    );
    assert_eq!(
        problem.errors,
        vec![
            FieldError {
                field: "environment".into(),
                code: "required".into(),
                message: "give one of live, test".into(),
            },
            FieldError {
                field: "scopes[1]".into(),
                code: "unknown_scope".into(),
                message: "no such scope".into(),
            },
        ]
    );
    assert!(matches!(problem.body, ErrorBody::Problem(_)));
    assert_eq!(e.status(), Some(StatusCode::UNPROCESSABLE_ENTITY));
    assert_eq!(
        e.to_string(),
        "keyward answered 422 Unprocessable Entity: validation_failed"
    );
}

#[test]
fn an_envelope_body_becomes_the_same_typed_problem() {
    let body = br#"{"error": {"code": "RATE_LIMITED", "message": "Slow down", "retry_after": 7,
        "errors": [{"field": "x", "code": "y", "message": "z"}]}}"#;
    let e = from_status(StatusCode::TOO_MANY_REQUESTS, body);
    let problem = e.problem().unwrap();
    assert_eq!(problem.code, "RATE_LIMITED");
    assert_eq!(problem.detail, "Slow down");
    assert_eq!(problem.title, None);
    assert_eq!(problem.kind, None);
    assert_eq!(problem.retry_after, Some(7));
    assert_eq!(problem.errors.len(), 1);
    assert!(matches!(problem.body, ErrorBody::Envelope(_)));
}

#[test]
fn extra_members_stay_readable() {
    let body = br#"{"type": "t", "title": "Forbidden", "status": 403, "detail": "d",
        "code": "insufficient_scope", "missing_scopes": ["vox:read"]}"#;
    let problem = ProblemDetails::parse(body).unwrap();
    assert_eq!(
        problem.extra("missing_scopes"),
        Some(&serde_json::json!(["vox:read"]))
    );
    assert!(problem.errors.is_empty());
}

#[test]
fn an_error_body_that_is_not_keywards_keeps_its_status_and_text() {
    for body in [
        &b"<html>Bad gateway</html>"[..],
        b"{\"message\": \"no\"}",
        b"",
    ] {
        let e = from_status(StatusCode::BAD_GATEWAY, body);
        let ClientError::Status { status, body: text } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(*status, StatusCode::BAD_GATEWAY);
        assert_eq!(text.as_bytes(), body);
        assert!(e.problem().is_none());
    }
}

#[test]
fn the_base_url_must_be_http_with_a_host_and_nothing_secret() {
    for ok in [
        "http://127.0.0.1:8080",
        "https://keyward.example.com/",
        "https://example.com/keyward/",
    ] {
        let c = Client::builder(ok).build().unwrap();
        assert!(!c.base_url().ends_with('/'), "{}", c.base_url());
    }
    assert_eq!(
        Client::builder("https://example.com/keyward/")
            .build()
            .unwrap()
            .url("/v1/me")
            .unwrap()
            .as_str(),
        "https://example.com/keyward/v1/me"
    );
    for bad in [
        "",
        "127.0.0.1:8080",
        "ftp://example.com",
        "http://example.com/?a=b",
        "http://example.com/#x",
        "https://user:pass@example.com",
        "mailto:x@example.com",
    ] {
        let e = Client::builder(bad).build().unwrap_err();
        assert!(matches!(e, ClientError::InvalidUrl { .. }), "{bad}: {e:?}");
    }
}

#[test]
fn a_url_with_credentials_is_refused_without_quoting_them() {
    let e = Client::builder("https://user:s3cret@example.com")
        .build()
        .unwrap_err();
    assert!(matches!(e, ClientError::InvalidUrl { .. }), "{e:?}");
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
}

#[test]
fn the_key_never_prints() {
    let secret = "kw_live_0123456789abcdefghijklmnopqrstuv";
    let key = ApiKey::from(secret);
    assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    let builder = Client::builder("http://127.0.0.1:1").key(secret);
    assert!(!format!("{builder:?}").contains(secret));
    let client = builder.build().unwrap();
    let shown = format!("{client:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    let auth = client.inner.auth.as_ref().unwrap();
    assert!(auth.is_sensitive());
    assert_eq!(auth.as_bytes(), format!("Bearer {secret}").as_bytes());
}

#[test]
fn a_key_a_header_cannot_carry_is_refused_without_quoting_it() {
    let e = Client::builder("http://127.0.0.1:1")
        .key("kw_live_abc\ndef")
        .build()
        .unwrap_err();
    assert!(matches!(e, ClientError::InvalidKey));
    assert!(!e.to_string().contains("abc"));
}

#[test]
fn retries_are_capped() {
    let c = Client::builder("http://127.0.0.1:1")
        .retries(1000)
        .build()
        .unwrap();
    assert_eq!(c.inner.retries, MAX_RETRIES);
}

#[test]
fn idempotency_keys_are_the_callers_or_fresh_per_call() {
    let c = Client::builder("http://127.0.0.1:1").build().unwrap();
    assert_eq!(c.idempotency_key(Some("order-1")).unwrap(), "order-1");
    let a = c.idempotency_key(None).unwrap();
    let b = c.idempotency_key(None).unwrap();
    assert_ne!(a, b);
    assert!(a.to_str().unwrap().starts_with("idem_"));
    assert!(matches!(
        c.idempotency_key(Some("order\n1")),
        Err(ClientError::Encode(_))
    ));
}

#[test]
fn list_queries_leave_absent_fields_out() {
    let c = Client::builder("http://127.0.0.1:1").build().unwrap();
    let url = c
        .url_with_query(
            "/v1/keys",
            &ListKeys {
                tenant_id: Some("a b&c".into()),
                limit: Some(5),
                ..ListKeys::default()
            },
        )
        .unwrap();
    assert_eq!(url.query(), Some("tenant_id=a+b%26c&limit=5"));
    let url = c.url_with_query("/v1/keys", &ListKeys::default()).unwrap();
    assert_eq!(url.query(), None);
}

/// Pages 0..n of a list of `n` pages holding one item each, cursors `c1`..
fn page(i: usize, n: usize) -> Page<usize> {
    let last = i + 1 == n;
    Page {
        data: vec![i],
        next_cursor: (!last).then(|| format!("c{}", i + 1)),
        has_more: !last,
    }
}

fn index(q: &ListKeys) -> usize {
    q.cursor
        .as_deref()
        .map_or(0, |c| c.trim_start_matches('c').parse().unwrap())
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn walking_joins_every_page_in_order() {
    let asked = AtomicUsize::new(0);
    let all = block_on(paging::walk(&ListKeys::default(), 100, |q| {
        asked.fetch_add(1, Ordering::Relaxed);
        async move { Ok(page(index(&q), 4)) }
    }))
    .unwrap();
    assert_eq!(all.data, vec![0, 1, 2, 3]);
    assert_eq!((all.next_cursor, all.has_more), (None, false));
    assert_eq!(asked.load(Ordering::Relaxed), 4);
}

#[test]
fn walking_stops_at_the_bound_and_says_where_to_go_on() {
    let all = block_on(paging::walk(&ListKeys::default(), 2, |q| async move {
        Ok(page(index(&q), 10))
    }))
    .unwrap();
    assert_eq!(all.data, vec![0, 1]);
    assert_eq!(all.next_cursor.as_deref(), Some("c2"));
    assert!(all.has_more);
    // From that cursor on; a bound of 0 still fetches one page.
    let q = ListKeys {
        cursor: all.next_cursor,
        ..ListKeys::default()
    };
    let next = block_on(paging::walk(
        &q,
        0,
        |q| async move { Ok(page(index(&q), 10)) },
    ))
    .unwrap();
    assert_eq!(next.data, vec![2]);
}

#[test]
fn walking_refuses_a_cursor_that_repeats() {
    let e = block_on(paging::walk(&ListKeys::default(), 1000, |_| async {
        Ok(Page {
            data: vec![0],
            next_cursor: Some("same".to_owned()),
            has_more: true,
        })
    }))
    .unwrap_err();
    assert!(matches!(e, ClientError::RepeatedCursor), "{e:?}");
}

#[test]
fn walking_stops_at_the_first_error() {
    let e = block_on(paging::walk(&ListKeys::default(), 10, |q| async move {
        match index(&q) {
            0 => Ok(page(0, 5)),
            _ => Err(from_status(StatusCode::SERVICE_UNAVAILABLE, b"")),
        }
    }))
    .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
}
