//! Members and invitations.
//!
//! Owners and admins invite people by a one-time link shown in the console
//! (keyward sends no email). The link carries a random token in its query
//! string (query strings are never logged); the store keeps only the
//! token's SHA-256. Opening the link lets the invitee set a password (or,
//! with an account already, confirm theirs) and join with the invited role.

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use keyward_core::secret::KeyHash;
use keyward_manage::{ManageError, NewInvite};
use keyward_store::{Invite, Invitee, Role};
use maud::{html, Markup};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::access::TenantAccess;
use super::flash::{self, Flash};
use super::form::FormData;
use super::session::{random_token, SignedForm, SignedIn, Throttle};
use super::ui::{self, Chrome, Errors, Section};
use super::{accounts, password, ConsoleError};
use crate::ConsoleState;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    done: Option<String>,
}

/// The invitation form as typed; an empty role is the page's default.
/// `errors` with no field are refusals of other forms on the page (the last
/// owner cannot leave, say), shown at its top.
#[derive(Debug, Default)]
struct InviteForm {
    email: String,
    role: String,
    errors: Errors,
}

fn members_path(tid: &str) -> String {
    format!("/console/t/{tid}/members")
}

pub async fn list(
    State(state): State<ConsoleState>,
    signed: SignedIn,
    Path(tid): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &signed, &tid).await?;
    let path = members_path(&access.tenant.id);
    let (form, status) = match signed.flash_for(&path, "invite") {
        Some(fl) => (
            InviteForm {
                email: fl.get("email").to_owned(),
                role: fl.get("role").to_owned(),
                errors: fl.errors(),
            },
            fl.status(),
        ),
        None => match signed.flash_for(&path, "members") {
            Some(fl) => (
                InviteForm {
                    errors: fl.errors(),
                    ..InviteForm::default()
                },
                fl.status(),
            ),
            None => (InviteForm::default(), StatusCode::OK),
        },
    };
    members_view(
        &state,
        &signed,
        &access,
        &form,
        q.done.as_deref(),
        None,
        status,
    )
    .await
}

/// A just-created invitation link, shown once.
struct NewLink {
    url: String,
    email: String,
    role: Role,
    expires_at: i64,
}

async fn members_view(
    state: &ConsoleState,
    signed: &SignedIn,
    access: &TenantAccess,
    form: &InviteForm,
    done: Option<&str>,
    link: Option<NewLink>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let tid = &access.tenant.id;
    let actor = access.actor(signed);
    let members = state.manage.list_members(&actor, tid).await?;
    let invites = if access.can_manage_members() {
        state.manage.list_invites(&actor, tid).await?
    } else {
        Vec::new()
    };
    let mut inviters = Vec::new();
    for i in &invites {
        inviters.push(super::keys::actor_label(state, &i.invited_by).await);
    }
    let grantable = access.grantable_roles();
    // A tenant without an owner (nor an invitation for one) needs one first.
    let needs_owner = !members.iter().any(|m| m.role == Role::Owner)
        && !invites.iter().any(|i| i.role == Role::Owner)
        && grantable.contains(&Role::Owner);
    let role = if !form.role.is_empty() {
        form.role.as_str()
    } else if needs_owner {
        Role::Owner.as_str()
    } else {
        Role::Developer.as_str()
    };
    let e = &form.errors;
    let general_refusal = e.fields.is_empty() && !e.general.is_empty();
    let content = html! {
        div.page-header {
            div {
                h1 { "Members" }
                p.lead { "People who can sign in to " (access.tenant.name) "'s console, and what they may do." }
            }
        }
        (ui::done_notice(done))
        @if general_refusal { (e.summary()) }
        @if let Some(l) = &link {
            section.card.card-highlight aria-labelledby="link-title" data-replace-url=(members_path(tid)) {
                h2 #link-title { "Invitation link for " (l.email) }
                p { "Send this link to " strong { (l.email) } " yourself — keyward sends no email. It works once, until " (ui::time(l.expires_at)) ", and adds them as " strong { (l.role.as_str()) } "." }
                div.copy-row {
                    label.visually-hidden for="invite-link" { "Invitation link" }
                    input #invite-link.mono type="text" readonly value=(l.url) data-absolute-url spellcheck="false";
                    button.btn.btn-primary type="button" data-copy="invite-link" { "Copy link" }
                }
                p.hint { "This is the only time the link is shown: keyward keeps only a hash of it. If it is lost, revoke the invitation and create a new one." }
                p.visually-hidden #copy-status role="status" aria-live="polite" {}
            }
        }
        section aria-labelledby="members-title" {
            h2 #members-title.section-title { "Members " span.count { (members.len()) } }
            @if members.is_empty() {
                div.empty-state {
                    h3 { "No members yet" }
                    @if access.can_manage_members() {
                        p { "Invite the first owner below: they will manage this tenant's keys and members." }
                    } @else {
                        p { "Nobody belongs to this tenant yet." }
                    }
                }
            } @else {
                div.table-wrap {
                    table.table {
                        thead { tr {
                            th scope="col" { "Member" }
                            th scope="col" { "Role" }
                            th scope="col" { "Joined" }
                            @if access.can_manage_members() { th scope="col" { span.visually-hidden { "Actions" } } }
                        } }
                        tbody {
                            @for m in &members {
                                tr {
                                    td {
                                        span.strong { (if m.name.is_empty() { &m.email } else { &m.name }) }
                                        @if !m.name.is_empty() { br; span.muted.small { (m.email) } }
                                        @if m.user_id == signed.user.id { " " span.badge { "you" } }
                                    }
                                    td {
                                        @if access.may_manage(m.role) {
                                            form.inline-form method="post" action={ "/console/t/" (tid) "/members/" (m.user_id) "/role" } {
                                                (ui::csrf(&signed.csrf))
                                                label.visually-hidden for={ "role-" (m.user_id) } { "Role of " (m.email) }
                                                select id={ "role-" (m.user_id) } name="role" {
                                                    @for r in &grantable {
                                                        option value=(r.as_str()) selected[*r == m.role] { (r.as_str()) }
                                                    }
                                                }
                                                button.btn.btn-small type="submit" { "Change role" }
                                            }
                                        } @else {
                                            span.role { (m.role.as_str()) }
                                        }
                                    }
                                    td.nowrap { (ui::time(m.created_at)) }
                                    @if access.can_manage_members() {
                                        td.row-actions {
                                            @if access.may_manage(m.role) {
                                                form.inline-form method="post" action={ "/console/t/" (tid) "/members/" (m.user_id) "/remove" }
                                                    data-confirm={ "Remove " (m.email) " from " (access.tenant.name) "? They lose access at once." } {
                                                    (ui::csrf(&signed.csrf))
                                                    button.btn.btn-small.btn-danger-ghost type="submit" aria-label={ "Remove " (m.email) } { "Remove" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if access.can_manage_members() {
            section aria-labelledby="invites-title" {
                h2 #invites-title.section-title { "Pending invitations " span.count { (invites.len()) } }
                @if invites.is_empty() {
                    p.muted { "No open invitations." }
                } @else {
                    div.table-wrap {
                        table.table {
                            thead { tr { th scope="col" { "Email" } th scope="col" { "Role" } th scope="col" { "Invited by" } th scope="col" { "Expires" } th scope="col" { span.visually-hidden { "Actions" } } } }
                            tbody {
                                @for (i, by) in invites.iter().zip(&inviters) {
                                    tr {
                                        td { (i.email) }
                                        td { span.role { (i.role.as_str()) } }
                                        td { (by) }
                                        td.nowrap { (ui::time(i.expires_at)) }
                                        td.row-actions {
                                            form.inline-form method="post" action={ "/console/t/" (tid) "/invites/" (i.id) "/revoke" } {
                                                (ui::csrf(&signed.csrf))
                                                button.btn.btn-small.btn-danger-ghost type="submit" aria-label={ "Revoke the invitation for " (i.email) } { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="invite-title" {
                h2 #invite-title { "Invite someone" }
                p { "You get a one-time link to send them. They choose their own password." }
                @if needs_owner {
                    p.notice #first-owner { "This tenant has no owner yet: invite its first owner, who will manage its keys and members." }
                }
                @if !general_refusal { (e.summary()) }
                form.form-row method="post" action={ "/console/t/" (tid) "/members/invite" } {
                    (ui::csrf(&signed.csrf))
                    div.field.grow {
                        label for="invite-email" { "Email" }
                        input #invite-email type="email" name="email" value=(form.email) required autocomplete="off"
                            aria-invalid=[e.has("email").then_some("true")] aria-describedby=[e.described_by("email")];
                        (e.show("email"))
                    }
                    div.field {
                        label for="invite-role" { "Role" }
                        select #invite-role name="role" aria-describedby="role-help" {
                            @for r in &grantable {
                                option value=(r.as_str()) selected[role == r.as_str()] { (r.as_str()) }
                            }
                        }
                        (e.show("role"))
                    }
                    div.field.field-submit { button.btn.btn-primary type="submit" { "Create invitation link" } }
                }
                (role_help())
            }
        } @else {
            p.notice { "Owners and admins invite members and change roles." }
        }
    };
    let chrome = Chrome {
        signed,
        access: Some(access),
        section: Section::Members,
    };
    Ok(ui::html(status, ui::page("Members", &chrome, content)))
}

fn role_help() -> Markup {
    html! {
        dl.role-help #role-help {
            div { dt { "owner" } dd { "Everything, including managing owners." } }
            div { dt { "admin" } dd { "Keys, members (except owners) and the audit log." } }
            div { dt { "developer" } dd { "Create, edit, rotate and revoke keys." } }
            div { dt { "viewer" } dd { "See keys and members; change nothing." } }
        }
    }
}

fn public_base(state: &ConsoleState) -> String {
    state
        .settings
        .console
        .public_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

pub async fn invite(
    State(state): State<ConsoleState>,
    Path(tid): Path<String>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &f.signed, &tid).await?;
    if !access.can_manage_members() {
        return Err(access.refuse("invite members"));
    }
    let mut form = InviteForm {
        email: accounts::normalize_email(f.form.get("email")),
        role: f.form.text("role"),
        errors: Errors::default(),
    };
    let token = Zeroizing::new(random_token(&state)?);
    let input = NewInvite {
        tenant_id: tid.clone(),
        email: form.email.clone(),
        role: form.role.clone(),
        token_hash: KeyHash::of(&token).to_hex(),
    };
    let invite = match state.manage.invite(&access.actor(&f.signed), input).await {
        Ok(invite) => invite,
        Err(ManageError::Validation(errors)) => {
            for e in errors {
                match (e.field.as_str(), e.code) {
                    ("email", "already_member") => form.errors.field("email", e.message),
                    ("email", _) => form.errors.field(
                        "email",
                        "Enter the email address of the person to invite, like ann@example.com.",
                    ),
                    _ => form
                        .errors
                        .field("role", "Choose one of the roles you may give."),
                }
            }
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            let fl = Flash::new(members_path(&tid), "invite", status, &form.errors)
                .field("email", &form.email)
                .field("role", &form.role);
            if let Some(res) = flash::redirect(&state, &f.signed, &fl) {
                return Ok(res);
            }
            return members_view(&state, &f.signed, &access, &form, None, None, status).await;
        }
        Err(e) => return Err(e.into()),
    };
    let role = invite.role;

    let link = NewLink {
        url: format!(
            "{}/console/invite?token={}",
            public_base(&state),
            token.as_str()
        ),
        email: invite.email.clone(),
        role,
        expires_at: invite.expires_at,
    };
    let fresh = InviteForm::default();
    members_view(
        &state,
        &f.signed,
        &access,
        &fresh,
        None,
        Some(link),
        StatusCode::CREATED,
    )
    .await
}

/// A refused change of people: the store's reason, as a sentence.
fn people_refusal(e: ManageError) -> ConsoleError {
    match e {
        ManageError::Conflict { message, .. } => ConsoleError::BadRequest(ui::sentence(&message)),
        other => other.into(),
    }
}

/// A refused change of a member (the last owner cannot leave, say): back to
/// the members page with the reason at its top (post-redirect-get).
fn refuse_on_members(
    state: &ConsoleState,
    signed: &SignedIn,
    tid: &str,
    e: ManageError,
) -> Result<Response, ConsoleError> {
    let ManageError::Conflict { message, .. } = e else {
        return Err(e.into());
    };
    let mut errors = Errors::default();
    errors.general(ui::sentence(&message));
    let fl = Flash::new(members_path(tid), "members", StatusCode::CONFLICT, &errors);
    flash::redirect(state, signed, &fl)
        .ok_or_else(|| ConsoleError::BadRequest(ui::sentence(&message)))
}

pub async fn change_role(
    State(state): State<ConsoleState>,
    Path((tid, uid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &f.signed, &tid).await?;
    if !access.can_manage_members() {
        return Err(access.refuse("change roles"));
    }
    let current = state
        .store
        .membership(&tid, &uid)
        .await?
        .ok_or(ConsoleError::NotFound)?;
    let role = Role::parse(&f.form.text("role"))
        .ok_or_else(|| ConsoleError::BadRequest("Choose a role.".into()))?;
    if !access.may_manage(current.role) || !access.grantable_roles().contains(&role) {
        return Err(access.refuse("give or take away the owner role"));
    }
    if let Err(e) = state
        .manage
        .set_role(&access.actor(&f.signed), &tid, &uid, role)
        .await
    {
        return refuse_on_members(&state, &f.signed, &tid, e);
    }
    Ok(Redirect::to(&format!("/console/t/{tid}/members?done=role_changed")).into_response())
}

pub async fn remove(
    State(state): State<ConsoleState>,
    Path((tid, uid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &f.signed, &tid).await?;
    if !access.can_manage_members() {
        return Err(access.refuse("remove members"));
    }
    let current = state
        .store
        .membership(&tid, &uid)
        .await?
        .ok_or(ConsoleError::NotFound)?;
    if !access.may_manage(current.role) {
        return Err(access.refuse("remove owners"));
    }
    if let Err(e) = state
        .manage
        .remove_member(&access.actor(&f.signed), &tid, &uid)
        .await
    {
        return refuse_on_members(&state, &f.signed, &tid, e);
    }
    Ok(Redirect::to(&format!("/console/t/{tid}/members?done=removed")).into_response())
}

pub async fn revoke_invite(
    State(state): State<ConsoleState>,
    Path((tid, iid)): Path<(String, String)>,
    f: SignedForm,
) -> Result<Response, ConsoleError> {
    let access = TenantAccess::load(&state, &f.signed, &tid).await?;
    if !access.can_manage_members() {
        return Err(access.refuse("revoke invitations"));
    }
    if let Err(e) = state
        .manage
        .revoke_invite(&access.actor(&f.signed), &tid, &iid)
        .await
    {
        return refuse_on_members(&state, &f.signed, &tid, e);
    }
    Ok(Redirect::to(&format!("/console/t/{tid}/members?done=invite_revoked")).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct AcceptQuery {
    token: Option<String>,
    /// What was wrong with the last attempt (post-redirect-get): codes,
    /// comma-separated, worded here.
    failed: Option<String>,
    name: Option<String>,
}

/// Where a refused acceptance goes: the invitation's page with the name as
/// typed and what was wrong (never the password).
fn accept_failed_url(token: &str, name: &str, codes: &[&str]) -> String {
    format!(
        "/console/invite?token={}&failed={}&name={}",
        ui::url_encode(token),
        codes.join(","),
        ui::url_encode(name)
    )
}

/// The invitation behind a token, if it still works; otherwise a page that
/// says why not.
async fn open_invite(
    state: &ConsoleState,
    token: &str,
) -> Result<Result<Invite, Response>, ConsoleError> {
    let invalid = |why: &str| {
        Ok(Err(ui::html(
            StatusCode::NOT_FOUND,
            ui::error_page(
                StatusCode::NOT_FOUND,
                "This invitation link does not work",
                &format!("{why} Ask the person who invited you for a new link."),
            ),
        )))
    };
    if token.is_empty() || token.len() > 128 {
        return invalid("The link is incomplete: copy all of it into the address bar.");
    }
    let Some(invite) = state
        .store
        .find_invite(&KeyHash::of(token).to_hex())
        .await?
    else {
        return invalid("The link is not valid: it may be incomplete.");
    };
    let now = state.clock.now().0;
    if invite.accepted_at.is_some() {
        return invalid("It was already used: each link works once. If it was you, sign in.");
    }
    if invite.revoked_at.is_some() {
        return invalid("It was revoked.");
    }
    if now >= invite.expires_at {
        return invalid("It has expired.");
    }
    Ok(Ok(invite))
}

struct AcceptView<'a> {
    token: &'a str,
    invite: &'a Invite,
    tenant: &'a str,
    existing: bool,
    name: &'a str,
    errors: &'a Errors,
}

fn accept_view(v: &AcceptView<'_>) -> Markup {
    let e = v.errors;
    let content = html! {
        div.auth-card {
            (ui::brand_mark())
            h1 { "Join " (v.tenant) }
            p { "You are invited to " strong { (v.tenant) } " as " strong { (v.invite.role.as_str()) } "." }
            (e.summary())
            form method="post" action="/console/invite" novalidate {
                input type="hidden" name="token" value=(v.token);
                div.field {
                    label for="email" { "Email" }
                    input #email type="email" value=(v.invite.email) readonly autocomplete="username";
                }
                @if v.existing {
                    p.notice { "You already have an account. Enter your password to join." }
                    div.field {
                        label for="password" { "Password" }
                        input #password type="password" name="password" required autocomplete="current-password"
                            aria-invalid=[e.has("password").then_some("true")] aria-describedby=[e.described_by("password")];
                        (e.show("password"))
                    }
                    button.btn.btn-primary.btn-block type="submit" { "Join " (v.tenant) }
                } @else {
                    div.field {
                        label for="name" { "Your name " span.optional { "(optional)" } }
                        input #name name="name" value=(v.name) maxlength="200" autocomplete="name";
                        (e.show("name"))
                    }
                    div.field {
                        label for="password" { "Choose a password" }
                        input #password type="password" name="password" required minlength=(password::MIN_LEN) autocomplete="new-password"
                            aria-describedby={ "password-hint" @if e.has("password") { " password-error" } }
                            aria-invalid=[e.has("password").then_some("true")];
                        p.hint #password-hint { "At least " (password::MIN_LEN) " characters. A passphrase of a few words is easy to remember and hard to guess." }
                        (e.show("password"))
                    }
                    div.field {
                        label for="password-confirm" { "Repeat the password" }
                        input #password-confirm type="password" name="password_confirm" required autocomplete="new-password"
                            aria-invalid=[e.has("password_confirm").then_some("true")] aria-describedby=[e.described_by("password_confirm")];
                        (e.show("password_confirm"))
                    }
                    button.btn.btn-primary.btn-block type="submit" { "Create account and join" }
                }
            }
        }
    };
    ui::bare_page("Accept invitation", content)
}

pub async fn accept_page(
    State(state): State<ConsoleState>,
    Query(q): Query<AcceptQuery>,
    parts: axum::http::request::Parts,
) -> Result<Response, ConsoleError> {
    let token = q.token.unwrap_or_default();
    let invite = match open_invite(&state, &token).await? {
        Ok(i) => i,
        Err(page) => return Ok(page),
    };
    let tenant = state.store.get_tenant(&invite.tenant_id).await?;
    let existing = state
        .store
        .find_user_by_email(&invite.email)
        .await?
        .is_some();
    let mut errors = Errors::default();
    for code in q.failed.as_deref().unwrap_or("").split(',') {
        match code {
            "password_short" => errors.field(
                "password",
                format!(
                    "Choose a password of at least {} characters.",
                    password::MIN_LEN
                ),
            ),
            "password_differ" => errors.field(
                "password_confirm",
                "The two passwords differ. Type the same password twice.",
            ),
            "name" => errors.field("name", "Use at most 200 printable characters."),
            "password_wrong" => {
                let ip = crate::client_ip(&parts, &state);
                let msg = match Throttle::new(&state, &invite.email, ip).refused().await? {
                    Some(r) => r.message(),
                    None => "That is not the password of this account.".into(),
                };
                errors.field("password", msg);
            }
            _ => {}
        }
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let name = q.name.unwrap_or_default();
    let v = AcceptView {
        token: &token,
        invite: &invite,
        tenant: &tenant.name,
        existing,
        name: &name,
        errors: &errors,
    };
    Ok(ui::html(status, accept_view(&v)))
}

/// Accepts an invitation: creates the account (or checks the existing
/// one's password) and adds the membership, then sends the invitee to sign in.
pub async fn accept(
    State(state): State<ConsoleState>,
    req: Request,
) -> Result<Response, ConsoleError> {
    let (parts, body) = req.into_parts();
    let ip = crate::client_ip(&parts, &state);
    let form = FormData::from_request(Request::from_parts(parts, body), &state).await?;
    let token = form.text("token");
    let invite = match open_invite(&state, &token).await? {
        Ok(i) => i,
        Err(page) => return Ok(page),
    };
    let existing = state.store.find_user_by_email(&invite.email).await?;
    let name = form.text("name");
    let mut codes: Vec<&str> = Vec::new();
    let new_user;
    let invitee = match &existing {
        Some(user) => {
            let throttle = Throttle::new(&state, &user.email, ip);
            if throttle.refused().await?.is_some() {
                codes.push("password_wrong");
            } else if password::verify(form.secret("password"), Some(user.password_hash.clone()))
                .await
            {
                throttle.succeeded().await?;
            } else {
                throttle.failed().await?;
                codes.push("password_wrong");
            }
            Invitee::Existing(&user.id)
        }
        None => {
            let pw = form.secret("password");
            if password::check_policy(&pw).is_err() {
                codes.push("password_short");
            } else if pw.as_str() != form.get("password_confirm") {
                codes.push("password_differ");
            }
            let name_ok = accounts::check_name(&name).is_ok();
            if !name_ok {
                codes.push("name");
            }
            if !codes.is_empty() {
                // A name that is not valid is not carried back.
                let keep = if name_ok { name.as_str() } else { "" };
                return Ok(Redirect::to(&accept_failed_url(&token, keep, &codes)).into_response());
            }
            new_user = accounts::new_user(
                &state.manage,
                state.entropy.as_ref(),
                &invite.email,
                &name,
                pw,
                false,
            )
            .await
            .map_err(|e| ConsoleError::BadRequest(ui::sentence(&e.to_string())))?;
            Invitee::New(&new_user)
        }
    };
    if !codes.is_empty() {
        return Ok(Redirect::to(&accept_failed_url(&token, "", &codes)).into_response());
    }
    state
        .manage
        .accept_invite(&invite, invitee, ip)
        .await
        .map_err(people_refusal)?;
    Ok(Redirect::to(&format!(
        "/console/sign-in?joined=1&email={}",
        ui::url_encode(&invite.email)
    ))
    .into_response())
}
