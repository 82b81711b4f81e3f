//! Generic OAuth 2.0 authorization server (authorization-code grant + refresh), configurable as
//! Google or Microsoft identity platform v2.0 (REFERENCE.md §1). It has no HTTP server of its own:
//! a provider mock mounts it — Google serves `/o/oauth2/v2/auth`, `/token` and `/revoke`; the
//! Graph mock serves `/{tenant}/oauth2/v2.0/authorize` and `/{tenant}/oauth2/v2.0/token` — by
//! calling [`OAuthServer::handle_authorize`] / [`OAuthServer::handle_token`].
//!
//! Behaviour (REFERENCE.md §1.3):
//! * authorize → 302 to `redirect_uri?state=…&code=…` (Google adds `&scope=…`); exact
//!   `redirect_uri` check (mismatch → 400 error page, no redirect); [`OAuthServer::set_deny`] →
//!   `?error=access_denied&state=…`. `code_challenge_method` defaults to `plain`.
//! * Google issues a refresh token only with `access_type=offline` and (first grant for the client
//!   or `prompt` containing `consent`); Microsoft only when `offline_access` is requested.
//! * token: only `application/x-www-form-urlencoded` (else 400 `invalid_request`); client auth in
//!   the body or HTTP Basic (bad → 401 `invalid_client`); codes are single-use and expire after
//!   10 minutes; PKCE (`S256`/`plain`) and `redirect_uri` equality are checked; failures → 400
//!   `invalid_grant`. Google's `invalid_grant` body is exactly `oauth_google_error_invalid_grant.json`
//!   for every case; Microsoft's revoked-refresh body is exactly `oauth_microsoft_error_invalid_grant.json`,
//!   code failures use the same shape with their own AADSTS codes (70008 expired, 54005 reused,
//!   501481 verifier mismatch, 70000 redirect_uri mismatch / unknown code).
//! * Google refresh responses carry no `refresh_token`; Microsoft rotates on every refresh (the old
//!   token stays valid unless [`OAuthServer::set_invalidate_rotated`] is on).
//! * Responses are `application/json; charset=UTF-8` with the provider's `Cache-Control` value
//!   (both contain `no-store`). `expires_in` is the configured lifetime, and access tokens really
//!   expire after it ([`OAuthServer::validate_bearer`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use serde_json::{Value, json};

use crate::{
    Fault, FaultQueue, Resp, base64_decode, header_str, json_response, parse_form, pkce_s256,
    query_get, random_token, reset_connection, text_response, with_delay, with_header,
};

/// Which provider's authorization server to emulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Google,
    Microsoft,
}

/// Default scopes used by [`OAuthServer::issue_tokens_for_test`].
pub const GOOGLE_DEFAULT_SCOPE: &str = "https://www.googleapis.com/auth/calendar.events https://www.googleapis.com/auth/calendar.calendarlist.readonly";
pub const MICROSOFT_DEFAULT_SCOPE: &str = "offline_access User.Read Calendars.ReadWrite";

const CODE_LIFETIME: Duration = Duration::from_secs(600);
const DEFAULT_ACCESS_LIFETIME: Duration = Duration::from_secs(3599);

#[derive(Debug)]
struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    challenge: Option<(String, String)>, // (challenge, method)
    scopes: Vec<String>,
    issue_refresh: bool,
    issued: Instant,
    used: bool,
}

/// What the last successful authorize request granted (for assertions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantInfo {
    pub code: String,
    pub code_challenge: Option<String>,
    /// `S256` or `plain` (the default when a challenge is sent without a method).
    pub code_challenge_method: Option<String>,
    /// Granted scopes, as requested (after granular-consent filtering).
    pub scopes: Vec<String>,
    /// Whether the code exchange will return a refresh token.
    pub refresh_token_due: bool,
}

#[derive(Debug)]
struct AccessToken {
    expires_at: Instant,
    revoked: bool,
}

#[derive(Debug)]
struct RefreshToken {
    client_id: String,
    scopes: Vec<String>,
    revoked: bool,
    rotated: bool,
    access_tokens: Vec<String>,
}

#[derive(Debug)]
struct State {
    redirect_uri: String,
    deny: bool,
    access_lifetime: Duration,
    code_lifetime: Duration,
    granted_scopes: Option<Vec<String>>,
    invalidate_rotated: bool,
    codes: HashMap<String, CodeGrant>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    granted_clients: HashSet<String>,
    last_authorize_query: Option<Vec<(String, String)>>,
    last_grant: Option<GrantInfo>,
    authorize_requests: usize,
    token_requests: usize,
    code_exchanges: usize,
    refreshes: usize,
    rotations: usize,
    invalid_grants: usize,
    refresh_tokens_issued: usize,
}

#[derive(Debug)]
struct Inner {
    flavour: Flavour,
    client_id: String,
    client_secret: String,
    token_faults: FaultQueue,
    state: Mutex<State>,
}

/// A mock OAuth 2.0 authorization server with a token store shared with the API mock (cheap to
/// clone: all clones share state).
#[derive(Clone, Debug)]
pub struct OAuthServer {
    inner: Arc<Inner>,
}

fn split_scopes(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn append_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", ser.finish())
}

fn redirect(location: &str) -> Resp {
    with_header(text_response(302, ""), "location", location)
}

impl OAuthServer {
    pub fn new(
        flavour: Flavour,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> OAuthServer {
        OAuthServer {
            inner: Arc::new(Inner {
                flavour,
                client_id: client_id.into(),
                client_secret: client_secret.into(),
                token_faults: FaultQueue::default(),
                state: Mutex::new(State {
                    redirect_uri: redirect_uri.into(),
                    deny: false,
                    access_lifetime: DEFAULT_ACCESS_LIFETIME,
                    code_lifetime: CODE_LIFETIME,
                    granted_scopes: None,
                    invalidate_rotated: false,
                    codes: HashMap::new(),
                    access: HashMap::new(),
                    refresh: HashMap::new(),
                    granted_clients: HashSet::new(),
                    last_authorize_query: None,
                    last_grant: None,
                    authorize_requests: 0,
                    token_requests: 0,
                    code_exchanges: 0,
                    refreshes: 0,
                    rotations: 0,
                    invalid_grants: 0,
                    refresh_tokens_issued: 0,
                }),
            }),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap()
    }

    // ---- configuration ----------------------------------------------------------------------

    pub fn flavour(&self) -> Flavour {
        self.inner.flavour
    }

    pub fn client_id(&self) -> String {
        self.inner.client_id.clone()
    }

    pub fn client_secret(&self) -> String {
        self.inner.client_secret.clone()
    }

    /// The single registered redirect URI (exact match required).
    pub fn redirect_uri(&self) -> String {
        self.st().redirect_uri.clone()
    }

    pub fn set_redirect_uri(&self, redirect_uri: impl Into<String>) {
        self.st().redirect_uri = redirect_uri.into();
    }

    /// `true`: the user clicks "Cancel" — authorize redirects with `error=access_denied`.
    pub fn set_deny(&self, deny: bool) {
        self.st().deny = deny;
    }

    /// `expires_in` of newly issued access tokens, and their real lifetime (default 3599 s).
    pub fn set_access_lifetime(&self, lifetime: Duration) {
        self.st().access_lifetime = lifetime;
    }

    /// Authorization-code lifetime (default 10 min).
    pub fn set_code_lifetime(&self, lifetime: Duration) {
        self.st().code_lifetime = lifetime;
    }

    /// Google "granular consent": `Some(scopes)` grants only requested scopes in this list
    /// (the token response's `scope` becomes a subset). `None` (default) grants everything.
    pub fn set_granted_scopes(&self, scopes: Option<Vec<String>>) {
        self.st().granted_scopes = scopes;
    }

    /// Microsoft: when on, a refresh token stops working once it has been rotated (stricter than
    /// the documented behaviour; catches clients that do not persist the new token).
    pub fn set_invalidate_rotated(&self, on: bool) {
        self.st().invalidate_rotated = on;
    }

    /// Next token-endpoint request fails with `fault` (queue; one per request).
    pub fn fail_token_endpoint(&self, fault: Fault) {
        self.inner.token_faults.push(fault);
    }

    pub fn token_faults(&self) -> &FaultQueue {
        &self.inner.token_faults
    }

    // ---- test-side state manipulation -------------------------------------------------------

    /// Every access token issued so far becomes expired (API mocks answer 401).
    pub fn expire_access_tokens(&self) {
        let now = Instant::now();
        for t in self.st().access.values_mut() {
            t.expires_at = now;
        }
    }

    /// Every refresh token issued so far is revoked: refresh → 400 `invalid_grant` (exact example
    /// body). Access tokens stay valid until they expire. Tokens issued later are fine.
    pub fn revoke_refresh_tokens(&self) {
        for t in self.st().refresh.values_mut() {
            t.revoked = true;
        }
    }

    /// Issues an access + refresh token pair directly (default scopes), as if the browser flow
    /// had completed. Counts as a first grant for the client.
    pub fn issue_tokens_for_test(&self) -> (String, String) {
        let scope = match self.inner.flavour {
            Flavour::Google => GOOGLE_DEFAULT_SCOPE,
            Flavour::Microsoft => MICROSOFT_DEFAULT_SCOPE,
        };
        let mut st = self.st();
        let client = self.inner.client_id.clone();
        st.granted_clients.insert(client.clone());
        let access = self.new_access(&mut st);
        let refresh = self.new_refresh(&mut st, &client, split_scopes(scope), &access);
        (access, refresh)
    }

    /// A valid access token without a refresh token.
    pub fn issue_access_token_for_test(&self) -> String {
        let mut st = self.st();
        self.new_access(&mut st)
    }

    // ---- observation ------------------------------------------------------------------------

    /// `true` iff the header is `Bearer <token>` with a known, unexpired, unrevoked access token.
    pub fn validate_bearer(&self, authorization_header: Option<&str>) -> bool {
        let Some(h) = authorization_header else {
            return false;
        };
        let Some((scheme, token)) = h.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let st = self.st();
        st.access
            .get(token.trim())
            .is_some_and(|t| !t.revoked && Instant::now() < t.expires_at)
    }

    pub fn last_authorize_query(&self) -> Option<Vec<(String, String)>> {
        self.st().last_authorize_query.clone()
    }

    /// One parameter of the last authorize request.
    pub fn last_authorize_param(&self, name: &str) -> Option<String> {
        let st = self.st();
        let q = st.last_authorize_query.as_ref()?;
        query_get(q, name).map(str::to_string)
    }

    /// The grant recorded by the last successful (code-issuing) authorize request.
    pub fn last_grant(&self) -> Option<GrantInfo> {
        self.st().last_grant.clone()
    }

    pub fn authorize_requests(&self) -> usize {
        self.st().authorize_requests
    }

    /// All token-endpoint requests, whatever their outcome.
    pub fn token_requests(&self) -> usize {
        self.st().token_requests
    }

    /// Successful authorization-code exchanges.
    pub fn code_exchanges(&self) -> usize {
        self.st().code_exchanges
    }

    /// Successful refreshes.
    pub fn refreshes(&self) -> usize {
        self.st().refreshes
    }

    /// Microsoft: refresh tokens replaced by a new one so far.
    pub fn rotations(&self) -> usize {
        self.st().rotations
    }

    /// `invalid_grant` answers so far.
    pub fn invalid_grants(&self) -> usize {
        self.st().invalid_grants
    }

    pub fn refresh_tokens_issued(&self) -> usize {
        self.st().refresh_tokens_issued
    }

    /// Whether `refresh_token` has been rotated away (Microsoft).
    pub fn was_rotated(&self, refresh_token: &str) -> bool {
        self.st()
            .refresh
            .get(refresh_token)
            .is_some_and(|t| t.rotated)
    }

    // ---- token store internals --------------------------------------------------------------

    fn new_access(&self, st: &mut State) -> String {
        let token = match self.inner.flavour {
            Flavour::Google => random_token("ya29.mock-"),
            Flavour::Microsoft => random_token("EwB.mock-"),
        };
        st.access.insert(
            token.clone(),
            AccessToken {
                expires_at: Instant::now() + st.access_lifetime,
                revoked: false,
            },
        );
        token
    }

    fn new_refresh(
        &self,
        st: &mut State,
        client_id: &str,
        scopes: Vec<String>,
        access: &str,
    ) -> String {
        let token = match self.inner.flavour {
            Flavour::Google => random_token("1//mock-"),
            Flavour::Microsoft => random_token("1.mock-"),
        };
        st.refresh.insert(
            token.clone(),
            RefreshToken {
                client_id: client_id.to_string(),
                scopes,
                revoked: false,
                rotated: false,
                access_tokens: vec![access.to_string()],
            },
        );
        st.refresh_tokens_issued += 1;
        token
    }

    /// The `scope` string of a token response.
    fn scope_string(&self, scopes: &[String]) -> String {
        let mapped: Vec<String> = match self.inner.flavour {
            Flavour::Google => scopes
                .iter()
                .map(|s| match s.as_str() {
                    "email" => "https://www.googleapis.com/auth/userinfo.email".to_string(),
                    "profile" => "https://www.googleapis.com/auth/userinfo.profile".to_string(),
                    _ => s.clone(),
                })
                .collect(),
            Flavour::Microsoft => scopes
                .iter()
                .filter(|s| {
                    !matches!(
                        s.as_str(),
                        "openid" | "profile" | "email" | "offline_access"
                    )
                })
                .map(|s| {
                    if s.contains("://") {
                        s.clone()
                    } else {
                        format!("https://graph.microsoft.com/{s}")
                    }
                })
                .collect(),
        };
        mapped.join(" ")
    }

    // ---- error bodies -----------------------------------------------------------------------

    fn token_headers(&self, resp: Resp) -> Resp {
        match self.inner.flavour {
            Flavour::Google => with_header(
                resp,
                "cache-control",
                "no-cache, no-store, max-age=0, must-revalidate",
            ),
            Flavour::Microsoft => with_header(
                with_header(resp, "cache-control", "no-store, no-cache"),
                "pragma",
                "no-cache",
            ),
        }
    }

    fn ms_error_body(error: &str, code: u64, description: &str) -> Value {
        let trace = uuid::Uuid::new_v4().to_string();
        let correlation = uuid::Uuid::new_v4().to_string();
        let ts = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {ts}"
            ),
            "error_codes": [code],
            "timestamp": ts,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })
    }

    /// A generic OAuth error in the flavour's shape.
    fn oauth_error(&self, status: u16, error: &str, ms_code: u64, description: &str) -> Resp {
        let body = match self.inner.flavour {
            Flavour::Google => json!({"error": error, "error_description": description}),
            Flavour::Microsoft => Self::ms_error_body(error, ms_code, description),
        };
        self.token_headers(json_response(status, &body))
    }

    /// Exact `examples/oauth_<flavour>_error_invalid_grant.json` body.
    pub fn invalid_grant_example_body(flavour: Flavour) -> Value {
        match flavour {
            Flavour::Google => json!({
                "error": "invalid_grant",
                "error_description": "Token has been expired or revoked."
            }),
            Flavour::Microsoft => json!({
                "error": "invalid_grant",
                "error_description": "AADSTS700082: The refresh token has expired due to inactivity. The token was issued on 2030-01-10T08:00:00.0000000Z and was inactive for 90.00:00:00. Trace ID: 00000000-0000-4000-8000-0000000000a1 Correlation ID: 00000000-0000-4000-8000-0000000000b2 Timestamp: 2030-05-14 09:00:00Z",
                "error_codes": [700082],
                "timestamp": "2030-05-14 09:00:00Z",
                "trace_id": "00000000-0000-4000-8000-0000000000a1",
                "correlation_id": "00000000-0000-4000-8000-0000000000b2",
                "error_uri": "https://login.microsoftonline.com/error?code=700082"
            }),
        }
    }

    /// `invalid_grant`: revoked refresh token (exact example body for both flavours).
    fn invalid_grant_revoked(&self, st: &mut State) -> Resp {
        st.invalid_grants += 1;
        let body = Self::invalid_grant_example_body(self.inner.flavour);
        self.token_headers(json_response(400, &body))
    }

    /// `invalid_grant` on a code exchange: Google's example body; Microsoft's shape + AADSTS code.
    fn invalid_grant_code(&self, st: &mut State, ms_code: u64, ms_description: &str) -> Resp {
        st.invalid_grants += 1;
        match self.inner.flavour {
            Flavour::Google => self.token_headers(json_response(
                400,
                &Self::invalid_grant_example_body(Flavour::Google),
            )),
            Flavour::Microsoft => self.token_headers(json_response(
                400,
                &Self::ms_error_body("invalid_grant", ms_code, ms_description),
            )),
        }
    }

    fn invalid_request(&self, description: &str) -> Resp {
        self.oauth_error(400, "invalid_request", 900144, description)
    }

    fn missing(&self, name: &str) -> Resp {
        match self.inner.flavour {
            Flavour::Google => self.invalid_request(&format!("Missing required parameter: {name}")),
            Flavour::Microsoft => self.invalid_request(&format!(
                "The request body must contain the following parameter: '{name}'."
            )),
        }
    }

    // ---- authorize --------------------------------------------------------------------------

    /// The browser leg (`GET …/auth` / `…/authorize`) with the decoded query.
    pub fn handle_authorize(&self, query: &[(String, String)]) -> Resp {
        let mut st = self.st();
        st.authorize_requests += 1;
        st.last_authorize_query = Some(query.to_vec());
        let q = |name: &str| query_get(query, name);

        // Errors shown to the user on the provider's page (no redirect).
        match q("client_id") {
            Some(id) if id == self.inner.client_id => {}
            _ => {
                return text_response(
                    401,
                    "Error 401: invalid_client\nThe OAuth client was not found.",
                );
            }
        }
        let Some(redirect_uri) = q("redirect_uri") else {
            return text_response(
                400,
                "Error 400: invalid_request\nMissing required parameter: redirect_uri",
            );
        };
        if redirect_uri != st.redirect_uri {
            return text_response(
                400,
                format!(
                    "Error 400: redirect_uri_mismatch\nredirect_uri={redirect_uri} is not registered for this client."
                ),
            );
        }
        if q("response_type") != Some("code") {
            return text_response(
                400,
                "Error 400: invalid_request\nresponse_type must be 'code'.",
            );
        }
        let Some(scope) = q("scope").filter(|s| !s.trim().is_empty()) else {
            return text_response(
                400,
                "Error 400: invalid_request\nMissing required parameter: scope",
            );
        };
        let challenge = match (q("code_challenge"), q("code_challenge_method")) {
            (None, None) => None,
            (None, Some(_)) => {
                return text_response(
                    400,
                    "Error 400: invalid_request\ncode_challenge_method without code_challenge",
                );
            }
            (Some(c), m) => {
                let m = m.unwrap_or("plain");
                if m != "S256" && m != "plain" {
                    return text_response(
                        400,
                        "Error 400: invalid_request\nInvalid code_challenge_method.",
                    );
                }
                Some((c.to_string(), m.to_string()))
            }
        };
        let state = q("state").unwrap_or("");
        if st.deny {
            return redirect(&append_query(
                redirect_uri,
                &[("error", "access_denied"), ("state", state)],
            ));
        }

        let requested = split_scopes(scope);
        let scopes: Vec<String> = match (&st.granted_scopes, self.inner.flavour) {
            (Some(allowed), Flavour::Google) => requested
                .iter()
                .filter(|s| allowed.contains(s))
                .cloned()
                .collect(),
            _ => requested,
        };
        let prompt = q("prompt").unwrap_or("");
        let issue_refresh = match self.inner.flavour {
            Flavour::Google => {
                q("access_type") == Some("offline")
                    && (!st.granted_clients.contains(&self.inner.client_id)
                        || prompt.split_whitespace().any(|p| p == "consent"))
            }
            Flavour::Microsoft => scopes.iter().any(|s| s == "offline_access"),
        };
        let code = match self.inner.flavour {
            Flavour::Google => random_token("4/mock-"),
            Flavour::Microsoft => random_token("M.mock-"),
        };
        st.granted_clients.insert(self.inner.client_id.clone());
        let scope_out = scopes.join(" ");
        st.last_grant = Some(GrantInfo {
            code: code.clone(),
            code_challenge: challenge.as_ref().map(|c| c.0.clone()),
            code_challenge_method: challenge.as_ref().map(|c| c.1.clone()),
            scopes: scopes.clone(),
            refresh_token_due: issue_refresh,
        });
        st.codes.insert(
            code.clone(),
            CodeGrant {
                client_id: self.inner.client_id.clone(),
                redirect_uri: redirect_uri.to_string(),
                challenge,
                scopes,
                issue_refresh,
                issued: Instant::now(),
                used: false,
            },
        );
        let location = match self.inner.flavour {
            Flavour::Google => append_query(
                redirect_uri,
                &[("state", state), ("code", &code), ("scope", &scope_out)],
            ),
            Flavour::Microsoft => append_query(redirect_uri, &[("code", &code), ("state", state)]),
        };
        redirect(&location)
    }

    // ---- revoke (Google) ----------------------------------------------------------------------

    /// Google `POST /revoke` with `token=<access or refresh token>` (form body or query pairs
    /// passed in `body`). Revoking a refresh token also revokes its access tokens.
    pub fn handle_revoke(&self, body: &[u8]) -> Resp {
        let form = parse_form(body);
        let Some(token) = query_get(&form, "token") else {
            return json_response(
                400,
                &json!({"error": "invalid_request", "error_description": "Missing required parameter: token"}),
            );
        };
        let mut st = self.st();
        if let Some(rt) = st.refresh.get_mut(token) {
            rt.revoked = true;
            let access = rt.access_tokens.clone();
            for a in access {
                if let Some(at) = st.access.get_mut(&a) {
                    at.revoked = true;
                }
            }
            return json_response(200, &json!({}));
        }
        if let Some(at) = st.access.get_mut(token) {
            at.revoked = true;
            return json_response(200, &json!({}));
        }
        json_response(
            400,
            &json!({"error": "invalid_token", "error_description": "Token expired or revoked"}),
        )
    }

    // ---- token ------------------------------------------------------------------------------

    /// The token endpoint (`POST`), given the request headers and raw body.
    pub fn handle_token(&self, headers: &HeaderMap, body: &[u8]) -> Resp {
        self.st().token_requests += 1;
        let mut delay = Duration::ZERO;
        match self.inner.token_faults.take() {
            None => {}
            Some(Fault::Slow(d)) => delay = d,
            Some(Fault::Reset | Fault::AnswerLost) => return reset_connection(),
            Some(Fault::Gone) => {
                let mut st = self.st();
                return self.invalid_grant_revoked(&mut st);
            }
            Some(Fault::Status {
                status,
                retry_after,
            }) => {
                let (error, code, desc) = match status {
                    400 => ("invalid_request", 900144, "Invalid request."),
                    401 => ("invalid_client", 7000215, "Invalid client secret provided."),
                    429 => ("temporarily_unavailable", 50196, "Too many requests."),
                    _ => (
                        "temporarily_unavailable",
                        90033,
                        "A transient error has occurred. Please try again.",
                    ),
                };
                let mut resp = self.oauth_error(status, error, code, desc);
                if let Some(ra) = retry_after {
                    resp = with_header(resp, "retry-after", &ra);
                }
                return resp;
            }
        }
        with_delay(self.token_inner(headers, body), delay)
    }

    fn token_inner(&self, headers: &HeaderMap, body: &[u8]) -> Resp {
        let form_ok = header_str(headers, "content-type").is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if !form_ok {
            return self.invalid_request("Content-Type must be application/x-www-form-urlencoded.");
        }
        let form = parse_form(body);
        let f = |name: &str| query_get(&form, name);

        // Client authentication: HTTP Basic or body parameters.
        let basic = header_str(headers, "authorization").and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return None;
            }
            let decoded = String::from_utf8(base64_decode(rest.trim())?).ok()?;
            let (id, secret) = decoded.split_once(':')?;
            let dec = |s: &str| {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Some((dec(id), dec(secret)))
        });
        let (client_id, client_secret) = match basic {
            Some((id, secret)) => (Some(id), Some(secret)),
            None => (
                f("client_id").map(str::to_string),
                f("client_secret").map(str::to_string),
            ),
        };
        let Some(client_id) = client_id else {
            return self.missing("client_id");
        };
        if client_id != self.inner.client_id {
            return self.oauth_error(
                401,
                "invalid_client",
                700016,
                "The OAuth client was not found.",
            );
        }
        if client_secret.as_deref() != Some(self.inner.client_secret.as_str()) {
            let desc = match self.inner.flavour {
                Flavour::Google => "Unauthorized",
                Flavour::Microsoft => {
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID."
                }
            };
            return self.oauth_error(401, "invalid_client", 7000215, desc);
        }

        match f("grant_type") {
            None => self.missing("grant_type"),
            Some("authorization_code") => self.exchange_code(&form, &client_id),
            Some("refresh_token") => self.refresh(&form, &client_id),
            Some(other) => self.oauth_error(
                400,
                "unsupported_grant_type",
                70003,
                &format!("Invalid grant_type: {other}"),
            ),
        }
    }

    fn exchange_code(&self, form: &[(String, String)], client_id: &str) -> Resp {
        let f = |name: &str| query_get(form, name);
        let Some(code) = f("code") else {
            return self.missing("code");
        };
        let Some(redirect_uri) = f("redirect_uri") else {
            return self.missing("redirect_uri");
        };
        let mut st = self.st();
        let code_lifetime = st.code_lifetime;
        let check = match st.codes.get_mut(code) {
            None => Err((70000, "The provided authorization code is invalid.")),
            Some(g) if g.used => Err((
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
            )),
            Some(g) if g.issued.elapsed() >= code_lifetime => Err((
                70008,
                "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
            )),
            Some(g) => {
                // A redemption attempt consumes the code whatever its outcome.
                g.used = true;
                let verifier = f("code_verifier");
                let pkce_ok = match (&g.challenge, verifier) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some((c, m)), Some(v)) if m == "S256" => pkce_s256(v) == *c,
                    (Some((c, _)), Some(v)) => v == c,
                };
                if g.client_id != client_id || g.redirect_uri != redirect_uri {
                    Err((
                        70000,
                        "The provided value for the 'redirect_uri' is not valid. The value must exactly match the redirect URI used to obtain the authorization code.",
                    ))
                } else if !pkce_ok {
                    Err((
                        501481,
                        "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                    ))
                } else {
                    Ok((g.scopes.clone(), g.issue_refresh))
                }
            }
        };
        let (scopes, issue_refresh) = match check {
            Ok(v) => v,
            Err((ms_code, desc)) => return self.invalid_grant_code(&mut st, ms_code, desc),
        };
        st.code_exchanges += 1;
        let access = self.new_access(&mut st);
        let refresh =
            issue_refresh.then(|| self.new_refresh(&mut st, client_id, scopes.clone(), &access));
        let id_token = scopes.iter().any(|s| s == "openid").then(|| {
            format!(
                "eyJhbGciOiJub25lIn0.{}.mock-signature",
                crate::base64url_nopad(
                    json!({"iss": "mock", "aud": client_id, "sub": "mock-user"})
                        .to_string()
                        .as_bytes()
                )
            )
        });
        let lifetime = st.access_lifetime.as_secs();
        drop(st);
        self.token_response(
            &access,
            lifetime,
            &scopes,
            refresh.as_deref(),
            id_token.as_deref(),
        )
    }

    fn refresh(&self, form: &[(String, String)], client_id: &str) -> Resp {
        let Some(token) = query_get(form, "refresh_token") else {
            return self.missing("refresh_token");
        };
        let mut st = self.st();
        let invalidate_rotated = st.invalidate_rotated;
        let scopes = match st.refresh.get(token) {
            Some(rt)
                if !rt.revoked
                    && rt.client_id == client_id
                    && !(invalidate_rotated && rt.rotated) =>
            {
                rt.scopes.clone()
            }
            _ => return self.invalid_grant_revoked(&mut st),
        };
        st.refreshes += 1;
        let access = self.new_access(&mut st);
        let new_refresh = match self.inner.flavour {
            Flavour::Google => {
                if let Some(rt) = st.refresh.get_mut(token) {
                    rt.access_tokens.push(access.clone());
                }
                None
            }
            Flavour::Microsoft => {
                if let Some(rt) = st.refresh.get_mut(token) {
                    rt.rotated = true;
                }
                st.rotations += 1;
                Some(self.new_refresh(&mut st, client_id, scopes.clone(), &access))
            }
        };
        let lifetime = st.access_lifetime.as_secs();
        drop(st);
        self.token_response(&access, lifetime, &scopes, new_refresh.as_deref(), None)
    }

    fn token_response(
        &self,
        access: &str,
        expires_in: u64,
        scopes: &[String],
        refresh: Option<&str>,
        id_token: Option<&str>,
    ) -> Resp {
        let scope = self.scope_string(scopes);
        let mut body = serde_json::Map::new();
        match self.inner.flavour {
            Flavour::Google => {
                body.insert("access_token".into(), json!(access));
                body.insert("expires_in".into(), json!(expires_in));
                if let Some(r) = refresh {
                    body.insert("refresh_token".into(), json!(r));
                }
                body.insert("scope".into(), json!(scope));
                body.insert("token_type".into(), json!("Bearer"));
            }
            Flavour::Microsoft => {
                body.insert("token_type".into(), json!("Bearer"));
                body.insert("scope".into(), json!(scope));
                body.insert("expires_in".into(), json!(expires_in));
                body.insert("ext_expires_in".into(), json!(expires_in));
                body.insert("access_token".into(), json!(access));
                if let Some(r) = refresh {
                    body.insert("refresh_token".into(), json!(r));
                }
            }
        }
        if let Some(id) = id_token {
            body.insert("id_token".into(), json!(id));
        }
        self.token_headers(json_response(200, &Value::Object(body)))
    }
}
