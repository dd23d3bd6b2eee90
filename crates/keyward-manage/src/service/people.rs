//! The console's people: invitations, members and their roles, and users
//! (created by the host's CLI or by accepting an invitation).

use keyward_store::{Invite, Invitee, Member, Membership, Role, StoreError, User};
use serde_json::json;

use super::ManageService;
use crate::actor::Actor;
use crate::error::{FieldError, ManageError};
use crate::event::ChangeEvent;

/// Emails are compared lower-cased and trimmed.
pub fn normalize_email(s: &str) -> String {
    s.trim().to_lowercase()
}

/// A plausible address: one `@`, something on each side, a dot in the
/// domain, no spaces or control characters, at most 254 characters.
pub fn check_email(email: &str) -> bool {
    email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        }
}

/// A person's name: at most 200 printable characters.
pub fn check_name(name: &str) -> bool {
    name.chars().count() <= 200 && !name.chars().any(char::is_control)
}

/// An invitation to a tenant. The token itself stays with the inviter (it
/// goes into the link); the service sees only its hash.
#[derive(Debug, Clone)]
pub struct NewInvite {
    pub tenant_id: String,
    pub email: String,
    /// The role's name (`owner`, `admin`, `developer`, `viewer`).
    pub role: String,
    /// Hex SHA-256 of the invitation token.
    pub token_hash: String,
}

/// A new console user, with a password already hashed by the caller.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub name: String,
    /// A PHC string; never the password.
    pub password_hash: String,
    pub operator: bool,
}

impl ManageService {
    /// The tenant, if `actor` may manage its members; [`ManageError::NotFound`]
    /// for a tenant it does not see, [`ManageError::RoleRefused`] for a role
    /// that may not `what`.
    async fn members_tenant(
        &self,
        actor: &Actor,
        tenant_id: &str,
        what: &'static str,
    ) -> Result<keyward_store::Tenant, ManageError> {
        let tenant = self.visible_tenant(actor, tenant_id).await?;
        if !actor.manages_members(tenant_id) {
            return Err(ManageError::RoleRefused(what));
        }
        Ok(tenant)
    }

    /// The members of a tenant the actor sees.
    pub async fn list_members(
        &self,
        actor: &Actor,
        tenant_id: &str,
    ) -> Result<Vec<Member>, ManageError> {
        self.visible_tenant(actor, tenant_id).await?;
        Ok(self.store.list_members(tenant_id).await?)
    }

    /// The open invitations of a tenant (those who manage its members).
    pub async fn list_invites(
        &self,
        actor: &Actor,
        tenant_id: &str,
    ) -> Result<Vec<Invite>, ManageError> {
        self.members_tenant(actor, tenant_id, "see invitations")
            .await?;
        Ok(self.store.list_invites(tenant_id, self.now().0).await?)
    }

    /// Invites someone to a tenant with a role the actor may give.
    pub async fn invite(&self, actor: &Actor, input: NewInvite) -> Result<Invite, ManageError> {
        let tenant = self
            .members_tenant(actor, &input.tenant_id, "invite members")
            .await?;
        let email = normalize_email(&input.email);
        let mut errors = Vec::new();
        if !check_email(&email) {
            errors.push(FieldError::new(
                "email",
                "invalid",
                format!("{email:?} is not an email address"),
            ));
        }
        let role = Role::parse(&input.role).filter(|r| actor.grantable_roles().contains(r));
        if role.is_none() {
            errors.push(FieldError::new(
                "role",
                "not_grantable",
                "choose one of the roles you may give",
            ));
        }
        if errors.is_empty() {
            if let Some(u) = self.store.find_user_by_email(&email).await? {
                if self.store.membership(&tenant.id, &u.id).await?.is_some() {
                    errors.push(FieldError::new(
                        "email",
                        "already_member",
                        format!("{email} is already a member of {}.", tenant.name),
                    ));
                }
            }
        }
        let Some(role) = role.filter(|_| errors.is_empty()) else {
            return Err(ManageError::Validation(errors));
        };
        let now = self.now().0;
        let invite = Invite {
            id: self.new_id("inv")?,
            token_hash: input.token_hash,
            tenant_id: tenant.id.clone(),
            email,
            role,
            invited_by: actor.audit_id().to_owned(),
            created_at: now,
            expires_at: now.saturating_add(self.policy().invite_ttl_ms),
            accepted_at: None,
            accepted_by: None,
            revoked_at: None,
        };
        let event = ChangeEvent::MemberInvited {
            tenant_id: tenant.id.clone(),
            invite_id: invite.id.clone(),
        };
        let audit = self.audit(
            actor,
            &event,
            json!({ "email": invite.email, "role": role.as_str() }),
        )?;
        self.store.create_invite(&invite, &audit).await?;
        self.committed(&event);
        tracing::info!(invite_id = %invite.id, tenant_id = %tenant.id, "Invitation created.");
        Ok(invite)
    }

    /// Revokes an open invitation.
    pub async fn revoke_invite(
        &self,
        actor: &Actor,
        tenant_id: &str,
        invite_id: &str,
    ) -> Result<(), ManageError> {
        self.members_tenant(actor, tenant_id, "revoke invitations")
            .await?;
        let event = ChangeEvent::InviteRevoked {
            tenant_id: tenant_id.to_owned(),
            invite_id: invite_id.to_owned(),
        };
        let audit = self.audit(actor, &event, json!({}))?;
        self.store
            .revoke_invite(tenant_id, invite_id, &audit)
            .await
            .map_err(people_error)?;
        self.committed(&event);
        Ok(())
    }

    /// The membership of `user_id` in `tenant_id`, or `NotFound`.
    async fn member(&self, tenant_id: &str, user_id: &str) -> Result<Membership, ManageError> {
        self.store
            .membership(tenant_id, user_id)
            .await?
            .ok_or(ManageError::NotFound("member"))
    }

    /// Changes a member's role; owners are changed, and made, only by
    /// owners and operators.
    pub async fn set_role(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
        role: Role,
    ) -> Result<(), ManageError> {
        self.members_tenant(actor, tenant_id, "change roles")
            .await?;
        let current = self.member(tenant_id, user_id).await?;
        let grantable = actor.grantable_roles();
        if !grantable.contains(&current.role) || !grantable.contains(&role) {
            return Err(ManageError::RoleRefused("give or take away the owner role"));
        }
        let event = ChangeEvent::MemberRoleChanged {
            tenant_id: tenant_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        let audit = self.audit(
            actor,
            &event,
            json!({ "from": current.role.as_str(), "to": role.as_str() }),
        )?;
        self.store
            .set_role(tenant_id, user_id, role, &audit)
            .await
            .map_err(people_error)?;
        self.committed(&event);
        Ok(())
    }

    /// Removes a member (never the last owner).
    pub async fn remove_member(
        &self,
        actor: &Actor,
        tenant_id: &str,
        user_id: &str,
    ) -> Result<(), ManageError> {
        self.members_tenant(actor, tenant_id, "remove members")
            .await?;
        let current = self.member(tenant_id, user_id).await?;
        if !actor.grantable_roles().contains(&current.role) {
            return Err(ManageError::RoleRefused("remove owners"));
        }
        let event = ChangeEvent::MemberRemoved {
            tenant_id: tenant_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        let audit = self.audit(actor, &event, json!({ "role": current.role.as_str() }))?;
        self.store
            .remove_member(tenant_id, user_id, &audit)
            .await
            .map_err(people_error)?;
        self.committed(&event);
        Ok(())
    }

    /// Accepts `invite` for `invitee` (a new user, or an existing one whose
    /// password the caller has checked), acting as that person (`ip`).
    pub async fn accept_invite(
        &self,
        invite: &Invite,
        invitee: Invitee<'_>,
        ip: Option<std::net::IpAddr>,
    ) -> Result<(), ManageError> {
        let user_id = match invitee {
            Invitee::New(u) => u.id.clone(),
            Invitee::Existing(id) => id.to_owned(),
        };
        let actor = Actor::User {
            user_id: user_id.clone(),
            ip,
        };
        let event = ChangeEvent::MemberJoined {
            tenant_id: invite.tenant_id.clone(),
            user_id: user_id.clone(),
            invite_id: invite.id.clone(),
        };
        let audit = self.audit(
            &actor,
            &event,
            json!({ "invite_id": invite.id, "role": invite.role.as_str(), "email": invite.email }),
        )?;
        self.store
            .accept_invite(invite, invitee, &audit)
            .await
            .map_err(people_error)?;
        self.committed(&event);
        tracing::info!(invite_id = %invite.id, user_id = %user_id, "Invitation accepted.");
        Ok(())
    }

    /// A new user record (not stored): email normalized, name trimmed, both
    /// checked. For invitations, which store it with the membership.
    pub fn new_user(&self, input: NewUser) -> Result<User, ManageError> {
        let email = normalize_email(&input.email);
        let name = input.name.trim().to_owned();
        let mut errors = Vec::new();
        if !check_email(&email) {
            errors.push(FieldError::new(
                "email",
                "invalid",
                format!("{email:?} is not an email address"),
            ));
        }
        if !check_name(&name) {
            errors.push(FieldError::new(
                "name",
                "invalid",
                "the name must be at most 200 printable characters",
            ));
        }
        if !errors.is_empty() {
            return Err(ManageError::Validation(errors));
        }
        let now = self.now().0;
        Ok(User {
            id: self.new_id("usr")?,
            email,
            name,
            password_hash: input.password_hash,
            operator: input.operator,
            created_at: now,
            updated_at: now,
        })
    }

    /// Creates a console user (operators only: the host's CLI).
    pub async fn create_user(&self, actor: &Actor, input: NewUser) -> Result<User, ManageError> {
        actor.require_operator()?;
        let user = self.new_user(input)?;
        let event = ChangeEvent::UserCreated {
            user_id: user.id.clone(),
        };
        let audit = self.audit(
            actor,
            &event,
            json!({ "email": user.email, "operator": user.operator }),
        )?;
        self.store
            .create_user(&user, &audit)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => ManageError::Conflict {
                    code: "email_taken",
                    message: format!("A user with the email {} already exists.", user.email),
                },
                other => other.into(),
            })?;
        self.committed(&event);
        Ok(user)
    }

    /// Sets a user's password (already hashed); ends their sessions.
    /// Operators only (the host's CLI).
    pub async fn set_password(
        &self,
        actor: &Actor,
        email: &str,
        password_hash: &str,
    ) -> Result<User, ManageError> {
        actor.require_operator()?;
        let email = normalize_email(email);
        let user = self
            .store
            .find_user_by_email(&email)
            .await?
            .ok_or(ManageError::NotFound("user"))?;
        let event = ChangeEvent::UserPasswordSet {
            user_id: user.id.clone(),
        };
        let audit = self.audit(actor, &event, json!({}))?;
        self.store
            .set_password(&user.id, password_hash, &audit)
            .await?;
        self.committed(&event);
        Ok(user)
    }

    /// Every console user (operators only).
    pub async fn list_users(&self, actor: &Actor) -> Result<Vec<User>, ManageError> {
        actor.require_operator()?;
        Ok(self.store.list_users().await?)
    }

    /// A user by email, if any (operators only).
    pub async fn find_user(&self, actor: &Actor, email: &str) -> Result<Option<User>, ManageError> {
        actor.require_operator()?;
        Ok(self
            .store
            .find_user_by_email(&normalize_email(email))
            .await?)
    }
}

/// Store refusals of people changes: a conflict's message is for the person.
fn people_error(e: StoreError) -> ManageError {
    match e {
        StoreError::Conflict(m) => ManageError::Conflict {
            code: "conflict",
            message: m.to_owned(),
        },
        StoreError::NotFound => ManageError::NotFound("resource"),
        other => other.into(),
    }
}
