//! The configuration reference: every setting with its default and its
//! meaning, in one table ([`SETTINGS`]). `keyward config defaults` prints it
//! as a commented TOML file ([`defaults_toml`]) and `docs/configuration.md`
//! is generated from it ([`markdown`]); a test fails when a setting of
//! [`Config`] has no entry here, when an entry names no setting, and when
//! the document differs from what this module generates.
//!
//! The defaults are never written here: they are read by serializing
//! `Config::default()` (and an entry of `[[routes]]` and of
//! `[limits.tiers.NAME]` as deserialized from their required fields), so a
//! changed default shows in both outputs at once.

use serde_json::Value;

use super::{Config, RouteConfig, TierConfig};

/// One setting: its dotted name (`cache.ttl_seconds`; `routes[].path` for a
/// field of each `[[routes]]` entry, `limits.tiers.<name>.limit` for a
/// field of each tier) and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    pub meaning: &'static str,
}

const fn s(name: &'static str, meaning: &'static str) -> Setting {
    Setting { name, meaning }
}

/// The meaning of every setting, in the order the reference lists them
/// within a section.
pub const SETTINGS: &[Setting] = &[
    s("listen", "Address the server listens on (`IP:PORT`; port 0 lets the system choose)."),
    s("data_dir", "Directory of the embedded SQLite store (`keyward.db`), created when missing; unused when `store_url` is set."),
    s("store_url", "`postgres://USER:PASSWORD@HOST/DB` for several nodes sharing one store, or `sqlite://PATH`. Unset: `sqlite://<data_dir>/keyward.db`."),
    s("redis_url", "`redis://HOST:PORT` to share rate limits between nodes. Unset: each node limits in memory, which is exact for one node."),
    s("redis.prefix", "Prefix of every Redis key keyward writes, so several deployments can share one Redis."),
    s("redis.timeout_ms", "Longest wait for one Redis command before the node falls back as `redis.on_failure` says; raise it for a remote or busy Redis."),
    s("redis.on_failure", "While Redis fails or is slow: `fail_open_local` decides on this node with its share of each limit (limit divided by the live nodes last seen); `fail_closed` refuses rate-limited requests."),
    s("log.format", "`text` for people, `json` for log collectors. Logs go to stderr."),
    s("log.level", "A tracing filter such as `info` or `keyward_server=debug,info`; the `KEYWARD_LOG` variable overrides it."),
    s("keys.environments", "Environment name → secret prefix of its keys, e.g. `{ live = \"acme_live_\", test = \"acme_test_\" }`. Each key belongs to one environment; prefixes must be distinct."),
    s("keys.root_prefix", "Secret prefix of operator root keys (distinct from every environment's prefix)."),
    s("keys.scopes", "The deployment's scope catalog, e.g. `[\"calls:read\", \"calls:write\"]`; keys may hold only these (keyward's own `keyward:*` management scopes are always added)."),
    s("keys.header", "Header of the `header` scheme."),
    s("keys.schemes", "Ways a client may present a key: `bearer` (`Authorization: Bearer <secret>`), `header` (`<keys.header>: <secret>`), `basic` (`Authorization: Basic base64(key_id:secret)`)."),
    s("keys.metadata_max_bytes", "Largest key metadata accepted, as serialized JSON bytes."),
    s("cache.ttl_seconds", "How long a known key is served from memory before it is re-read from the store. Changes made on other nodes arrive through the change log first (`[changes]`); this is a bound of its own."),
    s("cache.negative_ttl_seconds", "How long an unknown key hash is remembered as unknown."),
    s("cache.capacity", "Most known keys kept in memory; size it above the keys in use on a node."),
    s("cache.negative_capacity", "Most unknown hashes remembered, apart from `cache.capacity`: unknown keys never evict known ones."),
    s("cache.max_pending_loads", "Most distinct uncached keys that may wait for a store read at once; beyond it such a request is answered 503 `overloaded` with `Retry-After: 1`. Cached keys are never refused."),
    s("usage.enabled", "Count each request decided for a key (gateway and verify API) per key, tenant header, route template, outcome and minute, and each key's client addresses; read them with `/v1/keys/{id}/usage`, `/v1/tenants/{id}/usage` and `/v1/keys/{id}/ips`."),
    s("usage.flush_interval_ms", "How often keys' `last_used_at` / `last_used_ip` are written to the store."),
    s("usage.counts_interval_ms", "How often usage counts are added to the store (one transaction per 1,000 series). Counts appear in the usage API and the console within it; a shorter interval writes each busy key's minute more often."),
    s("usage.last_used_resolution_seconds", "A key's last use is rewritten at most this often (unless its client address changed), so busy keys do not cost a write per flush."),
    s("usage.max_series", "Most distinct usage series (key, tenant header, route, outcome, minute) held in memory between two flushes; requests past it are not counted and show in `keyward_usage_overflow_total`."),
    s("usage.max_ips", "Most distinct (key, client address) pairs held in memory between two flushes."),
    s("usage.max_ips_per_key", "Client addresses kept per key in the store: the most recently seen (the longest unseen are dropped)."),
    s("usage.retain_minutes_days", "Days per-minute usage is kept."),
    s("usage.retain_hours_days", "Days per-hour usage is kept."),
    s("usage.retain_days_days", "Days per-day usage, and client addresses not seen since, are kept."),
    s("usage.prune_interval_seconds", "How often usage past its retention is deleted."),
    s("metrics.enabled", "Serve Prometheus metrics (request counts by route template, outcome and status class, latency histograms, cache, limiter and credit decisions, usage recording). Labels never hold a key, tenant or address."),
    s("metrics.path", "Where the metrics are served."),
    s("metrics.token", "A bearer token scrapes must send (`Authorization: Bearer <token>`), at least 16 characters; `KEYWARD_METRICS__TOKEN` keeps it out of the file. Unset: no token."),
    s("metrics.listen", "Serve the metrics on this address of their own (e.g. `127.0.0.1:9100`) instead of the main listener."),
    s("http.max_body_bytes", "Largest request body accepted by keyward's own API."),
    s("http.trusted_proxies", "Peers (addresses or CIDRs) whose `X-Forwarded-For` is believed for the client address."),
    s("http.workers", "Threads serving connections, each with its own event loop and accept loop; 0 means one per CPU."),
    s("http.header_read_timeout_ms", "A request head must be complete this long after its first byte (on a new connection, after it opened); past it a partial head is answered 408 and the connection closes. 1 to 86400000."),
    s("http.body_read_timeout_ms", "Longest wait for the next byte of a request body; past it the request is answered 408 and the connection closes. 1 to 86400000."),
    s("http.keep_alive_timeout_ms", "An idle connection between requests is closed after this. 1 to 86400000."),
    s("http.max_connections", "Most client connections open at once on this node; more are answered 503 `overloaded` and closed. 0 sizes it from the open-file limit (a larger value is lowered to that)."),
    s("errors.style", "`problem` (RFC 9457 `application/problem+json` with a `code` member) or `envelope` (`{\"error\": {\"code\": …, \"message\": …}}`)."),
    s("errors.type_base", "A problem's `type` is this followed by its code."),
    s("errors.code_case", "`snake` (`invalid_api_key`) or `upper` (`INVALID_API_KEY`)."),
    s("errors.codes", "Per-code replacements, e.g. `{ invalid_api_key = \"unauthorized\" }`."),
    s("errors.messages", "Per-code replacement messages, e.g. `{ insufficient_scope = \"Upgrade your plan.\" }`."),
    s("gateway.upstream", "Base URL of the API behind keyward, e.g. `http://127.0.0.1:9000`; requests matching a `[[routes]]` entry are forwarded there. Unset: routes can only `respond`."),
    s("gateway.upstream_protocol", "`http1` (a pool of keep-alive connections) or `h2c` (HTTP/2 over cleartext with prior knowledge, requests multiplexed on one connection)."),
    s("gateway.connect_timeout_ms", "Longest wait for a connection to the upstream."),
    s("gateway.timeout_ms", "Longest wait for the upstream's response headers."),
    s("gateway.max_body_bytes", "Largest request body forwarded (declared or counted while streaming); larger ones are answered 413."),
    s("gateway.tenant_header", "A header naming the sub-tenant a request acts for (e.g. `X-Tenant-ID`): when present its value must be one of the key's `sub_tenants` (else 403 `tenant_not_allowed`); it is then forwarded. Unset: off."),
    s("gateway.fast_path", "Serve plain HTTP/1.1 gateway requests on keyward's own HTTP/1 path (pooled upstream connection per worker, headers rewritten in place); everything else takes the general HTTP stack either way."),
    s("gateway.max_idle_upstream", "Idle keep-alive upstream connections kept per worker thread for the fast path."),
    s("gateway.identity_headers.key_id", "Header carrying the verified key's id to the upstream (a client's own header of this name is removed)."),
    s("gateway.identity_headers.tenant_id", "Header carrying the key's tenant id to the upstream."),
    s("gateway.identity_headers.environment", "Header carrying the key's environment to the upstream."),
    s("gateway.identity_headers.scopes", "Header carrying the key's scopes (space-separated) to the upstream."),
    s("gateway.identity_headers.owner", "Header carrying the key's owner to the upstream."),
    s("limits.default_tier", "Tier of keys whose key and tenant name none. Unset: such keys are not rate limited."),
    s("limits.tiers", "Named rate-limit tiers, `[limits.tiers.NAME]` with the fields below."),
    s("limits.tiers.<name>.limit", "Tokens per window (a request costs its route's `cost`). Required."),
    s("limits.tiers.<name>.window_seconds", "Length of the window. Required."),
    s("limits.tiers.<name>.burst", "Most tokens spendable at once. Unset: `limit`."),
    s("limits.tiers.<name>.refill", "Credits refilled for tenants of this tier (unless a tenant has its own schedule): `{ amount = 100000, every = \"monthly\", mode = \"set\" }`; `every` is `daily` or `monthly`, `mode` is `set` (unused credits do not carry over) or `add` (a top-up). Unset: no refill."),
    s("credits.node_id", "This node's name in credit reservations; give each node a stable one so a node that crashed settles its own reservations when it comes back. Unset: `local` on SQLite, a random id per process on PostgreSQL."),
    s("credits.settle_interval_ms", "How often spent credits are written to the ledger."),
    s("credits.max_reservation", "Largest reservation a node takes at once: at most this much is counted as spent if the node crashes."),
    s("credits.idle_release_seconds", "Reservations unused this long go back to the balance."),
    s("credits.stale_seconds", "A reservation its node has not refreshed for this long is counted as spent by the other nodes (its node stopped); at least four settle intervals. 0 turns this off."),
    s("credits.reclaim_wait_ms", "With several nodes: how long a request the stored balance cannot cover waits for other nodes to hand back their reservations before it is refused (at most 10000)."),
    s("idempotency.ttl_seconds", "How long a completed response is replayed for a retry with the same `Idempotency-Key`."),
    s("idempotency.lock_seconds", "How long an unfinished request holds its idempotency key (if keyward stops mid-request, a retry after this runs). At least the gateway timeout."),
    s("idempotency.methods", "Methods where `Idempotency-Key` is honoured."),
    s("idempotency.max_body_bytes", "Largest request body of an idempotent request (it is buffered to fingerprint it); larger ones are answered 413."),
    s("idempotency.max_response_bytes", "Largest response body stored for replay; a larger one is passed on and replayed with its status and headers only."),
    s("idempotency.replay_headers", "Response headers stored and replayed with the body."),
    s("idempotency.purge_interval_seconds", "How often expired idempotency records are purged."),
    s("idempotency.max_records_per_key", "Most records one API key may hold; beyond it its oldest completed records are dropped, and with only requests in flight left a new one is refused with 429 `idempotency_quota_exceeded`."),
    s("routes", "Gateway routes, `[[routes]]` entries with the fields below: a request matching none of keyward's own paths is matched against them in order; one matching none is answered 404."),
    s("routes[].path", "Path pattern: literal segments, `{name}` for one segment, `{*name}` (last) for the rest. Required."),
    s("routes[].methods", "HTTP methods; empty matches every method."),
    s("routes[].scopes", "Scopes the key must hold (all of them), from `keys.scopes`."),
    s("routes[].environments", "Environments allowed on this route; empty allows all."),
    s("routes[].tenant_param", "A path parameter that must equal the key's tenant id (else 404)."),
    s("routes[].auth", "`false` forwards without a key (public routes)."),
    s("routes[].respond", "Answer from keyward instead of forwarding: a JSON template whose strings may contain `{key_id}`, `{key_name}`, `{start}`, `{tenant_id}`, `{tenant_name}`, `{environment}`, `{owner}`, `{tier}`; a string that is exactly `{scopes}` becomes the scope array."),
    s("routes[].respond_status", "Status of a `respond` answer."),
    s("routes[].cost", "Rate-limit tokens a request costs (0 allowed)."),
    s("routes[].credits", "Credits a request costs, spent from the tenant's balance after every other check passed (402 `insufficient_credits` when short)."),
    s("routes[].idempotency", "`optional` (honoured when sent), `required` (requests without `Idempotency-Key` are answered 400) or `off` (passed to the upstream untouched)."),
    s("routes[].allow_method_override", "Forward `X-HTTP-Method-Override` and its variants to the upstream. Off: an upstream honouring them would let a key allowed only `GET` make a `DELETE`."),
    s("console.enabled", "Serve the developer console at `/console`."),
    s("console.secure_cookies", "Mark the session cookie `Secure` (named `__Host-…`). Browsers accept secure cookies over plain HTTP on `localhost` / `127.0.0.1` only; turn off only behind a proxy that cannot speak HTTPS."),
    s("console.session_idle_seconds", "A console session ends after this long without a request."),
    s("console.session_lifetime_seconds", "A console session ends this long after sign-in, whatever the activity."),
    s("console.invite_ttl_seconds", "How long an invitation link works."),
    s("console.login_max_failures_per_account", "Failed sign-ins allowed per account within `console.login_window_seconds`; past them sign-in is refused until the window ends."),
    s("console.login_max_failures_per_ip", "Failed sign-ins allowed per client address within `console.login_window_seconds`."),
    s("console.login_window_seconds", "The window of the sign-in failure limits."),
    s("console.public_url", "Public base URL for invitation links, e.g. `https://keys.example.com`. Unset: the address the browser used."),
    s("changes.poll_interval_ms", "How often each node reads the store's change log (revocations, key and tenant changes from other nodes), whether or not notices arrive; on PostgreSQL a live feed brings changes within milliseconds, and this bounds propagation when a notice is lost."),
    s("changes.max_silence_seconds", "A node that could not read the change log for this long stops trusting its key cache and re-reads every key (answering 503 while the store does not answer): no key revoked longer ago is ever served. Longer than `changes.poll_interval_ms`."),
    s("changes.retain_hours", "How long changes are kept in the log; longer than `changes.max_silence_seconds`."),
    s("leaks.environments", "What a leak report does to a key, by the key's environment: `revoke` (at once, `revoked_api_key`), `disable` (`disabled_api_key`, can be enabled again) or `flag` (keeps working, marked leaked, a warning logged), e.g. `{ live = \"revoke\", test = \"flag\" }`."),
    s("leaks.other_environments", "The action for keys of environments not in `leaks.environments` (root keys are environment `root`)."),
    s("leaks.tenants", "Per-tenant overrides by environment, e.g. `[leaks.tenants.acme] live = \"flag\"`."),
    s("leaks.queue_capacity", "Accepted reports waiting for the policy worker; past it they wait in the store (recorded pending) for its next sweep."),
    s("leaks.sweep_interval_seconds", "How often the policy worker applies reports left pending in the store (a full queue, a store error, another node's crash); pending reports are also applied at start."),
    s("leaks.github.public_keys_file", "A file of GitHub's secret-scanning public keys in GitHub's own JSON shape (`{\"public_keys\": [{\"key_identifier\", \"key\", \"is_current\"}]}`), read at start and every `leaks.github.refresh_seconds`."),
    s("leaks.github.public_keys", "Public keys given inline: `[{ key_identifier = \"…\", key = \"-----BEGIN PUBLIC KEY-----…\" }]` (PEM, P-256)."),
    s("leaks.github.public_keys_url", "An `http://` URL serving GitHub's JSON shape (keyward has no TLS client: a local mirror of `https://api.github.com/meta/public_keys/secret_scanning`), fetched at start and every `leaks.github.refresh_seconds`; when a fetch fails, the last good set stays."),
    s("leaks.github.fetch_timeout_ms", "Longest wait for `leaks.github.public_keys_url` (1 to 60000)."),
    s("leaks.github.refresh_seconds", "How often the key file and URL are read again."),
    s("leaks.gitlab.token", "The token GitLab sends in `Authorization` to `/v1/leaks/gitlab/*` (its `secret_detection_token_revocation_token`), at least 16 characters; `KEYWARD_LEAKS__GITLAB__TOKEN` keeps it out of the file. Unset: GitLab's calls are refused."),
    s("webhooks.enabled", "Deliver events (key changes, alerts, the upstream's `POST /v1/events`) to webhook endpoints, signed per Standard Webhooks v1. Off: the webhook API answers `409 webhooks_disabled` and nothing is delivered."),
    s("webhooks.signing_key", "The master key every endpoint's `whsec_` signing secret is derived from (64 hex characters, or base64 of at least 32 bytes); keyward stores only a salt per endpoint, never a secret. Prefer `signing_key_file` or `KEYWARD_WEBHOOKS__SIGNING_KEY`; every node must have the same (a node with another refuses to start)."),
    s("webhooks.signing_key_file", "A file holding the master key. Unset on SQLite: `webhook-signing.key` beside the database (in `data_dir`), created with mode 0600 on first start; back it up with the database. Unset on PostgreSQL (and no `signing_key`): webhooks are off."),
    s("webhooks.allow_private_addresses", "Allow endpoint URLs that resolve to loopback, private, link-local, carrier-grade NAT or other non-public addresses. Off, such URLs are refused (`422 forbidden_address`) and the sender drops such addresses at connect time too (no DNS rebinding)."),
    s("webhooks.retry_schedule_ms", "Delays after each failed attempt (ms), each with ±20 % jitter; the first attempt is immediate. Default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts over about 27.6 h, then the delivery fails, the endpoint is marked failing and `webhook.endpoint_failing` is raised."),
    s("webhooks.connect_timeout_ms", "Longest wait to connect to an endpoint."),
    s("webhooks.timeout_ms", "Longest wait for a whole attempt (connect, send, the status and the response's first bytes); a slower endpoint's attempt fails. Redirects are never followed."),
    s("webhooks.max_response_bytes", "Response bytes kept in the delivery log; the rest of the body is not read."),
    s("webhooks.concurrency", "Deliveries one node claims and sends at once."),
    s("webhooks.poll_interval_ms", "How often an idle node looks for due deliveries (an event waits at most this long before its first attempt)."),
    s("webhooks.rotation_overlap_seconds", "After a secret rotation, how long the old secret still signs (both signatures are sent), unless the call names its own overlap (at most 7 days)."),
    s("webhooks.max_endpoints", "Live endpoints per tenant (and operator-wide)."),
    s("webhooks.retain_days", "Finished deliveries, their attempts and events without pending deliveries are deleted after this many days (hourly)."),
    s("alerts.enabled", "Run the alert checks: new client address, traffic spike, error rate, dormant and expiring keys, low credits. Each alert is stored once per condition and sent as an event (`alert.*`, `key.expiring`, `credits.low`)."),
    s("alerts.interval_ms", "How often each node runs the checks (raising is idempotent across nodes)."),
    s("alerts.spike_factor", "A key's requests in a minute at least this many times its baseline (its mean per minute over `baseline_minutes` before) raise `alert.traffic_spike`."),
    s("alerts.spike_min_requests", "…and at least this many requests in that minute."),
    s("alerts.baseline_minutes", "The window a key's baseline is the mean of (a key without requests in it has no baseline and raises no spike)."),
    s("alerts.error_rate", "The share of 5xx answers (the upstream's or keyward's) over `error_window_minutes` that raises `alert.error_rate`."),
    s("alerts.error_window_minutes", "The error-rate window, the current minute included."),
    s("alerts.error_min_requests", "Requests the window needs before its error rate counts."),
    s("alerts.new_ip", "Raise `alert.new_ip` when a key is used from an address never seen for it (a key's first addresses raise none)."),
    s("alerts.dormant_days", "Raise `alert.key_dormant` for enabled keys unused (or, never used, created) this many days ago; 0: off."),
    s("alerts.disable_dormant", "Also disable dormant keys (audited as `key.disabled` by `alerts`)."),
    s("alerts.expiring_days", "Send `key.expiring` this many days before a key expires; 0: off."),
    s("alerts.credits_low_threshold", "Raise `credits.low` when a tenant's balance falls under this, for tenants without a threshold of their own (`credits_low_threshold` on the tenant). Unset: only tenants with their own."),
    s("alerts.max_keys", "The busiest keys of the last minute read per run for spikes and error rates."),
];

/// The meaning of `name`, if it is a setting.
pub fn meaning(name: &str) -> Option<&'static str> {
    SETTINGS.iter().find(|s| s.name == name).map(|s| s.meaning)
}

/// A setting as the reference shows it: its name, its default (`None`:
/// unset by default) and its meaning (`None`: missing from [`SETTINGS`]).
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub default: Option<Value>,
    pub meaning: Option<&'static str>,
}

/// Every setting with its default, in the order of [`SETTINGS`].
pub fn entries() -> Vec<Entry> {
    let mut out = Vec::new();
    let defaults = serde_json::to_value(Config::default()).unwrap_or(Value::Null);
    walk("", &defaults, &mut out);
    // The table's order (the types' order, top-level settings first), not
    // the serializer's alphabetical one; undescribed settings go last.
    out.sort_by_key(|e| {
        SETTINGS
            .iter()
            .position(|s| s.name == e.name)
            .unwrap_or(usize::MAX)
    });
    out
}

/// The leaves below `value`: a described name is a leaf (maps such as
/// `keys.environments` are one setting), any other table is descended into.
fn walk(prefix: &str, value: &Value, out: &mut Vec<Entry>) {
    match value {
        Value::Object(members) if meaning(prefix).is_none() => {
            for (name, v) in members {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                walk(&path, v, out);
            }
        }
        _ => {
            out.push(Entry {
                name: prefix.to_owned(),
                default: (!value.is_null()).then(|| value.clone()),
                meaning: meaning(prefix),
            });
            let template = match prefix {
                "routes" => Some(("routes[]", route_template())),
                "limits.tiers" => Some(("limits.tiers.<name>", tier_template())),
                _ => None,
            };
            if let Some((name, Value::Object(fields))) = template {
                for (field, v) in fields {
                    let path = format!("{name}.{field}");
                    out.push(Entry {
                        meaning: meaning(&path),
                        name: path,
                        default: (!v.is_null()).then_some(v),
                    });
                }
            }
        }
    }
}

/// An entry of `[[routes]]` with every default filled in: only `path` is
/// required (shown as a placeholder).
fn route_template() -> Value {
    toml::from_str::<RouteConfig>("path = \"/v1/{*rest}\"")
        .ok()
        .and_then(|r| serde_json::to_value(r).ok())
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.remove("path");
                o.insert("path".into(), Value::Null);
            }
            v
        })
        .unwrap_or(Value::Null)
}

/// A tier with every default filled in; `limit` and `window_seconds` are
/// required (shown as placeholders).
fn tier_template() -> Value {
    toml::from_str::<TierConfig>("limit = 1\nwindow_seconds = 1")
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                for required in ["limit", "window_seconds"] {
                    o.insert(required.into(), Value::Null);
                }
            }
            v
        })
        .unwrap_or(Value::Null)
}

/// A default as TOML (`30`, `"info"`, `["POST", "PATCH"]`, `{}`).
fn toml_text(v: &Value) -> String {
    toml::Value::try_from(v)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| v.to_string())
}

/// The environment variable that overrides a setting
/// (`cache.ttl_seconds` → `KEYWARD_CACHE__TTL_SECONDS`); none for the
/// fields of `[[routes]]` and tiers.
pub fn env_var(name: &str) -> Option<String> {
    if name.contains("[]") || name.contains('<') {
        return None;
    }
    Some(format!(
        "KEYWARD_{}",
        name.replace('.', "__").to_ascii_uppercase()
    ))
}

/// The section a setting's line goes in (`cache` for `cache.ttl_seconds`,
/// `gateway.identity_headers` for its fields) and its key there.
fn section_and_key(name: &str) -> (String, String) {
    match name.rsplit_once('.') {
        Some((section, key)) => (section.to_owned(), key.to_owned()),
        None => (String::new(), name.to_owned()),
    }
}

fn wrap_comment(text: &str, out: &mut String) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 78 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// Every setting with its default and meaning as a commented TOML file
/// (what `keyward config defaults` prints): valid TOML that configures
/// exactly the defaults. Settings unset by default, `[[routes]]` entries
/// and tiers are shown commented out.
pub fn defaults_toml() -> String {
    let mut out = String::from(
        "# keyward configuration: every setting with its default.\n\
         # Any setting can also be set by an environment variable: KEYWARD_ followed by\n\
         # its name in capitals with `__` between sections (cache.ttl_seconds:\n\
         # KEYWARD_CACHE__TTL_SECONDS).\n",
    );
    let mut current = String::new();
    for e in entries() {
        let (mut section, key) = section_and_key(&e.name);
        let commented = e.default.is_none() || e.name.contains("[]") || e.name.contains('<');
        if e.name.starts_with("routes") {
            section = "[routes]".into();
        } else if e.name.starts_with("limits.tiers.<name>") {
            section = "limits.tiers.free".into();
        }
        if section != current {
            out.push('\n');
            if section == "[routes]" {
                out.push_str("# [[routes]]\n");
            } else if section == "limits.tiers.free" {
                out.push_str("# [limits.tiers.free]\n");
            } else {
                out.push_str(&format!("[{section}]\n"));
            }
            current = section;
        } else {
            out.push('\n');
        }
        wrap_comment(e.meaning.unwrap_or("(no description)"), &mut out);
        let value = match (&e.default, e.name.as_str()) {
            (Some(v), _) => toml_text(v),
            (None, "routes[].path") => "\"/v1/{*rest}\"".into(),
            (None, n) if n.ends_with(".limit") => "100".into(),
            (None, n) if n.ends_with(".window_seconds") => "60".into(),
            (None, _) => "(unset)".into(),
        };
        // Routes and tiers are lists and maps whose entries are written as
        // tables below: the empty default is the absence of any.
        if e.name == "routes" || e.name == "limits.tiers" {
            out.push_str("# (none by default; see below)\n");
            continue;
        }
        let prefix = if commented { "# " } else { "" };
        out.push_str(&format!("{prefix}{key} = {value}\n"));
    }
    out
}

/// `docs/configuration.md`: the configuration reference.
pub fn markdown() -> String {
    let mut out = String::from(MARKDOWN_HEAD);
    let mut current = String::from("\0");
    for e in entries() {
        let section = match e.name.split_once(['.', '[']) {
            _ if e.name.starts_with("routes") => "[[routes]]".to_owned(),
            Some((s, _)) => format!("[{s}]"),
            None => "Top level".to_owned(),
        };
        if section != current {
            out.push_str(&format!(
                "\n## {section}\n\n| Setting | Default | Environment variable | Meaning |\n|---|---|---|---|\n"
            ));
            current = section;
        }
        let default = match &e.default {
            Some(v) => format!("`{}`", toml_text(v).replace('|', "\\|")),
            None if e.name.contains("[]") || e.name.contains('<') => "required".into(),
            None => "unset".into(),
        };
        let default = match e.name.as_str() {
            // Fields with a default of their own inside each entry.
            n if (n.contains("[]") || n.contains('<')) && e.default.is_none() => {
                if n.ends_with("tenant_param")
                    || n.ends_with("respond")
                    || n.ends_with("burst")
                    || n.ends_with("refill")
                {
                    "unset".into()
                } else {
                    default
                }
            }
            _ => default,
        };
        let env = env_var(&e.name)
            .map(|v| format!("`{v}`"))
            .unwrap_or_else(|| "—".into());
        let meaning = e.meaning.unwrap_or("(no description)").replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {default} | {env} | {meaning} |\n",
            e.name
        ));
    }
    out
}

const MARKDOWN_HEAD: &str = "# Configuration reference

<!-- Generated by `keyward config defaults --markdown` from the configuration
types; a test fails when this file differs (UPDATE_SNAPSHOTS=1 rewrites it). -->

keyward reads one TOML file (`keyward serve --config keyward.toml`, or the
`KEYWARD_CONFIG` variable) and then `KEYWARD_*` environment variables, which
override the file: `KEYWARD_` followed by the setting's name in capitals with
`__` between its parts (`cache.ttl_seconds` is `KEYWARD_CACHE__TTL_SECONDS`).
A variable's value is read as TOML (`30`, `true`, `[\"a\", \"b\"]`) and
otherwise taken as a string. `KEYWARD_URL`, `KEYWARD_ROOT_KEY`, `KEYWARD_LOG`
and `KEYWARD_CONFIG` belong to the CLI, not to the configuration.

Every setting is optional: with no file at all keyward serves on
127.0.0.1:8080 from `data/keyward.db`.

- `keyward config check --config keyward.toml` checks a file (and the
  environment) exactly as `serve` would, without starting or touching the
  store; on an error it exits 1 naming the setting.
- `keyward config defaults` prints every setting below with its default and
  meaning as a commented TOML file.
- `keyward init` writes a starting `keyward.toml`.

On `SIGHUP` a running server re-reads its file and swaps in `[[routes]]`,
`[gateway]`, `[limits.tiers]` and `[idempotency]` (except
`idempotency.purge_interval_seconds`); any other change needs a restart, and
a reload that makes one is refused whole.
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_meaning_and_every_meaning_a_setting() {
        let entries = entries();
        let missing: Vec<&str> = entries
            .iter()
            .filter(|e| e.meaning.is_none())
            .map(|e| e.name.as_str())
            .collect();
        assert!(
            missing.is_empty(),
            "settings without a description in config/reference.rs SETTINGS: {missing:?}"
        );
        let stale: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| !entries.iter().any(|e| e.name == s.name))
            .map(|s| s.name)
            .collect();
        assert!(stale.is_empty(), "descriptions of no setting: {stale:?}");
    }

    #[test]
    fn the_defaults_file_configures_the_defaults() {
        let text = defaults_toml();
        let parsed: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            serde_json::to_value(parsed).unwrap(),
            serde_json::to_value(Config::default()).unwrap()
        );
        assert!(text.contains("\n# ttl_seconds = ") || text.contains("\nttl_seconds = 30\n"));
    }

    #[test]
    fn env_var_names_follow_the_override_rule() {
        assert_eq!(
            env_var("cache.ttl_seconds").as_deref(),
            Some("KEYWARD_CACHE__TTL_SECONDS")
        );
        assert_eq!(env_var("routes[].path"), None);
    }
}
