//! OAuth 2.0 authorization-code grant (with PKCE) for Google and Microsoft, and a
//! [`Session`] that hands out access tokens, refreshing them before they expire.
//!
//! The protocol work (authorize URL, `state`, S256 PKCE, token request bodies,
//! token and error response parsing) is the `oauth2` crate's. Its own reqwest
//! integration is built against reqwest 0.12 while the gateway uses 0.13, so the
//! token requests go through a small adapter ([`send`]) that runs `oauth2`'s
//! `http::Request` on our `reqwest::Client`. The adapter answers 429 and 5xx
//! itself, as a transport failure carrying `Retry-After`, because `oauth2` keeps
//! only the JSON error body and loses the status; everything else is left to
//! `oauth2`'s response handling. The client given here should not follow
//! redirects (the `oauth2` crate's advice against SSRF through the token endpoint).
//!
//! Tokens and secrets are never logged: [`Tokens`], [`OAuthEndpoints`] and
//! [`PendingAuthorization`] print `<redacted>` in their `Debug` output.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicErrorResponseType};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use super::{ProviderError, TokenSource};

/// Google's production endpoints (REFERENCE.md §1.1).
pub const GOOGLE_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// Least-privilege scopes: events read/write and the calendar list.
pub const GOOGLE_SCOPES: [&str; 2] = [
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/calendar.calendarlist.readonly",
];
/// Microsoft identity platform v2.0; `{tenant}` is `common`, `organizations`,
/// `consumers` or a tenant id (REFERENCE.md §1.2).
pub const MICROSOFT_AUTHORITY: &str = "https://login.microsoftonline.com";
pub const MICROSOFT_SCOPES: [&str; 3] = ["offline_access", "Calendars.ReadWrite", "User.Read"];

/// Access tokens with less validity left than this are refreshed first.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Assumed lifetime when a token response carries no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Where and as whom to run the authorization-code flow.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthEndpoints {
    pub auth_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    /// Added to the authorize URL (`access_type=offline`, `prompt=consent`, …).
    pub extra_auth_params: Vec<(String, String)>,
}

impl OAuthEndpoints {
    /// Google with the production endpoints, the gateway's scopes and
    /// `access_type=offline&prompt=consent`, so that every (re)connection returns a
    /// refresh token.
    pub fn google(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        OAuthEndpoints {
            auth_url: GOOGLE_AUTH_URL.to_owned(),
            token_url: GOOGLE_TOKEN_URL.to_owned(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uri: redirect_uri.into(),
            scopes: GOOGLE_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            extra_auth_params: vec![
                ("access_type".to_owned(), "offline".to_owned()),
                ("prompt".to_owned(), "consent".to_owned()),
            ],
        }
    }

    /// Microsoft identity platform v2.0 for `tenant` (`common` when empty), with
    /// `offline_access` so that a refresh token is issued.
    pub fn microsoft(
        tenant: &str,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> Self {
        let tenant = if tenant.trim().is_empty() {
            "common"
        } else {
            tenant.trim()
        };
        let tenant = super::path_segment(tenant);
        OAuthEndpoints {
            auth_url: format!("{MICROSOFT_AUTHORITY}/{tenant}/oauth2/v2.0/authorize"),
            token_url: format!("{MICROSOFT_AUTHORITY}/{tenant}/oauth2/v2.0/token"),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            redirect_uri: redirect_uri.into(),
            scopes: MICROSOFT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            extra_auth_params: vec![("response_mode".to_owned(), "query".to_owned())],
        }
    }

    /// The same flow against other authorize/token endpoints (configuration, mocks).
    pub fn with_endpoints(
        mut self,
        auth_url: impl Into<String>,
        token_url: impl Into<String>,
    ) -> Self {
        self.auth_url = auth_url.into();
        self.token_url = token_url.into();
        self
    }

    fn token_client(&self) -> Result<TokenClient, ProviderError> {
        Ok(BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.clone()))
            .set_auth_type(AuthType::RequestBody)
            .set_token_uri(
                TokenUrl::new(self.token_url.clone()).map_err(|e| config_error("token URL", &e))?,
            )
            .set_redirect_uri(redirect_url(&self.redirect_uri)?))
    }
}

impl fmt::Debug for OAuthEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthEndpoints")
            .field("auth_url", &self.auth_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .field("extra_auth_params", &self.extra_auth_params)
            .finish()
    }
}

type TokenClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

fn config_error(what: &str, e: &dyn fmt::Display) -> ProviderError {
    ProviderError::Permanent(format!("invalid OAuth {what}: {e}"))
}

fn redirect_url(uri: &str) -> Result<RedirectUrl, ProviderError> {
    RedirectUrl::new(uri.to_owned()).map_err(|e| config_error("redirect URI", &e))
}

/// What the token endpoint granted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub expires_at: DateTime<Utc>,
    /// Absent when the provider issued none (Google without `access_type=offline`).
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl Tokens {
    /// Whether the access token is valid for at least `margin` more.
    pub fn valid_for(&self, margin: Duration) -> bool {
        let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::MAX);
        Utc::now()
            .checked_add_signed(margin)
            .is_some_and(|t| t < self.expires_at)
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// An authorization in progress: send the user to `url`, keep `state` (compare it
/// with the callback's) and `pkce_verifier` (for [`exchange_code`]) server-side.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingAuthorization {
    pub url: String,
    pub state: String,
    pub pkce_verifier: String,
}

impl fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("url", &self.url)
            .field("state", &self.state)
            .field("pkce_verifier", &"<redacted>")
            .finish()
    }
}

/// Starts the flow: the provider's authorize URL with a random `state` and an S256
/// PKCE challenge. Fails only on an unparsable authorize or redirect URL.
pub fn authorize(e: &OAuthEndpoints) -> Result<PendingAuthorization, ProviderError> {
    let client = BasicClient::new(ClientId::new(e.client_id.clone()))
        .set_auth_uri(
            AuthUrl::new(e.auth_url.clone()).map_err(|err| config_error("authorize URL", &err))?,
        )
        .set_redirect_uri(redirect_url(&e.redirect_uri)?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge)
        .add_scopes(e.scopes.iter().cloned().map(Scope::new));
    for (name, value) in &e.extra_auth_params {
        request = request.add_extra_param(name.as_str(), value.as_str());
    }
    let (url, state) = request.url();
    Ok(PendingAuthorization {
        url: url.to_string(),
        state: state.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
    })
}

/// Redeems the authorization code from the callback.
pub async fn exchange_code(
    e: &OAuthEndpoints,
    http: &reqwest::Client,
    code: &str,
    pkce_verifier: &str,
) -> Result<Tokens, ProviderError> {
    let client = e.token_client()?;
    let http = http.clone();
    let adapter = move |request: HttpRequest| send(http.clone(), request);
    let response = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
        .request_async(&adapter)
        .await
        .map_err(|err| classify(err, "code exchange"))?;
    tracing::info!(token_url = %e.token_url, refresh_token = response.refresh_token().is_some(), "OAuth code exchanged");
    Ok(tokens_of(&response, None))
}

/// Gets a new access token with `refresh_token`. The result keeps `refresh_token`
/// unless the provider rotated it (Microsoft does on every refresh; Google does not).
pub async fn refresh(
    e: &OAuthEndpoints,
    http: &reqwest::Client,
    refresh_token: &str,
) -> Result<Tokens, ProviderError> {
    let client = e.token_client()?;
    let http = http.clone();
    let adapter = move |request: HttpRequest| send(http.clone(), request);
    let token = RefreshToken::new(refresh_token.to_owned());
    let response = client
        .exchange_refresh_token(&token)
        .request_async(&adapter)
        .await
        .map_err(|err| classify(err, "token refresh"))?;
    let rotated = response.refresh_token().is_some();
    tracing::debug!(token_url = %e.token_url, rotated, "OAuth access token refreshed");
    Ok(tokens_of(&response, Some(refresh_token)))
}

fn tokens_of(response: &oauth2::basic::BasicTokenResponse, old_refresh: Option<&str>) -> Tokens {
    let lifetime = response.expires_in().unwrap_or(DEFAULT_LIFETIME);
    let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::days(365));
    let now = Utc::now();
    Tokens {
        access_token: response.access_token().secret().clone(),
        expires_at: now.checked_add_signed(lifetime).unwrap_or(now),
        refresh_token: response
            .refresh_token()
            .map(|t| t.secret().clone())
            .or_else(|| old_refresh.map(str::to_owned)),
    }
}

/// A token request that did not get a usable answer from the token endpoint.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct TransportError {
    message: String,
    retryable: bool,
    retry_after: Option<Duration>,
}

/// Runs one `oauth2` request on our reqwest client. 429 and 5xx come back as a
/// retryable [`TransportError`] (with `Retry-After`), other statuses as responses.
async fn send(http: reqwest::Client, request: HttpRequest) -> Result<HttpResponse, TransportError> {
    let request = reqwest::Request::try_from(request).map_err(|e| TransportError {
        message: format!("cannot build the token request: {}", e.without_url()),
        retryable: false,
        retry_after: None,
    })?;
    let transport = |e: reqwest::Error| TransportError {
        retryable: !e.is_builder(),
        message: format!("token endpoint unreachable: {}", e.without_url()),
        retry_after: None,
    };
    let response = http.execute(request).await.map_err(transport)?;
    let status = response.status();
    if status.as_u16() == 429 || status.is_server_error() {
        let retry_after = super::retry_after(response.headers().get(http::header::RETRY_AFTER));
        let body = response.text().await.unwrap_or_default();
        let snippet: String = body.chars().take(300).collect();
        return Err(TransportError {
            message: format!("token endpoint answered HTTP {status}: {snippet}"),
            retryable: true,
            retry_after,
        });
    }
    let mut builder = http::Response::builder().status(status);
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await.map_err(transport)?;
    builder.body(body.to_vec()).map_err(|e| TransportError {
        message: format!("bad token endpoint response: {e}"),
        retryable: true,
        retry_after: None,
    })
}

/// The token endpoint's answer in the engine's terms.
fn classify(
    err: RequestTokenError<TransportError, BasicErrorResponse>,
    what: &str,
) -> ProviderError {
    match err {
        RequestTokenError::Request(t) if t.retryable => ProviderError::Retryable {
            message: format!("{what}: {}", t.message),
            retry_after: t.retry_after,
        },
        RequestTokenError::Request(t) => ProviderError::Permanent(format!("{what}: {}", t.message)),
        RequestTokenError::ServerResponse(r) => {
            let description: String = r
                .error_description()
                .map(String::as_str)
                .unwrap_or_else(|| r.error().as_ref())
                .chars()
                .take(300)
                .collect();
            match r.error() {
                BasicErrorResponseType::InvalidGrant => ProviderError::Reauth(description),
                BasicErrorResponseType::Extension(code)
                    if code == "interaction_required" || code == "consent_required" =>
                {
                    ProviderError::Reauth(description)
                }
                BasicErrorResponseType::Extension(code) if code == "temporarily_unavailable" => {
                    ProviderError::retryable(format!("{what}: {description}"))
                }
                other => ProviderError::Permanent(format!(
                    "{what} refused ({}): {description}",
                    other.as_ref()
                )),
            }
        }
        RequestTokenError::Parse(e, _) => {
            ProviderError::Permanent(format!("{what}: unreadable token endpoint response: {e}"))
        }
        RequestTokenError::Other(message) => ProviderError::Permanent(format!("{what}: {message}")),
    }
}

/// Called with the new tokens after every refresh (the engine stores them).
pub type PersistTokens = Arc<dyn Fn(&Tokens) + Send + Sync>;

struct SessionState {
    tokens: Tokens,
    /// When the last successful refresh finished.
    refreshed_at: Option<Instant>,
    /// Set once the grant is gone: no further refresh attempts.
    reauth: Option<String>,
}

/// The tokens of one connected account, refreshed on demand. Concurrent callers
/// wait for one refresh instead of starting their own. Once the provider has
/// refused the grant (`invalid_grant`), every later call answers
/// [`ProviderError::Reauth`] without asking again: reconnecting makes a new session.
pub struct Session {
    endpoints: OAuthEndpoints,
    http: reqwest::Client,
    state: tokio::sync::Mutex<SessionState>,
    persist: PersistTokens,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn new(
        endpoints: OAuthEndpoints,
        http: reqwest::Client,
        tokens: Tokens,
        persist: PersistTokens,
    ) -> Self {
        Session {
            endpoints,
            http,
            state: tokio::sync::Mutex::new(SessionState {
                tokens,
                refreshed_at: None,
                reauth: None,
            }),
            persist,
        }
    }

    /// The current tokens (for storing).
    pub async fn tokens(&self) -> Tokens {
        self.state.lock().await.tokens.clone()
    }

    async fn token(&self, force_refresh: bool) -> Result<String, ProviderError> {
        let asked_at = Instant::now();
        let mut st = self.state.lock().await;
        if let Some(reason) = &st.reauth {
            return Err(ProviderError::Reauth(reason.clone()));
        }
        // A refresh that finished after this call began already replaced the token
        // the caller saw rejected.
        let fresh_enough = if force_refresh {
            st.refreshed_at.is_some_and(|at| at > asked_at)
        } else {
            st.tokens.valid_for(REFRESH_MARGIN)
        };
        if fresh_enough {
            return Ok(st.tokens.access_token.clone());
        }
        let Some(refresh_token) = st.tokens.refresh_token.clone() else {
            let reason =
                "the access token expired and the provider issued no refresh token".to_owned();
            st.reauth = Some(reason.clone());
            return Err(ProviderError::Reauth(reason));
        };
        match refresh(&self.endpoints, &self.http, &refresh_token).await {
            Ok(tokens) => {
                (self.persist)(&tokens);
                st.tokens = tokens;
                st.refreshed_at = Some(Instant::now());
                Ok(st.tokens.access_token.clone())
            }
            Err(ProviderError::Reauth(reason)) => {
                tracing::warn!(token_url = %self.endpoints.token_url, %reason, "OAuth grant revoked");
                st.reauth = Some(reason.clone());
                Err(ProviderError::Reauth(reason))
            }
            Err(other) => Err(other),
        }
    }
}

impl TokenSource for Session {
    fn access_token(
        &self,
        force_refresh: bool,
    ) -> Pin<Box<dyn Future<Output = Result<String, ProviderError>> + Send + '_>> {
        Box::pin(self.token(force_refresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> OAuthEndpoints {
        OAuthEndpoints::google(
            "cid",
            "very-secret",
            "https://gw.example.test/oauth/google/callback",
        )
    }

    #[test]
    fn authorize_url_has_pkce_state_scopes_and_offline_access() {
        let pending = authorize(&endpoints()).expect("valid endpoints");
        let url = reqwest::Url::parse(&pending.url).expect("url");
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q.get("client_id").map(String::as_str), Some("cid"));
        assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
        assert_eq!(
            q.get("code_challenge_method").map(String::as_str),
            Some("S256")
        );
        assert_eq!(q.get("state"), Some(&pending.state));
        assert_eq!(q.get("access_type").map(String::as_str), Some("offline"));
        assert_eq!(q.get("prompt").map(String::as_str), Some("consent"));
        assert_eq!(
            q.get("scope").map(String::as_str),
            Some(GOOGLE_SCOPES.join(" ").as_str())
        );
        assert!(pending.pkce_verifier.len() >= 43);
        assert!(!q.contains_key("client_secret"));
        let other = authorize(&endpoints()).expect("valid endpoints");
        assert_ne!(other.state, pending.state);
    }

    #[test]
    fn microsoft_preset_requests_offline_access() {
        let e = OAuthEndpoints::microsoft("", "cid", "s", "https://gw.example.test/cb");
        assert_eq!(
            e.token_url,
            "https://login.microsoftonline.com/common/oauth2/v2.0/token"
        );
        assert!(e.scopes.iter().any(|s| s == "offline_access"));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let t = Tokens {
            access_token: "ya29.secret-access".into(),
            expires_at: Utc::now(),
            refresh_token: Some("1//secret-refresh".into()),
        };
        let text = format!("{t:?} {:?}", endpoints());
        assert!(!text.contains("secret-access"));
        assert!(!text.contains("secret-refresh"));
        assert!(!text.contains("very-secret"));
        let pending = authorize(&endpoints()).expect("valid endpoints");
        assert!(!format!("{pending:?}").contains(&pending.pkce_verifier));
    }

    #[test]
    fn bad_urls_are_permanent_errors() {
        let e = endpoints().with_endpoints("not a url", "also not");
        assert!(matches!(authorize(&e), Err(ProviderError::Permanent(_))));
    }
}
