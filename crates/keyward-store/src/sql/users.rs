//! [`UserStore`] for [`SqlStore`]: the same portable SQL on SQLite and
//! PostgreSQL (see the rules at the top of `sql.rs`).

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{backend, insert_audit, SqlStore};
use crate::*;

const USER_COLUMNS: &str = "id, email, name, password_hash, operator, created_at, updated_at";
const SESSION_COLUMNS: &str = "token_hash, user_id, created_at, last_seen_at, expires_at, ip";
const INVITE_COLUMNS: &str = "id, token_hash, tenant_id, email, role, invited_by, created_at, \
    expires_at, accepted_at, accepted_by, revoked_at";

fn role_of(s: &str) -> StoreResult<Role> {
    Role::parse(s).ok_or_else(|| StoreError::Corrupt(format!("role: {s:?}")))
}

fn user_from_row(r: &AnyRow) -> StoreResult<User> {
    Ok(User {
        id: r.try_get("id").map_err(backend)?,
        email: r.try_get("email").map_err(backend)?,
        name: r.try_get("name").map_err(backend)?,
        password_hash: r.try_get("password_hash").map_err(backend)?,
        operator: r.try_get::<i64, _>("operator").map_err(backend)? != 0,
        created_at: r.try_get("created_at").map_err(backend)?,
        updated_at: r.try_get("updated_at").map_err(backend)?,
    })
}

fn session_from_row(r: &AnyRow) -> StoreResult<Session> {
    Ok(Session {
        token_hash: r.try_get("token_hash").map_err(backend)?,
        user_id: r.try_get("user_id").map_err(backend)?,
        created_at: r.try_get("created_at").map_err(backend)?,
        last_seen_at: r.try_get("last_seen_at").map_err(backend)?,
        expires_at: r.try_get("expires_at").map_err(backend)?,
        ip: r.try_get("ip").map_err(backend)?,
    })
}

fn invite_from_row(r: &AnyRow) -> StoreResult<Invite> {
    Ok(Invite {
        id: r.try_get("id").map_err(backend)?,
        token_hash: r.try_get("token_hash").map_err(backend)?,
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        email: r.try_get("email").map_err(backend)?,
        role: role_of(&r.try_get::<String, _>("role").map_err(backend)?)?,
        invited_by: r.try_get("invited_by").map_err(backend)?,
        created_at: r.try_get("created_at").map_err(backend)?,
        expires_at: r.try_get("expires_at").map_err(backend)?,
        accepted_at: r.try_get("accepted_at").map_err(backend)?,
        accepted_by: r.try_get("accepted_by").map_err(backend)?,
        revoked_at: r.try_get("revoked_at").map_err(backend)?,
    })
}

fn membership_from_row(r: &AnyRow) -> StoreResult<Membership> {
    Ok(Membership {
        tenant_id: r.try_get("tenant_id").map_err(backend)?,
        tenant_name: r.try_get("tenant_name").map_err(backend)?,
        user_id: r.try_get("user_id").map_err(backend)?,
        role: role_of(&r.try_get::<String, _>("role").map_err(backend)?)?,
        created_at: r.try_get("created_at").map_err(backend)?,
    })
}

fn is_unique(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation()
        || db.code().as_deref() == Some("23505")
        || db.message().contains("UNIQUE constraint failed"))
}

async fn insert_user(tx: &mut sqlx::Transaction<'_, sqlx::Any>, u: &User) -> StoreResult<()> {
    let sql = format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
    sqlx::query(&sql)
        .bind(&u.id)
        .bind(&u.email)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(i64::from(u.operator))
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            if is_unique(&e) {
                StoreError::Conflict("a user with this email already exists")
            } else {
                backend(e)
            }
        })?;
    Ok(())
}

/// The number of owners a tenant would have left: a guard against leaving a
/// tenant without one. Run inside the changing transaction.
async fn owners_of(tx: &mut sqlx::Transaction<'_, sqlx::Any>, tenant_id: &str) -> StoreResult<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM memberships WHERE tenant_id = $1 AND role = 'owner'",
    )
    .bind(tenant_id)
    .fetch_one(&mut **tx)
    .await
    .map_err(backend)?;
    row.try_get("n").map_err(backend)
}

#[async_trait]
impl UserStore for SqlStore {
    async fn create_user(&self, user: &User, audit: &AuditEntry) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_user(&mut tx, user).await?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn get_user(&self, id: &str) -> StoreResult<User> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        match sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
        {
            Some(r) => user_from_row(&r),
            None => Err(StoreError::NotFound),
        }
    }

    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        sqlx::query(&sql)
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(user_from_row)
            .transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY seq");
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done =
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(password_hash)
                .bind(audit.at)
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn memberships_of(&self, user_id: &str) -> StoreResult<Vec<Membership>> {
        sqlx::query(
            "SELECT m.tenant_id, t.name AS tenant_name, m.user_id, m.role, m.created_at \
             FROM memberships m JOIN tenants t ON t.id = m.tenant_id \
             WHERE m.user_id = $1 ORDER BY t.name, t.id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(membership_from_row)
        .collect()
    }

    async fn membership(&self, tenant_id: &str, user_id: &str) -> StoreResult<Option<Membership>> {
        sqlx::query(
            "SELECT m.tenant_id, t.name AS tenant_name, m.user_id, m.role, m.created_at \
             FROM memberships m JOIN tenants t ON t.id = m.tenant_id \
             WHERE m.tenant_id = $1 AND m.user_id = $2",
        )
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .as_ref()
        .map(membership_from_row)
        .transpose()
    }

    async fn list_members(&self, tenant_id: &str) -> StoreResult<Vec<Member>> {
        let rows = sqlx::query(
            "SELECT m.user_id, u.email, u.name, m.role, m.created_at \
             FROM memberships m JOIN users u ON u.id = m.user_id \
             WHERE m.tenant_id = $1 ORDER BY u.email",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    user_id: r.try_get("user_id").map_err(backend)?,
                    email: r.try_get("email").map_err(backend)?,
                    name: r.try_get("name").map_err(backend)?,
                    role: role_of(&r.try_get::<String, _>("role").map_err(backend)?)?,
                    created_at: r.try_get("created_at").map_err(backend)?,
                })
            })
            .collect()
    }

    async fn set_role(
        &self,
        tenant_id: &str,
        user_id: &str,
        role: Role,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let before = owners_of(&mut tx, tenant_id).await?;
        let updated = sqlx::query(
            "UPDATE memberships SET role = $1, updated_at = $2 WHERE tenant_id = $3 AND user_id = $4",
        )
        .bind(role.as_str())
        .bind(audit.at)
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await.map_err(backend)?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO memberships (tenant_id, user_id, role, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(tenant_id)
            .bind(user_id)
            .bind(role.as_str())
            .bind(audit.at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        if before > 0 && owners_of(&mut tx, tenant_id).await? == 0 {
            return Err(StoreError::Conflict(
                "a tenant needs at least one owner; make someone else owner first",
            ));
        }
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn remove_member(
        &self,
        tenant_id: &str,
        user_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let before = owners_of(&mut tx, tenant_id).await?;
        let done = sqlx::query("DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        if before > 0 && owners_of(&mut tx, tenant_id).await? == 0 {
            return Err(StoreError::Conflict(
                "a tenant needs at least one owner; make someone else owner first",
            ));
        }
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn create_session(&self, s: &Session) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO console_sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        );
        sqlx::query(&sql)
            .bind(&s.token_hash)
            .bind(&s.user_id)
            .bind(s.created_at)
            .bind(s.last_seen_at)
            .bind(s.expires_at)
            .bind(s.ip.clone())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn get_session(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM console_sessions WHERE token_hash = $1");
        sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(session_from_row)
            .transpose()
    }

    async fn touch_session(&self, token_hash: &str, at: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE console_sessions SET last_seen_at = $1 WHERE token_hash = $2 AND last_seen_at < $1",
        )
        .bind(at)
        .bind(token_hash)
        .execute(&self.pool)
        .await.map_err(backend)?;
        Ok(())
    }

    async fn delete_session(&self, token_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn purge_sessions(&self, now: i64, idle_before: i64) -> StoreResult<u64> {
        let done =
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen_at < $2")
                .bind(now)
                .bind(idle_before)
                .execute(&self.pool)
                .await
                .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn create_invite(&self, i: &Invite, audit: &AuditEntry) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO invites ({INVITE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        let mut tx = self.pool.begin().await.map_err(backend)?;
        sqlx::query(&sql)
            .bind(&i.id)
            .bind(&i.token_hash)
            .bind(&i.tenant_id)
            .bind(&i.email)
            .bind(i.role.as_str())
            .bind(&i.invited_by)
            .bind(i.created_at)
            .bind(i.expires_at)
            .bind(i.accepted_at)
            .bind(i.accepted_by.clone())
            .bind(i.revoked_at)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn find_invite(&self, token_hash: &str) -> StoreResult<Option<Invite>> {
        let sql = format!("SELECT {INVITE_COLUMNS} FROM invites WHERE token_hash = $1");
        sqlx::query(&sql)
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .as_ref()
            .map(invite_from_row)
            .transpose()
    }

    async fn list_invites(&self, tenant_id: &str, now: i64) -> StoreResult<Vec<Invite>> {
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE tenant_id = $1 AND accepted_at IS NULL \
             AND revoked_at IS NULL AND expires_at > $2 ORDER BY seq DESC"
        );
        sqlx::query(&sql)
            .bind(tenant_id)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(invite_from_row)
            .collect()
    }

    async fn revoke_invite(
        &self,
        tenant_id: &str,
        invite_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let done = sqlx::query(
            "UPDATE invites SET revoked_at = $1 WHERE id = $2 AND tenant_id = $3 \
             AND accepted_at IS NULL AND revoked_at IS NULL",
        )
        .bind(audit.at)
        .bind(invite_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn accept_invite(
        &self,
        invite: &Invite,
        invitee: Invitee<'_>,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        let user_id = match invitee {
            Invitee::New(u) => u.id.as_str(),
            Invitee::Existing(id) => id,
        };
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let used = sqlx::query(
            "UPDATE invites SET accepted_at = $1, accepted_by = $2 WHERE id = $3 \
             AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(audit.at)
        .bind(user_id)
        .bind(&invite.id)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if used.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "this invitation was already used, revoked, or has expired",
            ));
        }
        if let Invitee::New(u) = invitee {
            insert_user(&mut tx, u).await?;
        }
        sqlx::query(
            "INSERT INTO memberships (tenant_id, user_id, role, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&invite.tenant_id)
        .bind(user_id)
        .bind(invite.role.as_str())
        .bind(audit.at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique(&e) {
                StoreError::Conflict("you are already a member of this tenant")
            } else {
                backend(e)
            }
        })?;
        insert_audit(&mut tx, audit).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn login_failures(
        &self,
        subject: &str,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<(i64, i64)> {
        let row = sqlx::query(
            "SELECT window_start, failures FROM login_failures WHERE subject = $1 AND window_start > $2",
        )
        .bind(subject)
        .bind(now - window_ms)
        .fetch_optional(&self.pool)
        .await.map_err(backend)?;
        match row {
            Some(r) => Ok((
                r.try_get("failures").map_err(backend)?,
                r.try_get("window_start").map_err(backend)?,
            )),
            None => Ok((0, now)),
        }
    }

    async fn record_login_failure(
        &self,
        subject: &str,
        now: i64,
        window_ms: i64,
    ) -> StoreResult<(i64, i64)> {
        let cutoff = now - window_ms;
        // One statement: concurrent failures on many nodes never lose a count.
        let row = sqlx::query(
            "INSERT INTO login_failures (subject, window_start, failures) VALUES ($1, $2, 1) \
             ON CONFLICT (subject) DO UPDATE SET \
               failures = CASE WHEN login_failures.window_start <= $3 THEN 1 ELSE login_failures.failures + 1 END, \
               window_start = CASE WHEN login_failures.window_start <= $3 THEN $2 ELSE login_failures.window_start END \
             RETURNING failures, window_start",
        )
        .bind(subject)
        .bind(now)
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await.map_err(backend)?;
        let counted = (
            row.try_get("failures").map_err(backend)?,
            row.try_get("window_start").map_err(backend)?,
        );
        // Old windows are forgotten, so guessed account names do not pile up.
        sqlx::query("DELETE FROM login_failures WHERE window_start <= $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(counted)
    }

    async fn clear_login_failures(&self, subject: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_failures WHERE subject = $1")
            .bind(subject)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
