//! Schema migrations, applied in order at start. Each is written once with
//! `{SEQ}` standing for the dialect's auto-incrementing primary key; that
//! is the only difference between the SQLite and PostgreSQL schemas.

use super::Dialect;

/// `(version, statements)`. Append only: never edit a released migration.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE tenants (
    seq {SEQ},
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE keys (
    seq {SEQ},
    id TEXT NOT NULL UNIQUE,
    class TEXT NOT NULL,
    tenant_id TEXT REFERENCES tenants (id),
    name TEXT NOT NULL,
    environment TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    start TEXT NOT NULL,
    owner TEXT,
    scopes TEXT NOT NULL,
    tier TEXT,
    credit_cap BIGINT,
    ip_allowlist TEXT NOT NULL,
    expires_at BIGINT,
    metadata TEXT NOT NULL,
    enabled BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_used_at BIGINT,
    last_used_ip TEXT,
    revoked_at BIGINT,
    revoked_reason TEXT,
    rotated_from TEXT,
    replaced_by TEXT,
    grace_until BIGINT,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX keys_live_name ON keys (class, COALESCE(tenant_id, ''), name)
    WHERE revoked_at IS NULL AND deleted_at IS NULL AND replaced_by IS NULL;
CREATE INDEX keys_by_tenant ON keys (tenant_id, seq);
CREATE TABLE audit_events (
    seq {SEQ},
    id TEXT NOT NULL UNIQUE,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    actor_ip TEXT,
    tenant_id TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_by_tenant ON audit_events (tenant_id, seq);
"#,
    ),
    (
        2,
        r#"
ALTER TABLE keys ADD COLUMN sub_tenants TEXT NOT NULL DEFAULT '[]';
"#,
    ),
    (
        3,
        r#"
ALTER TABLE tenants ADD COLUMN tier TEXT;
ALTER TABLE keys ADD COLUMN rate_limit TEXT;
CREATE TABLE credit_accounts (
    tenant_id TEXT PRIMARY KEY,
    balance BIGINT NOT NULL,
    refill TEXT,
    last_refill_at BIGINT,
    next_refill_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE TABLE key_credits (
    key_id TEXT PRIMARY KEY,
    spent BIGINT NOT NULL
);
CREATE TABLE credit_reservations (
    tenant_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    amount BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, node_id)
);
CREATE TABLE credit_ledger (
    seq {SEQ},
    id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    amount BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    key_id TEXT,
    requests BIGINT NOT NULL,
    actor TEXT,
    reason TEXT,
    idempotency_key TEXT,
    fingerprint TEXT
);
CREATE INDEX credit_ledger_by_tenant ON credit_ledger (tenant_id, seq);
CREATE UNIQUE INDEX credit_ledger_idempotency ON credit_ledger (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE idempotency_records (
    scope TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    locked_until BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    status BIGINT,
    headers TEXT,
    body TEXT,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_by_expiry ON idempotency_records (expires_at);
"#,
    ),
    // 4: console users, memberships, sessions, invitations and sign-in
    // throttling. Tokens are stored as hashes only.
    (
        4,
        r#"
CREATE TABLE users (
    seq {SEQ},
    id TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    operator BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE memberships (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id);
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ip TEXT
);
CREATE INDEX console_sessions_by_user ON console_sessions (user_id);
CREATE TABLE invites (
    seq {SEQ},
    id TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    email TEXT NOT NULL,
    role TEXT NOT NULL,
    invited_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    accepted_at BIGINT,
    accepted_by TEXT,
    revoked_at BIGINT
);
CREATE INDEX invites_by_tenant ON invites (tenant_id, seq);
CREATE TABLE login_failures (
    subject TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    failures BIGINT NOT NULL
);
"#,
    ),
    // 5: a tenant's ceiling of grantable scopes (a JSON array; NULL is none).
    (
        5,
        r#"
ALTER TABLE tenants ADD COLUMN grantable_scopes TEXT;
"#,
    ),
];

pub(super) fn migrations(dialect: Dialect) -> impl Iterator<Item = (i64, Vec<String>)> {
    let seq = match dialect {
        Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Dialect::Postgres => "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    };
    MIGRATIONS
        .iter()
        .map(move |(v, sql)| {
            let stmts = sql
                .replace("{SEQ}", seq)
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            (*v, stmts)
        })
        .chain(std::iter::once((6, change_log(dialect, seq))))
        .chain(std::iter::once((7, usage())))
        .chain(std::iter::once((8, leaks(seq))))
        .chain(std::iter::once((9, events(seq))))
}

/// 9: the outbox and webhooks (see `crate::events`): events, endpoints and
/// their type filters, deliveries (one per event and endpoint, leased to
/// one worker at a time), attempts, alerts (one open alert per `dedupe`, a
/// partial unique index), deployment settings; a tenant's low-credit
/// threshold; and indexes the alert evaluation reads recent usage by.
fn events(seq: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE events (seq {seq}, id TEXT NOT NULL UNIQUE, at BIGINT NOT NULL, \
             tenant_id TEXT, key_id TEXT, type TEXT NOT NULL, data TEXT NOT NULL, \
             source TEXT NOT NULL, idem TEXT UNIQUE)"
        ),
        "CREATE INDEX events_by_tenant ON events (tenant_id, seq)".to_owned(),
        "CREATE INDEX events_by_time ON events (at)".to_owned(),
        format!(
            "CREATE TABLE webhook_endpoints (seq {seq}, id TEXT NOT NULL UNIQUE, tenant_id TEXT, \
             url TEXT NOT NULL, description TEXT NOT NULL, event_types TEXT NOT NULL, \
             enabled BIGINT NOT NULL, salt TEXT NOT NULL, previous_salt TEXT, \
             previous_until BIGINT, failing_since BIGINT, created_at BIGINT NOT NULL, \
             updated_at BIGINT NOT NULL, deleted_at BIGINT)"
        ),
        "CREATE INDEX webhook_endpoints_by_tenant ON webhook_endpoints (tenant_id, seq)"
            .to_owned(),
        "CREATE TABLE webhook_filters (endpoint_id TEXT NOT NULL, exact TEXT, prefix TEXT)"
            .to_owned(),
        "CREATE INDEX webhook_filters_by_endpoint ON webhook_filters (endpoint_id)".to_owned(),
        format!(
            "CREATE TABLE webhook_deliveries (seq {seq}, event_id TEXT NOT NULL, \
             endpoint_id TEXT NOT NULL, event_type TEXT NOT NULL, status TEXT NOT NULL, \
             attempts BIGINT NOT NULL, tries BIGINT NOT NULL, next_at BIGINT, \
             lease_owner TEXT, lease_until BIGINT, created_at BIGINT NOT NULL, \
             updated_at BIGINT NOT NULL, last_status BIGINT, last_error TEXT, \
             UNIQUE (event_id, endpoint_id))"
        ),
        "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at)".to_owned(),
        "CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, seq)"
            .to_owned(),
        format!(
            "CREATE TABLE webhook_attempts (seq {seq}, event_id TEXT NOT NULL, \
             endpoint_id TEXT NOT NULL, at BIGINT NOT NULL, status BIGINT, \
             latency_ms BIGINT NOT NULL, response TEXT NOT NULL, error TEXT, ok BIGINT NOT NULL, \
             node TEXT NOT NULL)"
        ),
        "CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (endpoint_id, event_id, seq)"
            .to_owned(),
        "CREATE INDEX webhook_attempts_by_time ON webhook_attempts (at)".to_owned(),
        format!(
            "CREATE TABLE alerts (seq {seq}, id TEXT NOT NULL UNIQUE, at BIGINT NOT NULL, \
             tenant_id TEXT, key_id TEXT, kind TEXT NOT NULL, dedupe TEXT NOT NULL, \
             details TEXT NOT NULL, resolved_at BIGINT)"
        ),
        "CREATE UNIQUE INDEX alerts_open ON alerts (dedupe) WHERE resolved_at IS NULL".to_owned(),
        "CREATE INDEX alerts_by_key ON alerts (key_id, seq)".to_owned(),
        "CREATE INDEX alerts_by_tenant ON alerts (tenant_id, seq)".to_owned(),
        "CREATE INDEX alerts_by_kind ON alerts (kind, resolved_at)".to_owned(),
        "CREATE TABLE keyward_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)".to_owned(),
        "ALTER TABLE tenants ADD COLUMN credits_low_threshold BIGINT".to_owned(),
        "CREATE INDEX usage_recent ON usage_counts (g, bucket)".to_owned(),
        "CREATE INDEX key_ips_first_seen ON key_ips (first_seen)".to_owned(),
    ]
}

/// 8: leak reports (see `crate::leaks`): the token's hash only, never the
/// token; one acting report per key hash (`acting = 1`, a partial unique
/// index), later ones repeats.
fn leaks(seq: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE TABLE leak_reports (seq {seq}, id TEXT NOT NULL UNIQUE, \
             key_hash TEXT NOT NULL, key_id TEXT, tenant_id TEXT, token_type TEXT, url TEXT, \
             source TEXT, reporter TEXT NOT NULL, received_at BIGINT NOT NULL, \
             status TEXT NOT NULL, action TEXT, applied_at BIGINT, detail TEXT, \
             acting BIGINT NOT NULL)"
        ),
        "CREATE UNIQUE INDEX leak_reports_acting ON leak_reports (key_hash) WHERE acting = 1"
            .to_owned(),
        "CREATE INDEX leak_reports_by_key ON leak_reports (key_id, seq)".to_owned(),
        "CREATE INDEX leak_reports_pending ON leak_reports (status, seq)".to_owned(),
    ]
}

/// 7: usage counts per key, tenant header, route and outcome, one row per
/// bucket of each granularity (`g`: 0 minute, 1 hour, 2 day), and client
/// addresses per key (see `crate::usage`).
fn usage() -> Vec<String> {
    [
        "CREATE TABLE usage_counts (\
         g BIGINT NOT NULL, bucket BIGINT NOT NULL, key_id TEXT NOT NULL, \
         tenant_id TEXT NOT NULL, tenant_header TEXT NOT NULL, route TEXT NOT NULL, \
         outcome TEXT NOT NULL, class BIGINT NOT NULL, requests BIGINT NOT NULL, \
         credits BIGINT NOT NULL, latency_us BIGINT NOT NULL, \
         PRIMARY KEY (key_id, g, bucket, tenant_header, route, outcome))",
        "CREATE INDEX usage_by_tenant ON usage_counts (tenant_id, g, bucket)",
        "CREATE TABLE key_ips (\
         key_id TEXT NOT NULL, ip TEXT NOT NULL, first_seen BIGINT NOT NULL, \
         last_seen BIGINT NOT NULL, requests BIGINT NOT NULL, PRIMARY KEY (key_id, ip))",
        "CREATE INDEX key_ips_recent ON key_ips (key_id, last_seen)",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// Columns of `keys` a verification reads: a change to any of them is a
/// change other nodes must hear of. Last-use columns are left out (they
/// change on every request, and nothing cached depends on them).
const KEY_COLUMNS_WATCHED: &str = "id, class, tenant_id, name, environment, hash, start, owner, \
    scopes, tier, credit_cap, ip_allowlist, expires_at, metadata, enabled, created_by, created_at, \
    updated_at, revoked_at, revoked_reason, rotated_from, replaced_by, grace_until, deleted_at, \
    sub_tenants, rate_limit";

/// 6: the change log (see `crate::changes`), filled by triggers in the
/// transaction of each change; on PostgreSQL a trigger on the log also
/// sends a `NOTIFY` on the channel `keyward_changes:<schema>`. Trigger
/// bodies hold semicolons, so this migration is a list of statements, not
/// one text to split.
fn change_log(dialect: Dialect, seq: &str) -> Vec<String> {
    let table = format!(
        "CREATE TABLE change_log (seq {seq}, at BIGINT NOT NULL, kind TEXT NOT NULL, \
         key_hash TEXT, tenant_id TEXT, origin TEXT)"
    );
    let index = "CREATE INDEX change_log_by_time ON change_log (at)".to_owned();
    match dialect {
        Dialect::Sqlite => {
            let now = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
            let key = |event: &str, name: &str| {
                format!(
                    "CREATE TRIGGER {name} AFTER {event} ON keys BEGIN \
                     INSERT INTO change_log (at, kind, key_hash, tenant_id) \
                     VALUES ({now}, 'key', OLD.hash, OLD.tenant_id); END"
                )
            };
            let tenant = |event: &str, name: &str| {
                format!(
                    "CREATE TRIGGER {name} AFTER {event} ON tenants BEGIN \
                     INSERT INTO change_log (at, kind, tenant_id) VALUES ({now}, 'tenant', OLD.id); END"
                )
            };
            vec![
                table,
                index,
                key(&format!("UPDATE OF {KEY_COLUMNS_WATCHED}"), "keys_changed"),
                key("DELETE", "keys_deleted"),
                tenant("UPDATE", "tenants_changed"),
                tenant("DELETE", "tenants_deleted"),
            ]
        }
        Dialect::Postgres => {
            let now = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
            vec![
                table,
                index,
                format!(
                    "CREATE FUNCTION keyward_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     INSERT INTO change_log (at, kind, key_hash, tenant_id) \
                     VALUES ({now}, 'key', OLD.hash, OLD.tenant_id); RETURN NULL; END $$"
                ),
                format!(
                    "CREATE TRIGGER keys_changed AFTER UPDATE OF {KEY_COLUMNS_WATCHED} OR DELETE ON keys \
                     FOR EACH ROW EXECUTE FUNCTION keyward_key_changed()"
                ),
                format!(
                    "CREATE FUNCTION keyward_tenant_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     INSERT INTO change_log (at, kind, tenant_id) VALUES ({now}, 'tenant', OLD.id); \
                     RETURN NULL; END $$"
                ),
                "CREATE TRIGGER tenants_changed AFTER UPDATE OR DELETE ON tenants \
                 FOR EACH ROW EXECUTE FUNCTION keyward_tenant_changed()"
                    .to_owned(),
                "CREATE FUNCTION keyward_change_notify() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 PERFORM pg_notify('keyward_changes:' || current_schema(), json_build_object(\
                 'seq', NEW.seq, 'at', NEW.at, 'kind', NEW.kind, 'key_hash', NEW.key_hash, \
                 'tenant_id', NEW.tenant_id, 'origin', NEW.origin)::text); RETURN NULL; END $$"
                    .to_owned(),
                "CREATE TRIGGER change_log_notify AFTER INSERT ON change_log \
                 FOR EACH ROW EXECUTE FUNCTION keyward_change_notify()"
                    .to_owned(),
            ]
        }
    }
}
