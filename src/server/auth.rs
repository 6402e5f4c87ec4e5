//! Authentication of the JSON API: bearer tokens with a scope (`read` or `operate`) and an
//! optional list of applications, read from the tokens file; failed authentications are
//! logged (with the client address, never the token), counted, and throttled per client
//! address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AppState, error_json};

/// Why API tokens could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A line is malformed.
    #[error("{file}:{line}: {message}")]
    Invalid {
        /// The tokens file.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// `GET` endpoints only: apps, executions, one execution.
    Read,
    /// Everything `Read` allows, and judgments and cancellations.
    Operate,
}

impl Scope {
    fn parse(text: &str) -> Option<Scope> {
        match text.trim() {
            "read" => Some(Scope::Read),
            "operate" => Some(Scope::Operate),
            _ => None,
        }
    }

    /// `read` or `operate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
        }
    }
}

/// One token: its name (what judgments record), digest, scope and applications.
#[derive(Clone)]
struct Token {
    name: String,
    digest: [u8; 32],
    scope: Scope,
    apps: Option<Vec<String>>,
}

/// Who an authenticated API request comes from, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// The token's scope.
    pub scope: Scope,
    /// The applications the token is limited to (`None`: all).
    pub apps: Option<Vec<String>>,
}

impl Caller {
    /// Whether the token may see and (with [`Scope::Operate`]) act on `app`.
    pub fn may_access(&self, app: &str) -> bool {
        self.apps
            .as_ref()
            .is_none_or(|apps| apps.iter().any(|a| a == app))
    }

    /// `Ok` when the token may access `app`, else the `403` answer saying so.
    #[allow(clippy::result_large_err)]
    pub fn check_app(&self, app: &str) -> Result<(), Response> {
        if self.may_access(app) {
            return Ok(());
        }
        Err(error_json(
            StatusCode::FORBIDDEN,
            format!(
                "token \"{}\" may not access application \"{app}\": it is limited to {}",
                self.name,
                self.apps.as_deref().unwrap_or_default().join(", ")
            ),
        ))
    }
}

/// Bearer tokens of the JSON API. Only digests are kept; comparison is constant-time.
#[derive(Clone, Default)]
pub struct ApiTokens {
    tokens: Vec<Token>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        f.debug_struct("ApiTokens").field("names", &names).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ApiTokens {
    /// Parses a tokens file, one token a line; blank lines and `#` comments are skipped:
    ///
    /// - `name:token` — scope `operate` on every application (the meaning of the format
    ///   before scopes existed);
    /// - `name:token:read` or `name:token:operate` — that scope on every application;
    /// - `name:token:SCOPE:app1,app2` — that scope on these applications only.
    ///
    /// Tokens must be at least 16 characters and cannot contain `:`; names are what judgments
    /// record. Errors name the file and line, never the token.
    pub fn parse(file: &str, text: &str) -> Result<ApiTokens, TokenError> {
        let mut tokens = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = |message: &str| TokenError::Invalid {
                file: file.to_string(),
                line: i + 1,
                message: message.to_string(),
            };
            let mut fields = line.splitn(4, ':');
            let name = fields.next().unwrap_or_default().trim();
            let Some(token) = fields.next().map(str::trim) else {
                return Err(invalid(
                    "expected `name:token`, `name:token:SCOPE` or `name:token:SCOPE:APP,…` (SCOPE: read or operate)",
                ));
            };
            if name.is_empty() {
                return Err(invalid("the name before `:` is empty"));
            }
            let scope = match fields.next() {
                None => Scope::Operate,
                // The field is not shown: it may be part of a token holding a `:`.
                Some(s) => Scope::parse(s).ok_or_else(|| {
                    invalid(
                        "the third field must be the scope `read` or `operate` (tokens cannot contain `:`)",
                    )
                })?,
            };
            let apps = match fields.next() {
                None => None,
                Some(list) => {
                    let apps: Vec<String> = list.split(',').map(|a| a.trim().to_string()).collect();
                    if apps
                        .iter()
                        .any(|a| a.is_empty() || a.contains(':') || a.contains(char::is_whitespace))
                    {
                        return Err(invalid(
                            "the fourth field must be application names separated by `,`",
                        ));
                    }
                    Some(apps)
                }
            };
            if token.len() < 16 {
                return Err(invalid("the token is shorter than 16 characters"));
            }
            tokens.push(Token {
                name: name.to_string(),
                digest: digest(token),
                scope,
                apps,
            });
        }
        Ok(ApiTokens { tokens })
    }

    /// Whether no token is configured (the API then refuses every request).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller whose token is in the `Authorization: Bearer …` header: `Err(true)` when
    /// there is no bearer token, `Err(false)` when it is not one of ours.
    fn identify(&self, headers: &HeaderMap) -> Result<Caller, bool> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(true)?;
        let given = digest(given);
        let mut found = None;
        // Every token is compared, so timing does not tell which one matched.
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&given)) {
                found = Some(token);
            }
        }
        found
            .map(|t| Caller {
                name: t.name.clone(),
                scope: t.scope,
                apps: t.apps.clone(),
            })
            .ok_or(false)
    }
}

/// How failed authentications are throttled: each client address may fail `burst` times in
/// a row; one more failure is allowed per `refill`. A client with none left gets `429` with
/// `Retry-After` for every API request, before its token is even looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// Failures allowed in a burst (default 5).
    pub burst: u32,
    /// Time that gives back one allowed failure (default 12 s: 5 a minute).
    pub refill: Duration,
    /// Client addresses remembered at most (default 4096); beyond, new addresses share one
    /// more budget.
    pub max_clients: usize,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            burst: 5,
            refill: Duration::from_secs(12),
            max_clients: 4096,
        }
    }
}

/// Failures left per client address (IPv6 by /64 prefix), refilled over time; bounded in
/// size.
#[derive(Debug)]
pub(super) struct AuthThrottle {
    limits: AuthLimits,
    clients: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// The key of addresses that are unknown or do not fit in the map.
const SHARED: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// The throttling key of a client address: IPv4 as is, IPv6 by its /64 prefix (one host
/// usually holds a whole /64).
fn client_key(addr: Option<IpAddr>) -> IpAddr {
    match addr {
        None => SHARED,
        Some(IpAddr::V4(v4)) => IpAddr::V4(v4),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AuthThrottle {
    pub(super) fn new(limits: AuthLimits) -> AuthThrottle {
        AuthThrottle {
            limits,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (f64, Instant)>> {
        // Plain counters: a panic elsewhere cannot leave them half-written.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Failures left for `key` now.
    fn left(&self, entry: Option<&(f64, Instant)>, now: Instant) -> f64 {
        let burst = f64::from(self.limits.burst);
        let Some((left, at)) = entry else {
            return burst;
        };
        let refill = self.limits.refill.as_secs_f64().max(f64::EPSILON);
        (left + now.saturating_duration_since(*at).as_secs_f64() / refill).min(burst)
    }

    /// How long `key` must wait before its next attempt, when it has no failure left.
    pub(super) fn blocked(&self, key: IpAddr) -> Option<Duration> {
        let clients = self.lock();
        let now = Instant::now();
        let left = self.left(clients.get(&key), now);
        (left < 1.0).then(|| self.limits.refill.mul_f64(1.0 - left))
    }

    /// Counts a failure of `key`.
    pub(super) fn fail(&self, key: IpAddr) {
        let mut clients = self.lock();
        let now = Instant::now();
        let mut key = key;
        if !clients.contains_key(&key) && clients.len() >= self.limits.max_clients {
            // Clients back to a full budget hold no information.
            let burst = f64::from(self.limits.burst);
            let refill = self.limits.refill.as_secs_f64().max(f64::EPSILON);
            clients.retain(|_, (left, at)| {
                *left + now.saturating_duration_since(*at).as_secs_f64() / refill < burst
            });
            if clients.len() >= self.limits.max_clients {
                key = SHARED;
            }
        }
        let left = self.left(clients.get(&key), now);
        clients.insert(key, ((left - 1.0).max(0.0), now));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Why a request to the API was refused.
enum Refusal {
    /// No token is configured at all.
    Disabled,
    /// No or an unknown token.
    Unauthorized,
    /// Too many failures from this client: wait this long.
    Throttled(Duration),
    /// The token's scope does not allow the request.
    Scope(Caller),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Disabled => error_json(
                StatusCode::FORBIDDEN,
                "the API is disabled: no API tokens are configured (--api-tokens-file)",
            ),
            Refusal::Unauthorized => {
                let mut r = error_json(StatusCode::UNAUTHORIZED, "missing or unknown bearer token");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                r
            }
            Refusal::Throttled(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let mut r = error_json(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("too many failed authentications from this address; retry in {secs} s"),
                );
                if let Ok(v) = header::HeaderValue::from_str(&secs.max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            Refusal::Scope(caller) => error_json(
                StatusCode::FORBIDDEN,
                format!(
                    "token \"{}\" has the {} scope: it may only read (GET); judgments and cancellations need the operate scope",
                    caller.name,
                    caller.scope.as_str()
                ),
            ),
        }
    }
}

/// The middleware in front of `/api/v1`: identifies the bearer token, refuses throttled
/// clients, unknown tokens and requests beyond the token's scope, and hands the [`Caller`]
/// to the handler.
pub(super) async fn authenticate(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.tokens.is_empty() {
        return Refusal::Disabled.into_response();
    }
    let peer: Option<SocketAddr> = request
        .extensions()
        .get::<ConnectInfo<super::ClientAddr>>()
        .map(|c| c.0.0);
    let remote = peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string());
    let key = client_key(peer.map(|p| p.ip()));
    let failures = &state.daemon.metrics.api_auth_failures;
    if let Some(wait) = state.throttle.blocked(key) {
        failures.with_label_values(&["throttled"]).inc();
        tracing::warn!(%remote, method = %request.method(), path = %request.uri().path(), "API request refused: too many failed authentications");
        return Refusal::Throttled(wait).into_response();
    }
    let caller = match state.tokens.identify(request.headers()) {
        Ok(caller) => caller,
        Err(missing) => {
            let reason = if missing { "missing" } else { "unknown" };
            failures.with_label_values(&[reason]).inc();
            state.throttle.fail(key);
            tracing::warn!(%remote, reason, method = %request.method(), path = %request.uri().path(), "API authentication failed");
            return Refusal::Unauthorized.into_response();
        }
    };
    let needs = if matches!(*request.method(), Method::GET | Method::HEAD) {
        Scope::Read
    } else {
        Scope::Operate
    };
    if caller.scope < needs {
        tracing::warn!(%remote, token = %caller.name, method = %request.method(), path = %request.uri().path(), "API request beyond the token's scope");
        return Refusal::Scope(caller).into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn tokens_parse_and_identify() {
        let tokens = ApiTokens::parse(
            "tokens",
            "# ops\nalice: aaaaaaaaaaaaaaaaaaaa\n\nci:bbbbbbbbbbbbbbbbbbbb\n",
        )
        .expect("valid");
        let ci = tokens.identify(&bearer("bbbbbbbbbbbbbbbbbbbb")).unwrap();
        assert_eq!(ci.name, "ci");
        assert_eq!(ci.scope, Scope::Operate, "name:token keeps its meaning");
        assert_eq!(ci.apps, None);
        assert_eq!(tokens.identify(&bearer("nope")), Err(false));
        assert_eq!(tokens.identify(&HeaderMap::new()), Err(true));
        assert!(!format!("{tokens:?}").contains("aaaa"));
    }

    #[test]
    fn scopes_and_apps() {
        let tokens = ApiTokens::parse(
            "tokens",
            "viewer:rrrrrrrrrrrrrrrrrrrr:read\n\
             ops:oooooooooooooooooooo:operate\n\
             team:tttttttttttttttttttt:operate:checkout-api, storefront-web\n\
             peek:pppppppppppppppppppp:read:checkout-api\n",
        )
        .expect("valid");
        let id = |t: &str| tokens.identify(&bearer(t)).unwrap();
        assert_eq!(id("rrrrrrrrrrrrrrrrrrrr").scope, Scope::Read);
        assert_eq!(id("oooooooooooooooooooo").scope, Scope::Operate);
        let team = id("tttttttttttttttttttt");
        assert_eq!(
            team.apps,
            Some(vec!["checkout-api".into(), "storefront-web".into()])
        );
        assert!(team.may_access("storefront-web"));
        assert!(!team.may_access("inventory-worker"));
        assert!(team.check_app("inventory-worker").is_err());
        assert!(id("oooooooooooooooooooo").may_access("inventory-worker"));
        assert_eq!(id("pppppppppppppppppppp").scope, Scope::Read);
    }

    #[test]
    fn bad_token_lines_name_file_and_line() {
        let err = ApiTokens::parse("/etc/t", "ok:cccccccccccccccccccc\njusttoken\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/etc/t:2: expected `name:token`"),
            "{err}"
        );
        let err = ApiTokens::parse("/etc/t", "x:short\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "/etc/t:1: the token is shorter than 16 characters"
        );
        // A token holding `:` is refused without showing any part of it.
        let err = ApiTokens::parse("/etc/t", "\nci:abcdefgh:secretpart12345678\n").unwrap_err();
        assert!(
            err.to_string().starts_with("/etc/t:2: the third field"),
            "{err}"
        );
        assert!(!err.to_string().contains("secretpart"), "{err}");
        let err = ApiTokens::parse("/etc/t", "ci:cccccccccccccccccccc:read:a,,b\n").unwrap_err();
        assert!(
            err.to_string().starts_with("/etc/t:1: the fourth field"),
            "{err}"
        );
        let err = ApiTokens::parse("/etc/t", ":cccccccccccccccccccc\n").unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
    }

    #[test]
    fn throttle_allows_a_burst_then_refills() {
        let throttle = AuthThrottle::new(AuthLimits {
            burst: 3,
            refill: Duration::from_millis(100),
            max_clients: 2,
        });
        let a = client_key(Some("192.0.2.1".parse().unwrap()));
        for _ in 0..3 {
            assert_eq!(throttle.blocked(a), None);
            throttle.fail(a);
        }
        let wait = throttle.blocked(a).expect("blocked");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(throttle.blocked(a), None, "one failure allowed again");
        throttle.fail(a);
        assert!(throttle.blocked(a).is_some());
        // Bounded: the third address shares the overflow budget.
        throttle.fail(client_key(Some("192.0.2.2".parse().unwrap())));
        throttle.fail(client_key(Some("192.0.2.3".parse().unwrap())));
        throttle.fail(client_key(Some("192.0.2.4".parse().unwrap())));
        assert_eq!(throttle.len(), 3, "two addresses and the shared budget");
        assert!(throttle.blocked(SHARED).is_none(), "two of three used");
    }

    #[test]
    fn client_keys() {
        let v6 = |s: &str| client_key(Some(s.parse().unwrap()));
        assert_eq!(v6("2001:db8::1"), v6("2001:db8::ffff:1"), "same /64");
        assert_ne!(v6("2001:db8::1"), v6("2001:db8:0:1::1"));
        assert_eq!(v6("::ffff:192.0.2.1"), v6("192.0.2.1"));
        assert_eq!(client_key(None), SHARED);
    }
}
