//! Who is asking: one authentication layer for the API and the view.
//!
//! In: `Authorization: Bearer <api token>` (any of the named tokens, `api.tokens`, or the shared
//! `api.token_file`, named `api`), or the cookie of a session opened at `/login` with a token or
//! through the OpenID provider ([`super::oidc`]). Out: the request's [`Viewer`] (or none) in its
//! extensions, or a refusal.
//!
//! - Reads need a viewer only with `view.require_token`; writes always do, and with
//!   `auth.write_groups` one in those groups. The API's writes take a bearer token only (a cookie
//!   is ambient authority); the view's forms take a session, whose CSRF token and `Origin` the
//!   handler checks with [`Viewer::check_form`], or a token.
//! - Probes ([`Access::Probe`], `/readyz`) answer everyone; the handler says more to a viewer.
//!   `/metrics` ([`Access::Metrics`]) is a read that `metrics.token_file`'s token also opens, and
//!   that needs a token whenever that file is set.
//! - Tokens are read at start and again on SIGHUP; a presented token is compared, by its keyed
//!   fingerprint and in constant time, with every one of them.
//! - Wrong tokens — at `/login` and as bearer tokens — are guesses: they are logged (never the
//!   token) and throttled per client, and a flood from many clients holds back those that failed
//!   in it ([`Throttle`]); a throttled client gets 429 with `Retry-After` before its token is even
//!   compared. A client that did not fail is never held back by others' failures. The throttle is
//!   each replica's own: behind a load balancer, a guesser gets up to one allowance per replica.
//! - Sessions are cookies sealed with the replicas' shared key ([`super::session`]), checked
//!   against the revocation record ([`super::revoke`]) so a sign-out ends them everywhere; one a
//!   token opened ends as soon as that token is rotated. The cookie is HttpOnly,
//!   SameSite=Strict, and `Secure` (with the `__Host-` prefix) when `view.public_url` is https.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use subtle::ConstantTimeEq;
use tracing::{error, info, warn};

use super::App;
use super::guard::{ConnInfo, client_key};
use super::revoke::{Revocations, RevokeError};
use super::session::{self, Claims, Keys, SessionError, Via, hex};
use crate::config::{ApiToken, Config, StateBackend, read_secret};
use crate::daemon::audit;
use crate::daemon::management::Management;

/// How long a session lasts (and so, how long the revocation record keeps an entry).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The cookie's purpose, bound into its seal.
const SESSION: &str = "session";

/// What a route does: read state, or change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Anyone; the request's viewer, if any, is passed on (`/readyz` says more to one).
    Probe,
    /// A read that the metrics token opens too, and that needs a token when one is configured.
    Metrics,
}

/// Who a refusal is for: API clients get JSON, browsers a way to sign in, the live table's
/// script a bare status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Api,
    Page,
    Fragment,
}

/// Who someone is: a token's name or the provider's user name, their groups, and what is
/// recorded with their actions.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    /// What a holder of the shared token said their name is (at sign-in, or `by`).
    pub note: Option<String>,
    pub groups: Vec<String>,
    /// `name`, or `name (note)`: what approvals and the log record.
    recorded: String,
    /// Whether it may act (`auth.write_groups`), set by the authentication layer: the view
    /// offers actions only to those who may.
    pub may_write: bool,
}

impl Identity {
    pub fn new(name: &str, note: Option<&str>, groups: Vec<String>) -> Identity {
        let recorded = match note {
            Some(note) => format!("{name} ({note})"),
            None => name.to_string(),
        };
        Identity { name: name.to_string(), note: note.map(str::to_string), groups, recorded, may_write: true }
    }

    /// `name`, or `name (note)`.
    pub fn recorded(&self) -> &str {
        &self.recorded
    }
}

/// Someone who showed a token, now or at sign-in, or signed in through the provider.
#[derive(Clone, Debug)]
pub enum Viewer {
    Session {
        identity: Identity,
        csrf: String,
        claims: Box<Claims>,
    },
    /// A bearer token; `shared` for `api.token_file`, whose holders name themselves with `by`.
    Token {
        identity: Identity,
        shared: bool,
    },
}

impl Viewer {
    pub fn identity(&self) -> &Identity {
        match self {
            Viewer::Session { identity, .. } | Viewer::Token { identity, .. } => identity,
        }
    }

    fn identity_mut(&mut self) -> &mut Identity {
        match self {
            Viewer::Session { identity, .. } | Viewer::Token { identity, .. } => identity,
        }
    }

    /// What actions are recorded with: the identity's name, with the shared token's note.
    pub fn name(&self) -> &str {
        self.identity().recorded()
    }

    /// The viewer with `by` (from an API request's body) as the note, for the shared token only:
    /// a named token is who it is.
    pub fn saying(&self, by: Option<&str>) -> Viewer {
        match (self, by) {
            (Viewer::Token { identity, shared: true }, Some(by)) => Viewer::Token {
                identity: Identity::new(&identity.name, Some(by), identity.groups.clone()),
                shared: true,
            },
            _ => self.clone(),
        }
    }

    /// A form posted with a session must come from a page of this site: it carries the session's
    /// CSRF token, and the browser did not call it cross-site (`Origin` names a host this daemon
    /// serves: [`super::guard::from_this_site`]). Token holders are not ambient: their requests
    /// cannot be forged by another site.
    pub fn check_form(&self, from_this_site: bool, csrf: Option<&str>) -> Result<(), &'static str> {
        let Viewer::Session { csrf: expected, .. } = self else { return Ok(()) };
        let token_ok = bool::from(csrf.unwrap_or("").as_bytes().ct_eq(expected.as_bytes()));
        if from_this_site && token_ok {
            Ok(())
        } else {
            Err("This form did not come from a page of this site (CSRF check failed). Reload the page and try again.")
        }
    }
}

/// Why credentials were not accepted.
#[derive(Debug)]
pub enum Refusal {
    /// Too many wrong tokens lately from this client, or it failed during a flood of them from
    /// many clients: wait this long.
    Throttled(Duration),
    Wrong,
    /// No API token configured: nobody signs in with one.
    NoToken,
    Unreadable,
    /// Signed in, but in none of `auth.write_groups`.
    NotAllowed,
}

impl Refusal {
    pub fn retry_after(wait: Duration) -> HeaderValue {
        HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    fn into_response(self, audience: Audience) -> Response {
        let (code, message) = match &self {
            Refusal::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "too many wrong tokens; wait and try again"),
            Refusal::Wrong => (StatusCode::UNAUTHORIZED, "missing or wrong bearer token"),
            Refusal::NoToken => (
                StatusCode::FORBIDDEN,
                "this daemon has no API token configured (api.token_file, api.tokens), so nobody signs in with one",
            ),
            Refusal::Unreadable => (StatusCode::INTERNAL_SERVER_ERROR, "the API token file is unreadable"),
            Refusal::NotAllowed => {
                (StatusCode::FORBIDDEN, "you are in none of the groups that may act here (auth.write_groups)")
            }
        };
        let mut response = match audience {
            Audience::Api => super::error(code, message),
            Audience::Page | Audience::Fragment => super::text(code, format!("{message}\n")),
        };
        if let Refusal::Throttled(wait) = self {
            response.headers_mut().insert(header::RETRY_AFTER, Refusal::retry_after(wait));
        }
        if code == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"strata\""));
        }
        response
    }
}

/// A configured token as last read: its keyed fingerprint, or none while its file is unreadable.
struct Loaded {
    config: ApiToken,
    fingerprint: Option<[u8; 32]>,
}

pub struct Auth {
    tokens: RwLock<Vec<Loaded>>,
    /// `metrics.token_file`: a token that opens `/metrics` and nothing else.
    metrics_token_file: Option<PathBuf>,
    pub require_token: bool,
    write_groups: Option<Vec<String>>,
    throttle: Throttle,
    /// Derived from the replicas' shared key; a key of this process alone when that could not
    /// be had (then tokens work, and nobody can sign in: `sessions` is false).
    pub keys: Keys,
    sessions: bool,
    revocations: Revocations,
    /// Session cookies are `Secure` (the view is served over HTTPS).
    secure: bool,
}

/// The session key's file on a single host, beside the state database.
pub const KEY_FILE: &str = "session.key";

impl Auth {
    pub fn new(config: &Config) -> Auth {
        let management = match config.state_backend {
            StateBackend::Kubernetes => Management::current(),
            StateBackend::Sqlite => None,
        };
        // Either error says where the key is and what to do; its cause stays its source.
        let secret: Result<_, Box<dyn std::error::Error>> = match &management {
            Some(mgmt) => mgmt.session_key().map_err(Into::into),
            None => session::key_file(&config.state_dir.join(KEY_FILE)).map_err(Into::into),
        };
        let (keys, sessions) = match secret {
            Ok(secret) => (Keys::new(&secret), true),
            Err(e) => {
                error!(error = %e, "The session key cannot be had: nobody can sign in to the view (API tokens still work).");
                (Keys::new(&session::random()), false)
            }
        };
        let revocations = match management {
            Some(mgmt) => Revocations::kube(mgmt, SESSION_LIFETIME),
            None => Revocations::file(&config.state_dir, SESSION_LIFETIME),
        };
        let tokens = config
            .api_tokens
            .iter()
            .map(|t| {
                let fingerprint = match read_secret(&t.file) {
                    Ok(token) if !token.is_empty() => Some(keys.fingerprint(&token)),
                    Ok(_) => {
                        error!(token = %t.name, "API token {} is empty: nobody gets in with it.", t.name);
                        None
                    }
                    Err(e) => {
                        error!(token = %t.name, error = %e, "API token {} is unreadable: nobody gets in with it.", t.name);
                        None
                    }
                };
                Loaded { config: t.clone(), fingerprint }
            })
            .collect();
        Auth {
            tokens: RwLock::new(tokens),
            metrics_token_file: config.metrics_token_file.clone(),
            require_token: config.view.require_token,
            write_groups: config.auth.write_groups.clone(),
            throttle: Throttle::default(),
            keys,
            sessions,
            revocations,
            secure: config.view.public_url.as_ref().is_some_and(|u| u.https),
        }
    }

    /// Whether any API token is configured (the sign-in form offers the token).
    pub fn has_tokens(&self) -> bool {
        !self.tokens.read().expect("tokens lock").is_empty()
    }

    /// Reads every token file again (SIGHUP). A token that changed ends the sessions it opened:
    /// here at once (their fingerprint no longer matches), on other replicas through the
    /// revocation record. An unreadable file keeps the token it held.
    pub async fn reload_tokens(&self) {
        let mut changed = Vec::new();
        {
            let mut tokens = self.tokens.write().expect("tokens lock");
            for token in tokens.iter_mut() {
                let name = token.config.name.clone();
                match read_secret(&token.config.file) {
                    Ok(value) if !value.is_empty() => {
                        let new = self.keys.fingerprint(&value);
                        if token.fingerprint.is_some_and(|old| !bool::from(old.ct_eq(&new))) {
                            changed.push(name.clone());
                        }
                        token.fingerprint = Some(new);
                    }
                    Ok(_) => error!(token = %name, "SIGHUP: API token {name} is empty; the one read before stays."),
                    Err(e) => {
                        error!(token = %name, error = %e, "SIGHUP: API token {name} is unreadable; the one read before stays.")
                    }
                }
            }
        }
        info!(changed = ?changed, "SIGHUP: API tokens read again.");
        if !changed.is_empty() {
            let keys: Vec<String> = changed.iter().map(|n| self.keys.principal(&session::token_principal(n))).collect();
            if let Err(e) = self.revocations.raise(&keys).await {
                error!(error = %e, "Rotated tokens' sessions end on this replica only: the revocation record cannot be written.");
            }
        }
    }

    /// The metrics token as its file holds it now; `None` when none is configured or it is empty.
    fn metrics_token(&self) -> Result<Option<String>, Refusal> {
        let Some(file) = &self.metrics_token_file else { return Ok(None) };
        let token = read_secret(file).map_err(|e| {
            error!(error = %e, "The metrics token is unreadable: only the API token opens /metrics.");
            Refusal::Unreadable
        })?;
        Ok(Some(token).filter(|t| !t.is_empty()))
    }

    /// Checks a presented API token; a wrong one counts against `client`. `context` says where it
    /// was presented, for the log. Returns whose it is.
    pub fn verify(&self, client: IpAddr, given: &str, context: &str) -> Result<Viewer, Refusal> {
        match self.check(client, given, context, false)? {
            Token::Api(viewer) => Ok(viewer),
            Token::Metrics => Err(Refusal::Wrong),
        }
    }

    /// Checks a presented token against every API token and, with `metrics`, the metrics token.
    /// Returns which one it is.
    ///
    /// The throttle comes first. A client it holds back gets 429 whatever it sends, the right
    /// token included: were the right token let through before the throttle, a throttled client
    /// could tell a right guess (200) from a wrong one (429) as fast as it can send them, and the
    /// throttle would slow nothing. Its price: someone at the same address as a guesser (behind
    /// one NAT or proxy) waits too. Clients the throttle does not hold — every client that did not
    /// fail lately, whatever others did — are compared, so their right token is never refused.
    fn check(&self, client: IpAddr, given: &str, context: &str, metrics: bool) -> Result<Token, Refusal> {
        self.throttle.check(client, Instant::now()).map_err(Refusal::Throttled)?;
        let scrape = if metrics { self.metrics_token() } else { Ok(None) };
        // Fingerprints have one length, so a comparison says nothing about a token's; every
        // token is compared whatever the others say.
        let given = self.keys.fingerprint(given);
        let tokens = self.tokens.read().expect("tokens lock");
        let mut hit = None;
        for (i, token) in tokens.iter().enumerate() {
            let equal = token.fingerprint.as_ref().map_or(subtle::Choice::from(0), |f| given.ct_eq(f));
            if bool::from(equal) {
                hit = Some(i);
            }
        }
        let is_scrape = scrape
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .is_some_and(|t| bool::from(given.ct_eq(&self.keys.fingerprint(t))));
        if let Some(i) = hit {
            let config = &tokens[i].config;
            let identity = Identity::new(&config.name, None, config.groups.clone());
            return Ok(Token::Api(Viewer::Token { identity, shared: config.shared }));
        }
        if is_scrape {
            return Ok(Token::Metrics);
        }
        // Nothing to compare with is no guess: say why nobody gets in.
        let usable = tokens.iter().any(|t| t.fingerprint.is_some());
        let api = if tokens.is_empty() {
            Err(Refusal::NoToken)
        } else if !usable {
            Err(Refusal::Unreadable)
        } else {
            Ok(())
        };
        match (api, scrape) {
            (Err(refusal), Ok(None)) => return Err(refusal),
            (Err(_), Err(refusal)) => return Err(refusal),
            _ => {}
        }
        drop(tokens);
        self.throttle.fail(client, Instant::now());
        warn!(client = %client, via = context, "Wrong API token refused.");
        Err(Refusal::Wrong)
    }

    /// Whether sessions can be opened (the shared key was had).
    pub fn sessions(&self) -> bool {
        self.sessions
    }

    /// Opens a session for `identity`, signed in `via` a token or the provider: the Set-Cookie
    /// value. Reads the revocation record fresh, so a sign-in right after a sign-out holds.
    pub async fn open_session(&self, identity: &Identity, via: Via) -> Result<HeaderValue, SessionError> {
        if !self.sessions {
            return Err(SessionError::NoKey);
        }
        let principal = session::principal(&via, identity.note.as_deref());
        let mut keys = vec![self.keys.principal(&principal)];
        if let Via::Token { name, .. } = &via {
            keys.push(self.keys.principal(&session::token_principal(name)));
        }
        let generations = self.revocations.generations(&keys, true).await?;
        let now = crate::daemon::store::now_ms() / 1000;
        let claims = Claims {
            name: identity.name.clone(),
            note: identity.note.clone(),
            groups: session::clean_groups(identity.groups.iter().cloned()),
            token_generation: matches!(via, Via::Token { .. }).then(|| generations[1]),
            via,
            sid: hex(&session::random::<16>()),
            iat: now,
            exp: now + SESSION_LIFETIME.as_secs() as i64,
            generation: generations[0],
        };
        let sealed = self.keys.seal(SESSION, &claims);
        if sealed.len() > session::MAX_COOKIE {
            return Err(SessionError::TooLarge(sealed.len()));
        }
        Ok(self.cookie(Some(&sealed)))
    }

    /// The fingerprint of token `name` as read now, hex; what a session it opens carries.
    pub fn token_fingerprint(&self, name: &str) -> Option<String> {
        let tokens = self.tokens.read().expect("tokens lock");
        tokens.iter().find(|t| t.config.name == name).and_then(|t| t.fingerprint).map(|f| hex(&f))
    }

    /// Ends every session of the principal behind `claims`, on every replica.
    pub async fn end_session(&self, claims: &Claims) -> Result<(), RevokeError> {
        self.revocations.raise(&[self.keys.principal(&claims.principal())]).await
    }

    /// The live session in a cookie: sealed with the shared key, not expired, its token (if a
    /// token opened it) as read now, and not ended by a sign-out or rotation.
    async fn session(&self, value: &str) -> Option<Viewer> {
        if !self.sessions {
            return None;
        }
        let claims: Claims = self.keys.open(SESSION, value)?;
        let now = crate::daemon::store::now_ms() / 1000;
        if claims.exp <= now {
            return None;
        }
        let mut keys = vec![self.keys.principal(&claims.principal())];
        if let Via::Token { name, fp } = &claims.via {
            let current = self.token_fingerprint(name)?;
            if !bool::from(current.as_bytes().ct_eq(fp.as_bytes())) {
                return None;
            }
            keys.push(self.keys.principal(&session::token_principal(name)));
        }
        let generations = match self.revocations.generations(&keys, false).await {
            Ok(generations) => generations,
            Err(e) => {
                warn!(error = %e, "Session refused: the revocation record cannot be read.");
                return None;
            }
        };
        let live = claims.generation >= generations[0]
            && generations.get(1).is_none_or(|g| claims.token_generation.is_some_and(|t| t >= *g));
        if !live {
            return None;
        }
        let identity = Identity::new(&claims.name, claims.note.as_deref(), claims.groups.clone());
        Some(Viewer::Session { identity, csrf: self.keys.csrf(&claims.sid), claims: Box::new(claims) })
    }

    fn cookie_name(&self, base: &str) -> String {
        // `__Host-`: a browser takes the cookie only when Secure, for this host, for every path.
        if self.secure { format!("__Host-{base}") } else { base.to_string() }
    }

    /// The Set-Cookie value of a session (or, with `None`, of its removal).
    pub fn cookie(&self, value: Option<&str>) -> HeaderValue {
        self.make_cookie("strata_session", value, SESSION_LIFETIME, SameSite::Strict)
    }

    /// A cookie of this site: HttpOnly, for every path, Secure when the view is served over HTTPS.
    pub fn make_cookie(&self, base: &str, value: Option<&str>, lifetime: Duration, same_site: SameSite) -> HeaderValue {
        let lifetime = if value.is_some() { lifetime.as_secs() as i64 } else { 0 };
        let cookie = Cookie::build((self.cookie_name(base), value.unwrap_or("")))
            .path("/")
            .http_only(true)
            .same_site(same_site)
            .secure(self.secure)
            .max_age(cookie::time::Duration::seconds(lifetime));
        HeaderValue::try_from(cookie.to_string()).expect("base64 values make a valid header")
    }

    /// The value of this site's cookie `base` in a request.
    pub fn read_cookie(&self, headers: &HeaderMap, base: &str) -> Option<String> {
        let name = self.cookie_name(base);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .flat_map(Cookie::split_parse)
            .flatten()
            .find(|c| c.name() == name)
            .map(|c| c.value().to_string())
    }

    /// Whether `viewer` may act: anyone signed in, or with `auth.write_groups` someone in one.
    fn may_write(&self, viewer: &Viewer) -> bool {
        match &self.write_groups {
            None => true,
            Some(allowed) => viewer.identity().groups.iter().any(|g| allowed.contains(g)),
        }
    }

    /// The viewer a request's credentials show, none, or why they are refused. With `metrics`,
    /// the metrics token is taken too: it shows no viewer, only that it was right.
    async fn identify(&self, headers: &HeaderMap, client: IpAddr, metrics: bool) -> Result<Shown, Refusal> {
        if let Some(authorization) = headers.get(header::AUTHORIZATION) {
            let bearer = authorization
                .to_str()
                .ok()
                .and_then(|a| a.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            return match bearer {
                Some(token) => match self.check(client, token, "bearer token", metrics)? {
                    Token::Api(viewer) => Ok(Shown::Viewer(viewer)),
                    Token::Metrics => Ok(Shown::MetricsToken),
                },
                None => Err(Refusal::Wrong),
            };
        }
        let session = match self.read_cookie(headers, "strata_session") {
            Some(value) => self.session(&value).await,
            None => None,
        };
        Ok(session.map_or(Shown::Nothing, Shown::Viewer))
    }
}

/// Which token was presented.
enum Token {
    Api(Viewer),
    Metrics,
}

/// What a request's credentials show.
enum Shown {
    Nothing,
    Viewer(Viewer),
    /// The metrics token: `/metrics`, nothing else.
    MetricsToken,
}

/// Puts `routes` behind the authentication layer.
pub fn guard(app: &Arc<App>, routes: Router<Arc<App>>, access: Access, audience: Audience) -> Router<Arc<App>> {
    routes.route_layer(from_fn_with_state((app.clone(), access, audience), authenticate))
}

async fn authenticate(
    State((app, access, audience)): State<(Arc<App>, Access, Audience)>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req.extensions().get::<ConnInfo>().map(|c| c.peer);
    let client = peer.map(|p| p.ip()).unwrap_or(Ipv4Addr::UNSPECIFIED.into());
    // A write refused here is in the audit trail: who (if anyone showed), where to, and why.
    let via = match audience {
        Audience::Api => audit::Via::of_api(req.headers()),
        Audience::Page | Audience::Fragment => audit::Via::View,
    };
    let target = format!("{} {}", req.method(), req.uri().path());
    let refused_write = async |who: &str, why: &str| {
        if access == Access::Write {
            let entry = audit::Entry::new("write", audit::Outcome::Refused, who, via, peer);
            audit::record(&app.shared, entry.detail(format!("{target}: {why}"))).await;
        }
    };
    let shown = match app.auth.identify(req.headers(), client, access == Access::Metrics).await {
        Ok(shown) => shown,
        Err(refusal) => {
            if !matches!(refusal, Refusal::Throttled(_)) {
                refused_write("-", &format!("{refusal:?}")).await;
            }
            return refusal.into_response(audience);
        }
    };
    let allowed = match (access, &shown) {
        (Access::Probe, _) => true,
        (Access::Metrics, Shown::Nothing) => !app.auth.require_token && app.auth.metrics_token_file.is_none(),
        (Access::Metrics, _) => true,
        (Access::Read, Shown::Nothing) => !app.auth.require_token,
        (Access::Read, Shown::Viewer(_)) => true,
        (Access::Write, Shown::Viewer(Viewer::Token { .. })) => true,
        (Access::Write, Shown::Viewer(_)) => audience != Audience::Api,
        // The metrics token opens `/metrics` only (and `identify` shows it nowhere else).
        (Access::Read | Access::Write, Shown::MetricsToken) | (Access::Write, Shown::Nothing) => false,
    };
    let viewer = match shown {
        Shown::Viewer(mut viewer) => {
            let may_write = app.auth.may_write(&viewer);
            viewer.identity_mut().may_write = may_write;
            Some(viewer)
        }
        Shown::Nothing | Shown::MetricsToken => None,
    };
    if !allowed {
        refused_write("-", "no credentials").await;
        return match audience {
            Audience::Page => super::view::to_login(req.method(), req.uri()),
            _ => Refusal::Wrong.into_response(audience),
        };
    }
    if access == Access::Write
        && let Some(viewer) = &viewer
        && !app.auth.may_write(viewer)
    {
        warn!(user = ?viewer.name(), path = %req.uri().path(), "Refused: in none of auth.write_groups.");
        refused_write(viewer.name(), "in none of auth.write_groups").await;
        return Refusal::NotAllowed.into_response(audience);
    }
    req.extensions_mut().insert(viewer);
    next.run(req).await.into_response()
}

/// Reads the API tokens again on every SIGHUP, for as long as the daemon runs.
pub fn reload_on_sighup(app: &Arc<App>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        error!("Cannot listen for SIGHUP: API tokens are read at start only.");
        return;
    };
    let app = app.clone();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            app.auth.reload_tokens().await;
        }
    });
}

/// A path on this site to go to after signing in: `/…`, never `//host` or `/\host` (which
/// browsers take as another site), no control characters or spaces (browsers drop tabs and
/// newlines, and a CR or LF would end a header), nothing but ASCII.
pub fn local_path(next: &str) -> Option<&str> {
    let bytes = next.as_bytes();
    let shape = bytes.first() == Some(&b'/') && !matches!(bytes.get(1), Some(b'/' | b'\\'));
    let clean = bytes.iter().all(|b| b.is_ascii_graphic() && *b != b'\\');
    (shape && clean && next.len() <= 2048 && next.parse::<axum::http::uri::PathAndQuery>().is_ok()).then_some(next)
}

/// Wrong tokens, counted per client ([`client_key`]: an address, an IPv6 /64) and over all
/// clients as leaky buckets: each failure adds one, and the count drains at a steady rate.
///
/// - A client may fail [`Throttle::PER_CLIENT`] times in a burst, then once per
///   [`Throttle::CLIENT_DRAIN`]; past that it is refused (429) before its token is compared.
/// - Over all clients, more than [`Throttle::GLOBAL`] failures draining one per
///   [`Throttle::GLOBAL_DRAIN`] is an attack from many addresses. While it lasts, the clients
///   that failed themselves in the last [`Throttle::RECENT`] are refused too; a client that has
///   not failed is still heard, so a right token is never refused for others' failures. An
///   attacker gets one guess per fresh address per [`Throttle::RECENT`] while the flood lasts,
///   and everyone who failed together one per [`Throttle::GLOBAL_DRAIN`] as before.
/// - Memory: at most [`Throttle::CLIENTS`] clients are remembered (about 4 MiB), those that
///   failed in the last [`Throttle::RECENT`]; older ones are dropped. Only when that many clients
///   failed within it (an attacker with so many addresses or /64s) is a client that has not
///   failed refused as well, since it could not be remembered if it guessed wrong. (A few more
///   than [`Throttle::CLIENTS`] may be stored: those whose check passed just before the table
///   filled, at most one per connection.)
///
/// A rate limiter such as governor counts every check; this one must ask "may this client try?"
/// without counting, and count only the failures.
pub struct Throttle {
    state: Mutex<ThrottleState>,
    capacity: usize,
}

struct ThrottleState {
    clients: HashMap<IpAddr, Bucket>,
    global: Bucket,
    /// When clients that failed long ago were last dropped.
    pruned: Option<Instant>,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    failures: f64,
    /// The last failure.
    at: Option<Instant>,
}

impl Bucket {
    /// The count at `now`, after draining one per `drain`.
    fn drained(&self, now: Instant, drain: Duration) -> f64 {
        let elapsed = self.at.map(|at| now.saturating_duration_since(at)).unwrap_or_default();
        (self.failures - elapsed.as_secs_f64() / drain.as_secs_f64()).max(0.0)
    }

    /// How long until one more failure fits under `capacity`.
    fn wait(&self, now: Instant, capacity: f64, drain: Duration) -> Option<Duration> {
        let over = self.drained(now, drain) + 1.0 - capacity;
        (over > 0.0).then(|| drain.mul_f64(over))
    }

    /// Counts a failure; the count stays at most `cap`.
    fn add(&mut self, now: Instant, drain: Duration, cap: f64) {
        self.failures = (self.drained(now, drain) + 1.0).min(cap);
        self.at = Some(now);
    }

    fn failed_within(&self, now: Instant, recent: Duration) -> bool {
        self.at.is_some_and(|at| now.saturating_duration_since(at) < recent)
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::with_capacity(Throttle::CLIENTS)
    }
}

impl Throttle {
    pub const PER_CLIENT: f64 = 10.0;
    pub const CLIENT_DRAIN: Duration = Duration::from_secs(6);
    pub const GLOBAL: f64 = 100.0;
    pub const GLOBAL_DRAIN: Duration = Duration::from_secs(1);
    /// The global count goes no higher than this, so a flood is over (for those who failed in
    /// it) at most `GLOBAL_CAP - GLOBAL` drains after its last failure.
    const GLOBAL_CAP: f64 = 2.0 * Self::GLOBAL;
    /// While the global bound is exceeded, a client that failed this recently is refused.
    pub const RECENT: Duration = Duration::from_secs(600);
    /// Clients remembered at most.
    pub const CLIENTS: usize = 65_536;

    pub fn with_capacity(capacity: usize) -> Throttle {
        Throttle {
            state: Mutex::new(ThrottleState { clients: HashMap::new(), global: Bucket::default(), pruned: None }),
            capacity,
        }
    }

    /// May `client` present a token now? If not, how long until it may.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().expect("throttle lock");
        let flood = state.global.wait(now, Self::GLOBAL, Self::GLOBAL_DRAIN);
        match state.clients.get(&client_key(client)) {
            Some(mine) => {
                if let Some(wait) = mine.wait(now, Self::PER_CLIENT, Self::CLIENT_DRAIN) {
                    return Err(wait);
                }
                match flood {
                    Some(wait) if mine.failed_within(now, Self::RECENT) => Err(wait),
                    _ => Ok(()),
                }
            }
            None if state.clients.len() >= self.capacity => {
                state.prune(now);
                if state.clients.len() >= self.capacity {
                    return Err(flood.unwrap_or(Self::GLOBAL_DRAIN).max(Self::GLOBAL_DRAIN));
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a wrong token from `client`.
    pub fn fail(&self, client: IpAddr, now: Instant) {
        let mut state = self.state.lock().expect("throttle lock");
        let key = client_key(client);
        if !state.clients.contains_key(&key) {
            state.prune(now);
        }
        // A client is refused at PER_CLIENT, so only requests in flight together go past it; the
        // cap keeps any bucket drained within RECENT, before it is dropped.
        let cap = Self::RECENT.as_secs_f64() / Self::CLIENT_DRAIN.as_secs_f64();
        state.clients.entry(key).or_default().add(now, Self::CLIENT_DRAIN, cap);
        state.global.add(now, Self::GLOBAL_DRAIN, Self::GLOBAL_CAP);
    }

    /// How many clients are remembered.
    pub fn clients(&self) -> usize {
        self.state.lock().expect("throttle lock").clients.len()
    }
}

impl ThrottleState {
    /// Forgets the clients that did not fail within [`Throttle::RECENT`] (their buckets drained
    /// long before), at most once a second: a scan of a full table is not for every request.
    fn prune(&mut self, now: Instant) {
        if self.pruned.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        self.pruned = Some(now);
        self.clients.retain(|_, b| b.failed_within(now, Throttle::RECENT));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_site_paths_are_followed_after_sign_in() {
        for ok in ["/", "/clusters/aws-cluster/pending", "/?tag=env%3Aprod&sort=drift", "/a/..//b"] {
            assert_eq!(local_path(ok), Some(ok), "{ok}");
        }
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "/\\/evil.example",
            "/a\\b",
            "https://evil.example",
            "javascript:alert(1)",
            "evil.example",
            "/\r\nSet-Cookie: x=1",
            "/\t/evil.example",
            "/ /",
            "/caf\u{e9}",
            "/\u{7f}",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
        assert_eq!(local_path(&format!("/{}", "a".repeat(3000))), None);
    }

    #[test]
    fn wrong_tokens_are_throttled_per_client() {
        let throttle = Throttle::default();
        let start = Instant::now();
        let alice: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10 {
            assert!(throttle.check(alice, start).is_ok());
            throttle.fail(alice, start);
        }
        let wait = throttle.check(alice, start).unwrap_err();
        assert_eq!(wait, Throttle::CLIENT_DRAIN);
        // Another client is not held back by alice's guesses.
        assert!(throttle.check("192.0.2.2".parse().unwrap(), start).is_ok());
        // The bucket drains: one more guess after CLIENT_DRAIN.
        let later = start + Throttle::CLIENT_DRAIN;
        assert!(throttle.check(alice, later).is_ok());
        throttle.fail(alice, later);
        assert!(throttle.check(alice, later).is_err());
        // The addresses of one IPv6 /64 are one client.
        let throttle = Throttle::default();
        for i in 0..10u128 {
            throttle.fail(IpAddr::V6(((0x2001_0db8u128 << 96) | i).into()), start);
        }
        assert!(throttle.check(IpAddr::V6(((0x2001_0db8u128 << 96) | 99).into()), start).is_err(), "one /64");
        assert!(throttle.check(IpAddr::V6(((0x2001_0db8u128 << 96) | (1 << 64)).into()), start).is_ok(), "next /64");
    }

    /// Finding 7: 120 wrong tokens from 20 addresses used to lock every token user out.
    #[test]
    fn a_flood_from_many_clients_holds_back_only_those_that_failed() {
        let throttle = Throttle::default();
        let start = Instant::now();
        let attacker = |i: u32| IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
        // Up to 6 guesses from each of 20 addresses: 100 are answered, then each address that
        // failed waits, though its own bucket has room; a fresh address still gets one answer.
        let mut answered = 0;
        for i in 0..20 {
            for guess in 0..6 {
                if throttle.check(attacker(i), start).is_err() {
                    assert!(guess > 0, "attacker {i}: a fresh address is heard");
                    break;
                }
                throttle.fail(attacker(i), start);
                answered += 1;
            }
        }
        assert_eq!(answered, 16 * 6 + 4 + 3);
        for i in 0..20 {
            let wait = throttle.check(attacker(i), start).unwrap_err();
            assert!(wait >= Throttle::GLOBAL_DRAIN, "attacker {i}: {wait:?}");
        }
        // ...and a client that never failed is heard: its right token gets in.
        let bob: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(throttle.check(bob, start).is_ok());
        // A fresh address gets one guess; having failed in a flood, it waits with the others.
        let fresh: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(throttle.check(fresh, start).is_ok());
        throttle.fail(fresh, start);
        assert!(throttle.check(fresh, start).is_err());
        // Still flooded a minute later (the attackers' buckets drained long ago): those who failed
        // in the last RECENT keep waiting while the flood goes on; bob is still heard.
        let minute = start + Duration::from_secs(60);
        for i in 100..200 {
            throttle.fail(attacker(i), minute);
        }
        assert!(throttle.check(attacker(0), minute).is_err());
        assert!(throttle.check(bob, minute).is_ok());
        // Once the global count drains below the bound, those who failed may try again, one per
        // GLOBAL_DRAIN together; and a client that failed before RECENT is new again.
        let calm = minute + Throttle::GLOBAL_DRAIN.mul_f64(2.0 * Throttle::GLOBAL);
        assert!(throttle.check(attacker(0), calm).is_ok());
        let much_later = minute + Throttle::RECENT;
        for i in 200..400 {
            throttle.fail(attacker(i), much_later);
        }
        assert!(throttle.check(attacker(0), much_later).is_ok(), "failed more than RECENT ago");
        assert!(throttle.check(attacker(200), much_later).is_err());
    }

    #[test]
    fn the_clients_remembered_are_bounded_under_address_churn() {
        let throttle = Throttle::with_capacity(1000);
        let start = Instant::now();
        let address = |i: u32| IpAddr::from(Ipv4Addr::from(0x0a00_0000u32 + i));
        // A new address per guess: the table fills, and no address is forgotten while it could
        // still be held back...
        let mut admitted = 0;
        for i in 0..5000 {
            if throttle.check(address(i), start).is_ok() {
                admitted += 1;
                throttle.fail(address(i), start);
            }
        }
        assert_eq!(admitted, 1000, "once full, a client the table cannot remember is refused");
        assert_eq!(throttle.clients(), 1000);
        assert!(throttle.check(address(0), start).is_err(), "still remembered: still held back");
        // ...and those that failed more than RECENT ago are dropped to make room.
        let later = start + Throttle::RECENT + Duration::from_secs(1);
        assert!(throttle.check(address(9999), later).is_ok());
        throttle.fail(address(9999), later);
        assert_eq!(throttle.clients(), 1);
    }
}
