//! The console's server-side rules over real HTTP: roles, CSRF and origin
//! checks, session expiry (with the manual clock), sign-in limits,
//! invitations, and where secrets may appear. Also `keyward users create`,
//! and the browser suite (`console-tests/`) against the real binary. (The
//! user store's own conformance suite is in `store/users.rs`.)

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use keyward_console::accounts;
use keyward_core::clock::ManualClock;
use keyward_core::secret::{KeyHash, OsEntropy};
use keyward_server::config::{Config, Settings};
use keyward_store::*;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde_json::json;
use zeroize::Zeroizing;

use crate::kit::{default_config, fresh_store_url, Backend, Server};

const PASSWORD: &str = "correct horse battery";

/// A console server with direct access to its store and clock.
struct Console {
    server: Server,
    store: Arc<SqlStore>,
    db: Option<std::path::PathBuf>,
}

impl Console {
    async fn start() -> Console {
        Console::start_with(default_config()).await
    }

    async fn start_with(config: Config) -> Console {
        let url = fresh_store_url(Backend::Sqlite).await;
        let db = url.strip_prefix("sqlite://").map(std::path::PathBuf::from);
        let store = Arc::new(SqlStore::open(&url).await.unwrap());
        let server = Server::start_on(store.clone(), config, ManualClock::starting_now()).await;
        Console { server, store, db }
    }

    async fn user(&self, email: &str, operator: bool) -> User {
        let settings = Settings::from_config(crate::kit::default_config()).unwrap();
        let manage = keyward_server::bootstrap::host_service(
            &settings,
            self.store.clone(),
            Arc::new(self.server.clock.clone()),
            Arc::new(OsEntropy),
        );
        accounts::create_user(
            &manage,
            &OsEntropy,
            email,
            "",
            Zeroizing::new(PASSWORD.into()),
            operator,
        )
        .await
        .unwrap()
    }

    async fn member(&self, email: &str, tenant: &str, role: Role) -> User {
        let u = self.user(email, false).await;
        let audit = AuditEntry {
            id: format!("evt_{}", u.id),
            at: 0,
            actor: "test".into(),
            actor_ip: None,
            tenant_id: Some(tenant.into()),
            action: "member.added".into(),
            target: u.id.clone(),
            details: json!({}),
            event: None,
        };
        self.store
            .set_role(tenant, &u.id, role, &audit)
            .await
            .unwrap();
        u
    }

    fn browser(&self) -> Browser {
        Browser {
            base: self.server.base.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn signed_in(&self, email: &str) -> Browser {
        let mut b = self.browser();
        let r = b.sign_in(email, PASSWORD).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
        b
    }
}

/// A cookie-keeping client that speaks forms, like a browser without script.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The CSRF token in the page's forms.
    fn csrf(&self) -> String {
        between(&self.text, "name=\"_csrf\" value=\"", "\"")
            .expect("page has a CSRF field")
            .to_owned()
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

impl Browser {
    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c.clone()),
            None => req,
        };
        let res = req.send().await.unwrap();
        // A cookie jar of one host: the session, and the flash of a refused form.
        let mut jar: Vec<(String, String)> = self
            .cookie
            .iter()
            .flat_map(|c| c.split("; "))
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for set in res.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap_or("");
            let (name, value) = pair.split_once('=').unwrap();
            jar.retain(|(k, _)| k != name);
            if !value.is_empty() {
                jar.push((name.to_owned(), value.to_owned()));
            }
        }
        self.cookie = (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        });
        Page {
            status: res.status(),
            headers: res.headers().clone(),
            text: res.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.post_with(path, fields, &[]).await
    }

    /// A form refused with post-redirect-get: the POST answered 303 to the
    /// form's page; the page it leads to (with the refusal's status).
    async fn follow(&mut self, posted: Page) -> Page {
        assert_eq!(posted.status, StatusCode::SEE_OTHER, "{}", posted.text);
        let location = posted.location().to_owned();
        self.get(&location).await
    }

    async fn post_with(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&'static str, &str)],
    ) -> Page {
        let body: String = form_body(fields);
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, HeaderValue::from_str(v).unwrap());
        }
        self.send(req).await
    }

    async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        self.post(
            "/console/sign-in",
            &[("email", email), ("password", password)],
        )
        .await
    }

    /// Any signed-in page's CSRF token.
    async fn csrf(&mut self) -> String {
        self.get("/console/tenants").await.csrf()
    }
}

fn form_body(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Creates a key through the console; returns the response page.
async fn create_key(b: &mut Browser, tenant: &str, name: &str, scopes: &[&str]) -> Page {
    let csrf = b.csrf().await;
    let mut fields = vec![
        ("_csrf", csrf.as_str()),
        ("name", name),
        ("environment", "test"),
        ("expiry", "never"),
    ];
    for s in scopes {
        fields.push(("scopes", s));
    }
    b.post(&format!("/console/t/{tenant}/keys"), &fields).await
}

/// The value of the secret input in the dialog.
fn secret_of(page: &Page) -> String {
    let at = page
        .text
        .find("id=\"secret-value\"")
        .unwrap_or_else(|| panic!("no secret dialog in page: {}", page.text));
    // A <textarea>: the secret is its content.
    let rest = &page.text[at..];
    between(rest, ">", "</textarea>").unwrap().to_owned()
}

#[tokio::test]
async fn roles_are_enforced_on_the_server() {
    let c = Console::start().await;
    let acme = c.server.tenant("Acme").await;
    let globex = c.server.tenant("Globex").await;
    c.member("owner@acme.test", &acme, Role::Owner).await;
    c.member("admin@acme.test", &acme, Role::Admin).await;
    c.member("dev@acme.test", &acme, Role::Developer).await;
    c.member("viewer@acme.test", &acme, Role::Viewer).await;
    c.member("owner@globex.test", &globex, Role::Owner).await;

    // Viewer: sees keys, changes nothing, even by crafted POSTs.
    let mut viewer = c.signed_in("viewer@acme.test").await;
    let (key_id, secret) = c.server.key(&acme, "backend", json!({})).await;
    let page = viewer.get(&format!("/console/t/{acme}/keys")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("backend"));
    assert!(!page.text.contains("Create key"));
    let created = create_key(&mut viewer, &acme, "sneaky", &[]).await;
    assert_eq!(created.status, StatusCode::FORBIDDEN);
    assert!(created.text.contains("Your role in Acme is viewer"));
    let csrf = viewer.csrf().await;
    for path in ["revoke", "rotate"] {
        let r = viewer
            .post(
                &format!("/console/t/{acme}/keys/{key_id}/{path}"),
                &[
                    ("_csrf", &csrf),
                    ("confirm_name", "backend"),
                    ("grace_seconds", "0"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        viewer.get(&format!("/console/t/{acme}/audit")).await.status,
        StatusCode::FORBIDDEN
    );
    let invite = viewer
        .post(
            &format!("/console/t/{acme}/members/invite"),
            &[
                ("_csrf", &csrf),
                ("email", "x@acme.test"),
                ("role", "viewer"),
            ],
        )
        .await;
    assert_eq!(invite.status, StatusCode::FORBIDDEN);
    assert_eq!(c.server.get("/v1/me", &secret).await.status, StatusCode::OK);

    // Developer: keys yes, members and audit no.
    let mut dev = c.signed_in("dev@acme.test").await;
    let created = create_key(&mut dev, &acme, "from-dev", &["vox:read"]).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(
        dev.get(&format!("/console/t/{acme}/audit")).await.status,
        StatusCode::FORBIDDEN
    );
    // A developer may grant keyward:keys:* (they hold it) but no other keyward scope.
    let escalate = create_key(&mut dev, &acme, "escalate", &["keyward:audit:read"]).await;
    let escalate = dev.follow(escalate).await;
    assert_eq!(escalate.status, StatusCode::FORBIDDEN);
    assert!(escalate
        .text
        .contains("Your role in this tenant may not grant keyward:audit:read"));

    // Admin: members, but not the owner role.
    let mut admin = c.signed_in("admin@acme.test").await;
    let csrf = admin.csrf().await;
    let owner_invite = admin
        .post(
            &format!("/console/t/{acme}/members/invite"),
            &[
                ("_csrf", &csrf),
                ("email", "new-owner@acme.test"),
                ("role", "owner"),
            ],
        )
        .await;
    let owner_invite = admin.follow(owner_invite).await;
    assert_eq!(owner_invite.status, StatusCode::UNPROCESSABLE_ENTITY);
    let dev_invite = admin
        .post(
            &format!("/console/t/{acme}/members/invite"),
            &[
                ("_csrf", &csrf),
                ("email", "new-dev@acme.test"),
                ("role", "developer"),
            ],
        )
        .await;
    assert_eq!(dev_invite.status, StatusCode::CREATED);
    let owner = c
        .store
        .find_user_by_email("owner@acme.test")
        .await
        .unwrap()
        .unwrap();
    let demote = admin
        .post(
            &format!("/console/t/{acme}/members/{}/role", owner.id),
            &[("_csrf", &csrf), ("role", "viewer")],
        )
        .await;
    assert_eq!(demote.status, StatusCode::FORBIDDEN);
    assert_eq!(
        admin.get(&format!("/console/t/{acme}/audit")).await.status,
        StatusCode::OK
    );

    // The last owner cannot be demoted, even by themselves.
    let mut own = c.signed_in("owner@acme.test").await;
    let csrf = own.csrf().await;
    let r = own
        .post(
            &format!("/console/t/{acme}/members/{}/role", owner.id),
            &[("_csrf", &csrf), ("role", "admin")],
        )
        .await;
    assert_eq!(r.location(), format!("/console/t/{acme}/members"));
    let r = own.follow(r).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text.contains("at least one owner"));

    // Another tenant's pages and keys do not exist for a member of Acme.
    let (globex_key, _) = c.server.key(&globex, "theirs", json!({})).await;
    for path in [
        format!("/console/t/{globex}/keys"),
        format!("/console/t/{globex}/members"),
        format!("/console/t/{globex}/keys/{globex_key}"),
        format!("/console/t/{acme}/keys/{globex_key}"),
    ] {
        assert_eq!(own.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let r = own
        .post(
            &format!("/console/t/{acme}/keys/{globex_key}/revoke"),
            &[("_csrf", &csrf), ("confirm_name", "theirs")],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Tenant creation is for operators only.
    let r = own
        .post("/console/tenants", &[("_csrf", &csrf), ("name", "Mine")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    c.user("ops@keyward.test", true).await;
    let mut ops = c.signed_in("ops@keyward.test").await;
    let csrf = ops.csrf().await;
    let r = ops
        .post(
            "/console/tenants",
            &[("_csrf", &csrf), ("name", "Initech"), ("id", "AC123")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), "/console/t/AC123/members?done=tenant_created");
    assert_eq!(
        ops.get(&format!("/console/t/{globex}/keys/{globex_key}"))
            .await
            .status,
        StatusCode::OK
    );
    // Even an operator reaches a key only under its own tenant.
    assert_eq!(
        ops.get(&format!("/console/t/{acme}/keys/{globex_key}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

/// The tenant's ceiling in the console: operators set it on the tenant's
/// settings page; members are offered only scopes within it and refused
/// outside it when creating, editing or rotating keys; operators are not.
#[tokio::test]
async fn grantable_scopes_bound_members_in_the_console() {
    let c = Console::start().await;
    let acme = c.server.tenant("Acme").await;
    c.member("dev@acme.test", &acme, Role::Developer).await;
    c.user("ops@keyward.test", true).await;
    let mut dev = c.signed_in("dev@acme.test").await;
    let mut ops = c.signed_in("ops@keyward.test").await;
    let settings = format!("/console/t/{acme}/settings");
    let ceiling = || async {
        c.server
            .get(&format!("/v1/tenants/{acme}"), &c.server.root)
            .await
            .body["grantable_scopes"]
            .clone()
    };

    // Only operators see and change the settings.
    let page = ops.get(&settings).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("Grantable scopes"));
    assert!(ops
        .get(&format!("/console/t/{acme}/keys"))
        .await
        .text
        .contains(&settings));
    assert_eq!(dev.get(&settings).await.status, StatusCode::FORBIDDEN);
    assert!(!dev
        .get(&format!("/console/t/{acme}/keys"))
        .await
        .text
        .contains(&settings));
    let csrf = dev.csrf().await;
    let r = dev
        .post(&settings, &[("_csrf", &csrf), ("ceiling", "none")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let csrf = ops.csrf().await;
    let r = ops
        .post(
            &settings,
            &[
                ("_csrf", &csrf),
                ("ceiling", "list"),
                ("grantable_scopes", "vox:* keyward:keys:read nope:x"),
            ],
        )
        .await;
    assert_eq!(
        r.location(),
        settings,
        "post-redirect-get to the form's page"
    );
    let r = ops.follow(r).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("“nope:x” is not a scope"), "{}", r.text);
    assert_eq!(ceiling().await, serde_json::Value::Null);
    let r = ops
        .post(
            &settings,
            &[
                ("_csrf", &csrf),
                ("ceiling", "list"),
                (
                    "grantable_scopes",
                    "vox:*  keyward:keys:read,keyward:keys:write",
                ),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(r.location(), format!("{settings}?done=updated"));
    assert_eq!(
        ceiling().await,
        json!(["keyward:keys:read", "keyward:keys:write", "vox:*"])
    );
    assert!(ops
        .get(&settings)
        .await
        .text
        .contains("value=\"keyward:keys:read keyward:keys:write vox:*\""));

    // The picker offers members only what they may grant; operators all.
    let new_page = format!("/console/t/{acme}/keys/new");
    let offered = dev.get(&new_page).await.text;
    assert!(offered.contains("value=\"vox:read\""));
    // keyward's own management scopes are offered to operators only.
    assert!(!offered.contains("value=\"keyward:keys:read\""));
    assert!(!offered.contains("value=\"vault:read\""));
    assert!(ops
        .get(&new_page)
        .await
        .text
        .contains("value=\"vault:read\""));

    // Members are refused outside the ceiling; nothing is created.
    let r = create_key(&mut dev, &acme, "premium", &["vox:read", "vault:read"]).await;
    let r = dev.follow(r).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.text.contains("vault:read is outside the scopes"),
        "{}",
        r.text
    );
    let r = create_key(&mut dev, &acme, "basic", &["vox:read"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Operators are not bound by it.
    let r = create_key(&mut ops, &acme, "premium", &["vault:read"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let keys = c
        .server
        .get(&format!("/v1/keys?tenant_id={acme}"), &c.server.root)
        .await;
    let ids: Vec<(String, String)> = keys.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_owned(),
                k["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    let id_of = |n: &str| ids.iter().find(|(name, _)| name == n).unwrap().1.clone();
    let (premium, basic) = (id_of("premium"), id_of("basic"));

    // A member may save a key that keeps what an operator granted, but not add to it.
    let edit = |scopes: &'static [&'static str]| {
        let mut fields = vec![
            ("name", "premium"),
            ("expiry", "keep"),
            ("enabled", "1"),
            ("ip_allowlist", ""),
        ];
        for s in scopes {
            fields.push(("scopes", s));
        }
        fields
    };
    let key_page = format!("/console/t/{acme}/keys/{premium}");
    let csrf = dev.csrf().await;
    let mut fields = edit(&["vault:read"]);
    fields.push(("_csrf", &csrf));
    let r = dev.post(&key_page, &fields).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let mut fields = edit(&["vault:read", "vault:write"]);
    fields.push(("_csrf", &csrf));
    let r = dev.post(&key_page, &fields).await;
    let r = dev.follow(r).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.text.contains("vault:write is outside the scopes"),
        "{}",
        r.text
    );
    // Rotating hands out a new secret: a grant, refused past the ceiling.
    let rotate = |kid: &str| format!("/console/t/{acme}/keys/{kid}/rotate");
    let r = dev
        .post(
            &rotate(&premium),
            &[("_csrf", &csrf), ("grace_seconds", "0")],
        )
        .await;
    let r = dev.follow(r).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.text.contains("vault:read is outside the scopes"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("secret-value"));
    let r = dev
        .post(&rotate(&basic), &[("_csrf", &csrf), ("grace_seconds", "0")])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // Without a ceiling, members grant every product scope again.
    let csrf = ops.csrf().await;
    let r = ops
        .post(
            &settings,
            &[
                ("_csrf", &csrf),
                ("ceiling", "none"),
                ("grantable_scopes", "vox:*"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(ceiling().await, serde_json::Value::Null);
    assert!(dev
        .get(&new_page)
        .await
        .text
        .contains("value=\"vault:read\""));
    let r = create_key(&mut dev, &acme, "now-allowed", &["vault:read"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// Post-redirect-get: a refused form answers 303 to its page with a flash
/// cookie; the page shows the refusal once, and only to the session that
/// made it (a flash copied into another session, or altered, is ignored).
#[tokio::test]
async fn refused_forms_redirect_and_show_their_refusal_once_to_their_session() {
    let c = Console::start().await;
    let acme = c.server.tenant("Acme").await;
    c.member("ann@acme.test", &acme, Role::Owner).await;
    c.member("bob@acme.test", &acme, Role::Owner).await;
    let mut ann = c.signed_in("ann@acme.test").await;
    let mut bob = c.signed_in("bob@acme.test").await;
    let new_page = format!("/console/t/{acme}/keys/new");

    let r = create_key(&mut ann, &acme, "", &["vox:read"]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.location(), new_page);
    let set: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    let flash = set
        .iter()
        .find(|c| c.starts_with("__Host-keyward_flash="))
        .unwrap_or_else(|| panic!("{set:?}"));
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Max-Age=60"] {
        assert!(flash.contains(attr), "{flash}");
    }
    let flash_pair = flash.split(';').next().unwrap().to_owned();

    // Bob's session with Ann's flash: not his, not shown.
    let bob_session = bob.cookie.clone().unwrap();
    bob.cookie = Some(format!("{bob_session}; {flash_pair}"));
    let page = bob.get(&new_page).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.text.contains("Give the key a name"));
    // Altered: ignored too.
    let altered = flash_pair.replacen("=", "=A", 1);
    let ann_session = ann.cookie.clone().unwrap();
    let ann_session = ann_session
        .split("; ")
        .find(|p| p.starts_with("__Host-keyward_session="))
        .unwrap()
        .to_owned();
    let mut forged = c.browser();
    forged.cookie = Some(format!("{ann_session}; {altered}"));
    assert!(!forged
        .get(&new_page)
        .await
        .text
        .contains("Give the key a name"));

    // Ann's own: shown once, with the scope she ticked, then gone.
    let page = ann.get(&new_page).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.text.contains("Give the key a name"), "{}", page.text);
    assert!(
        page.text.contains("value=\"vox:read\" checked"),
        "{}",
        page.text
    );
    assert!(
        page.headers
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().starts_with("__Host-keyward_flash=;")),
        "the page clears the flash"
    );
    let again = ann.get(&new_page).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(!again.text.contains("Give the key a name"));
}

/// The first invitation of a tenant without an owner is for an owner; the
/// page-not-found page keeps the console's frame for a signed-in user.
#[tokio::test]
async fn first_invitation_is_for_an_owner_and_404_keeps_the_frame() {
    let c = Console::start().await;
    let acme = c.server.tenant("Acme").await;
    c.user("ops@keyward.test", true).await;
    let mut ops = c.signed_in("ops@keyward.test").await;
    let members = format!("/console/t/{acme}/members");
    let page = ops.get(&members).await;
    assert!(page.text.contains("no owner yet"), "{}", page.text);
    assert!(
        page.text.contains("<option value=\"owner\" selected>"),
        "{}",
        page.text
    );
    c.member("own@acme.test", &acme, Role::Owner).await;
    let page = ops.get(&members).await;
    assert!(!page.text.contains("no owner yet"));
    assert!(page.text.contains("<option value=\"developer\" selected>"));

    let page = ops.get("/console/t/nope/keys").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.text.contains("class=\"topbar\""), "{}", page.text);
    let page = c.browser().get("/console/nothing-here").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!page.text.contains("class=\"topbar\""));
}

#[tokio::test]
async fn changes_need_this_sessions_csrf_token_and_this_origin() {
    let c = Console::start().await;
    let acme = c.server.tenant("Acme").await;
    c.member("owner@acme.test", &acme, Role::Owner).await;
    c.member("other@acme.test", &acme, Role::Owner).await;
    let mut b = c.signed_in("owner@acme.test").await;
    let mut other = c.signed_in("other@acme.test").await;
    let theirs = other.csrf().await;
    let mine = b.csrf().await;
    let path = format!("/console/t/{acme}/keys");
    for token in [None, Some(""), Some("0"), Some(theirs.as_str())] {
        let mut fields = vec![("name", "x"), ("environment", "test")];
        if let Some(t) = token {
            fields.push(("_csrf", t));
        }
        let r = b.post(&path, &fields).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{token:?}");
        assert!(r.text.contains("This form has expired"));
    }
    let ok = [
        ("_csrf", mine.as_str()),
        ("name", "x"),
        ("environment", "test"),
    ];
    // The right token from another site is refused too.
    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
    ] {
        let r = b.post_with(&path, &ok, &headers).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{headers:?}");
        assert!(r.text.contains("another site"));
    }
    // Sign-in too (no session to forge, but a login CSRF would plant one).
    let r = c
        .browser()
        .post_with(
            "/console/sign-in",
            &[("email", "owner@acme.test"), ("password", PASSWORD)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Same-origin, right token: created.
    let r = b
        .post_with(&path, &ok, &[("sec-fetch-site", "same-origin")])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Every console response forbids framing, inline script and caching.
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["x-frame-options"], "DENY");
}

#[tokio::test]
async fn sessions_end_when_idle_when_old_and_at_sign_out() {
    let mut config = default_config();
    config.console.session_idle_seconds = 1800;
    config.console.session_lifetime_seconds = 2 * 3600;
    let c = Console::start_with(config).await;
    let acme = c.server.tenant("Acme").await;
    c.member("owner@acme.test", &acme, Role::Owner).await;
    let keys = format!("/console/t/{acme}/keys");

    // Cookie attributes.
    let mut b = c.browser();
    let r = b.sign_in("owner@acme.test", PASSWORD).await;
    let set = r.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("__Host-keyward_session="), "{set}");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    // Only the token's hash is stored.
    let token = set
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    let stored = c
        .store
        .get_session(&KeyHash::of(&token).to_hex())
        .await
        .unwrap();
    assert!(stored.is_some());
    assert!(!file_contains(c.db.as_deref().unwrap(), &token));

    // Idle: each request restarts the idle timer...
    for _ in 0..4 {
        c.server.clock.advance_seconds(1700);
        assert_eq!(b.get(&keys).await.status, StatusCode::OK);
    }
    // ...until the absolute lifetime (2 h) ends it whatever the activity.
    c.server.clock.advance_seconds(1700);
    let r = b.get(&keys).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        r.location(),
        format!("/console/sign-in?next=%2Fconsole%2Ft%2F{acme}%2Fkeys")
    );

    // Idle for longer than the idle timeout.
    let mut b = c.signed_in("owner@acme.test").await;
    c.server.clock.advance_seconds(1801);
    assert_eq!(b.get(&keys).await.status, StatusCode::SEE_OTHER);

    // Sign-out deletes the session: the old cookie opens nothing.
    let mut b = c.signed_in("owner@acme.test").await;
    let old_cookie = b.cookie.clone();
    let page = b.get(&keys).await;
    assert_eq!(page.status, StatusCode::OK);
    let csrf = page.csrf();
    let r = b.post("/console/sign-out", &[("_csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    b.cookie = old_cookie;
    assert_eq!(b.get(&keys).await.status, StatusCode::SEE_OTHER);
    let r = b
        .post(
            &keys,
            &[("_csrf", &csrf), ("name", "x"), ("environment", "test")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("signed out"));
}

#[tokio::test]
async fn sign_in_failures_are_limited_per_account_and_per_address() {
    let mut config = default_config();
    config.console.login_max_failures_per_account = 3;
    config.console.login_max_failures_per_ip = 6;
    config.console.login_window_seconds = 600;
    let c = Console::start_with(config).await;
    c.user("ann@example.com", false).await;
    c.user("bob@example.com", false).await;
    let mut b = c.browser();

    // Wrong password and unknown account read the same.
    let wrong = b.sign_in("ann@example.com", "not the password").await;
    assert!(
        wrong.location().starts_with("/console/sign-in?failed="),
        "post-redirect-get: {}",
        wrong.location()
    );
    assert!(
        !wrong.location().contains("password"),
        "no password in the address"
    );
    let wrong = b.follow(wrong).await;
    let unknown = b.sign_in("nobody@example.com", "not the password").await;
    let unknown = b.follow(unknown).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.text.contains("The email or password is not right"));
    assert!(unknown.text.contains("The email or password is not right"));

    // The third failure for Ann pauses her account, even for the right password.
    b.sign_in("ann@example.com", "still wrong").await;
    let third = b.sign_in("ANN@example.com", "wrong again").await;
    let third = b.follow(third).await;
    assert_eq!(third.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(third
        .text
        .contains("Too many failed sign-in attempts for this account"));
    let right = b.sign_in("ann@example.com", PASSWORD).await;
    let right = b.follow(right).await;
    assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: i64 = right.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=600).contains(&retry), "{retry}");
    // Bob is not affected.
    assert_eq!(
        b.sign_in("bob@example.com", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );

    // After the window, Ann signs in.
    c.server.clock.advance_seconds(601);
    assert_eq!(
        b.sign_in("ann@example.com", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );

    // Per address: failures across many accounts add up.
    for i in 0..5 {
        let r = b.sign_in(&format!("guess{i}@example.com"), "x").await;
        let r = b.follow(r).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{i}");
    }
    let r = b.sign_in("guess9@example.com", "x").await;
    let r = b.follow(r).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text.contains("from your network address"));
    let r = b.sign_in("bob@example.com", PASSWORD).await;
    let r = b.follow(r).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn invitations_work_once_until_they_expire() {
    let c = Console::start().await;
    let acme = c.server.tenant("Acme").await;
    c.user("ops@keyward.test", true).await;
    let mut ops = c.signed_in("ops@keyward.test").await;
    let csrf = ops.csrf().await;
    let path = format!("/console/t/{acme}/members/invite");
    let r = ops
        .post(
            &path,
            &[
                ("_csrf", &csrf),
                ("email", "owner@acme.test"),
                ("role", "owner"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let token = between(&r.text, "/console/invite?token=", "\"")
        .unwrap()
        .to_owned();
    assert_eq!(r.headers["cache-control"], "no-store");
    // Stored as a hash; the link is not on the members page any more.
    assert!(c
        .store
        .find_invite(&KeyHash::of(&token).to_hex())
        .await
        .unwrap()
        .is_some());
    assert!(!ops
        .get(&format!("/console/t/{acme}/members"))
        .await
        .text
        .contains(&token));

    let mut guest = c.browser();
    let page = guest.get(&format!("/console/invite?token={token}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("Join Acme"));
    // Passwords are checked before anything is created.
    let short = guest
        .post(
            "/console/invite",
            &[
                ("token", &token),
                ("password", "short"),
                ("password_confirm", "short"),
            ],
        )
        .await;
    assert!(
        !short.location().contains("password="),
        "no password in the address"
    );
    let short = guest.follow(short).await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.text.contains("Choose a password of at least"));
    let differ = guest
        .post(
            "/console/invite",
            &[
                ("token", &token),
                ("password", PASSWORD),
                ("password_confirm", "other words here"),
            ],
        )
        .await;
    let differ = guest.follow(differ).await;
    assert_eq!(differ.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(differ.text.contains("The two passwords differ"));
    let ok = guest
        .post(
            "/console/invite",
            &[
                ("token", &token),
                ("name", "Olivia"),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.text);
    assert_eq!(
        ok.location(),
        "/console/sign-in?joined=1&email=owner%40acme.test"
    );
    let again = guest.get(&format!("/console/invite?token={token}")).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.text.contains("already used"));
    let mut owner = c.signed_in("owner@acme.test").await;
    let home = owner.get("/console").await;
    assert_eq!(home.location(), format!("/console/t/{acme}/keys"));

    // An invitation expires.
    let r = ops
        .post(
            &path,
            &[
                ("_csrf", &csrf),
                ("email", "late@acme.test"),
                ("role", "viewer"),
            ],
        )
        .await;
    let late = between(&r.text, "/console/invite?token=", "\"")
        .unwrap()
        .to_owned();
    c.server.clock.advance_seconds(72 * 3600 + 1);
    let page = guest.get(&format!("/console/invite?token={late}")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.text.contains("expired"));
    // A made-up token says nothing more.
    let page = guest.get("/console/invite?token=made-up").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_secret_is_only_in_the_create_and_rotate_responses() {
    let c = Console::start().await;
    let acme = c.server.tenant("Acme").await;
    c.member("owner@acme.test", &acme, Role::Owner).await;
    let mut b = c.signed_in("owner@acme.test").await;
    let r = create_key(&mut b, &acme, "backend", &["vox:read", "vox:calls:create"]).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    let secret = secret_of(&r);
    assert!(secret.starts_with("kw_test_"));
    // How to send it: this deployment's ways (all three by default).
    assert!(
        r.text.contains("Send it as <code>Authorization: Bearer &lt;secret&gt;</code>, in the <code>X-API-Key</code> header, or with HTTP Basic"),
        "{}",
        r.text
    );
    assert_eq!(
        r.text.matches(&secret).count(),
        1,
        "shown once, in the dialog"
    );
    let key_id = between(&r.text, "id=\"key-id\">", "<").unwrap().to_owned();
    let me = c.server.get("/v1/me", &secret).await;
    assert_eq!(me.body["key_id"], key_id);
    assert_eq!(me.body["scopes"], json!(["vox:calls:create", "vox:read"]));

    // Duplicate name: refused with a clear message, no key made.
    let dup = create_key(&mut b, &acme, "backend", &[]).await;
    assert_eq!(dup.location(), format!("/console/t/{acme}/keys/new"));
    let dup = b.follow(dup).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert!(dup
        .text
        .contains("A key named “backend” already exists in Acme"));
    assert!(!dup.text.contains("secret-value"));

    // Rotation: a new secret, once; the old one keeps its grace.
    let csrf = b.csrf().await;
    let r = b
        .post(
            &format!("/console/t/{acme}/keys/{key_id}/rotate"),
            &[("_csrf", &csrf), ("grace_seconds", "3600")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let rotated = secret_of(&r);
    let new_id = between(&r.text, "id=\"key-id\">", "<").unwrap().to_owned();
    assert_ne!(new_id, key_id);
    assert_ne!(rotated, secret);
    assert!(r.text.contains("The previous secret keeps working until"));
    assert_eq!(c.server.get("/v1/me", &secret).await.status, StatusCode::OK);
    c.server.clock.advance_seconds(3601);
    let old = c.server.get("/v1/me", &secret).await;
    old.assert_problem(401, "expired_api_key");
    assert_eq!(
        c.server.get("/v1/me", &rotated).await.status,
        StatusCode::OK
    );

    // Nowhere else: pages, audit, the database.
    let mut b = c.signed_in("owner@acme.test").await;
    for path in [
        format!("/console/t/{acme}/keys"),
        format!("/console/t/{acme}/keys/{key_id}"),
        format!("/console/t/{acme}/audit"),
    ] {
        let page = b.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            !page.text.contains(&secret) && !page.text.contains(&rotated),
            "{path}"
        );
    }
    // Revoke needs the name typed.
    let csrf = b.csrf().await;
    let detail = b.get(&format!("/console/t/{acme}/keys/{key_id}")).await;
    assert!(detail.text.contains("This key was rotated"));
    let r = b
        .post(
            &format!("/console/t/{acme}/keys/{new_id}/revoke"),
            &[("_csrf", &csrf), ("confirm_name", "wrong")],
        )
        .await;
    let r = b.follow(r).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("Nothing was revoked"));
    // The refusal is shown once: the next view of the page is plain.
    let again = b.get(&format!("/console/t/{acme}/keys/{new_id}")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(!again.text.contains("Nothing was revoked"));
    assert_eq!(
        c.server.get("/v1/me", &rotated).await.status,
        StatusCode::OK
    );
    let r = b
        .post(
            &format!("/console/t/{acme}/keys/{new_id}/revoke"),
            &[
                ("_csrf", &csrf),
                ("confirm_name", "backend"),
                ("reason", "test"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    c.server
        .get("/v1/me", &rotated)
        .await
        .assert_problem(401, "revoked_api_key");
    for s in [&secret, &rotated] {
        assert!(!file_contains(c.db.as_deref().unwrap(), s));
    }
}

#[tokio::test]
async fn the_keys_list_filters_and_pages() {
    let c = Console::start().await;
    let acme = c.server.tenant("Acme").await;
    c.member("viewer@acme.test", &acme, Role::Viewer).await;
    for i in 0..23 {
        c.server.key(&acme, &format!("key-{i:02}"), json!({})).await;
    }
    c.server
        .key(&acme, "live-one", json!({ "environment": "live" }))
        .await;
    let mut b = c.signed_in("viewer@acme.test").await;
    let rows = |p: &Page| {
        p.text
            .matches(&format!(
                "class=\"strong\" href=\"/console/t/{acme}/keys/key_"
            ))
            .count()
    };
    let base = format!("/console/t/{acme}/keys");
    let first = b.get(&base).await;
    assert_eq!(rows(&first), 20);
    assert!(first.text.contains("live-one"), "newest first");
    let cursor = between(&first.text, "keys?cursor=", "\"")
        .unwrap()
        .to_owned();
    let second = b.get(&format!("{base}?cursor={cursor}")).await;
    assert_eq!(rows(&second), 4);
    assert!(second.text.contains("First page"));
    assert!(!second.text.contains("Next page"));
    let live = b.get(&format!("{base}?environment=live")).await;
    assert_eq!(rows(&live), 1);
    assert!(live.text.contains("live-one"));
    let none = b.get(&format!("{base}?status=revoked")).await;
    assert_eq!(rows(&none), 0);
    assert!(none.text.contains("No keys match these filters"));
    let bad = b.get(&format!("{base}?status=bogus")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("Clear the filters"));
}

fn file_contains(db: &Path, needle: &str) -> bool {
    let dir = db.parent().unwrap();
    std::fs::read_dir(dir).unwrap().any(|e| {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

#[test]
fn users_create_reads_the_password_from_stdin_never_argv() {
    let dir = crate::kit::temp_dir("users");
    let run = |args: &[&str], stdin: &str| {
        crate::kit::run_with_stdin(
            Command::new(BIN).args(args).arg("--data-dir").arg(&dir),
            stdin,
        )
    };
    let ok = run(
        &[
            "users",
            "create",
            "--email",
            "Ops@Example.com",
            "--operator",
            "--password-stdin",
        ],
        "a long operator passphrase\n",
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stderr).contains("Created operator ops@example.com"));
    let dup = run(
        &[
            "users",
            "create",
            "--email",
            "ops@example.com",
            "--password-stdin",
        ],
        "another long passphrase\n",
    );
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let short = run(
        &[
            "users",
            "create",
            "--email",
            "x@example.com",
            "--password-stdin",
        ],
        "short\n",
    );
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("10 to 1024 characters"));
    // No terminal and no --password-stdin: refused, with what to do.
    let no_tty = run(&["users", "create", "--email", "y@example.com"], "");
    assert!(!no_tty.status.success());
    assert!(String::from_utf8_lossy(&no_tty.stderr).contains("--password-stdin"));
    let list = run(&["users", "list"], "");
    let out = String::from_utf8_lossy(&list.stdout);
    assert!(out.contains("ops@example.com\toperator"), "{out}");
    assert!(!out.contains("x@example.com"));
    // The password is nowhere in the store.
    let db = std::fs::read(dir.join("keyward.db")).unwrap();
    let needle = b"a long operator passphrase";
    assert!(!db.windows(needle.len()).any(|w| w == needle));
}

/// The browser suite (`console-tests/`, Playwright + Debian's Chromium)
/// against this build's binary. CI installs both (`.ci/run`); elsewhere,
/// without them, this fails with the commands to install them, unless
/// `KEYWARD_TEST_SKIP_BROWSER=1` (refused when `CI` is set).
#[test]
fn browser_end_to_end() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../console-tests");
    let dir = dir.canonicalize().unwrap();
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let skip = std::env::var_os("KEYWARD_TEST_SKIP_BROWSER").is_some_and(|v| v == "1");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [
        (
            Command::new("node").arg("--version").output().is_err(),
            "node",
        ),
        (!Path::new(&chromium).exists(), "chromium"),
        (
            !dir.join("node_modules/playwright-core").exists(),
            "console-tests/node_modules",
        ),
    ]
    .into_iter()
    .filter_map(|(m, what)| m.then_some(what))
    .collect();
    if !missing.is_empty() {
        if skip && !ci {
            eprintln!(
                "Skipping the browser tests (KEYWARD_TEST_SKIP_BROWSER=1): missing {missing:?}."
            );
            return;
        }
        panic!(
            "The console's browser tests need {missing:?}. Install them with \
             `apt-get install -y chromium nodejs npm && (cd console-tests && npm ci)`, \
             or set KEYWARD_TEST_SKIP_BROWSER=1 outside CI to skip them."
        );
    }
    let shots = std::env::var("KEYWARD_TEST_SCREENSHOTS")
        .unwrap_or_else(|_| crate::kit::temp_dir("screens").display().to_string());
    let out = Command::new("node")
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            "tests/",
        ])
        .current_dir(&dir)
        .env("KEYWARD_TEST_BIN", BIN)
        .env("CHROMIUM", &chromium)
        .env("KEYWARD_TEST_SCREENSHOTS", &shots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser tests failed:\n{stdout}\n{stderr}"
    );
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("ℹ tests") || l.starts_with("ℹ pass") || l.starts_with("ℹ fail"))
        .collect();
    println!("browser tests: {}", summary.join(", "));
    assert!(stdout.contains("ℹ fail 0"), "{stdout}");
}
