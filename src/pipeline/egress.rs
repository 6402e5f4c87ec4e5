//! Outgoing HTTP of webhook stages and `http_ok` preconditions. Their URLs come from the
//! config repository, so a merged change can point them anywhere the daemon can reach: they
//! follow no redirect to another host (and so forward no header across one), and refuse
//! link-local and cloud metadata addresses (169.254.0.0/16 with 169.254.169.254, fe80::/10,
//! fd00:ec2::254) — checked on the URL's literal address and on every address its name
//! resolves to — unless the daemon is started with `--allow-link-local-egress`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Redirects followed at most, all on the same host.
const MAX_REDIRECTS: usize = 5;

/// AWS's IPv6 instance metadata address.
const EC2_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// Why an outgoing request was refused before it was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The URL does not parse.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// Only http and https are allowed.
    #[error("scheme \"{0}\" is not allowed (http or https only)")]
    Scheme(String),
    /// The address is link-local or a metadata service.
    #[error(
        "{0} is a link-local or cloud metadata address; refused (start the daemon with --allow-link-local-egress to allow it)"
    )]
    LinkLocal(IpAddr),
}

/// True for the addresses outgoing requests refuse by default.
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4.is_link_local();
            }
            (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == EC2_METADATA_V6
        }
    }
}

/// Checks `url` before any connection: scheme, and its host when that is an address (names
/// are checked when resolved, see [`client`]).
pub fn check_url(url: &str, allow_link_local: bool) -> Result<(), EgressError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| EgressError::InvalidUrl(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(EgressError::Scheme(parsed.scheme().to_string()));
    }
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        _ => None,
    };
    match ip {
        Some(ip) if !allow_link_local && is_link_local(ip) => Err(EgressError::LinkLocal(ip)),
        _ => Ok(()),
    }
}

/// Resolves names with the system resolver and drops refused addresses; a name with only
/// refused addresses fails to resolve.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| !is_link_local(a.ip()))
                .collect();
            if allowed.is_empty()
                && let Some(first) = found.first()
            {
                return Err(Box::new(EgressError::LinkLocal(first.ip())) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client of webhook stages and `http_ok`.
pub fn client(allow_link_local: bool, timeout: Duration) -> reqwest::Client {
    // reqwest is built without a default TLS provider; ring is bowline's one. A no-op when
    // the process installed it already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first();
        let same_host = first.is_some_and(|f| {
            f.host_str() == attempt.url().host_str()
                && f.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if !same_host {
            // The 3xx answer itself is the result: nothing is sent to the other host.
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(redirects);
    if !allow_link_local {
        builder = builder.dns_resolver(Arc::new(GuardedResolver));
    }
    // Building fails only when the TLS backend cannot initialise; the default client then
    // still refuses nothing worse than it would have (its redirects are the library's).
    builder.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "could not build the guarded HTTP client");
        reqwest::Client::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_metadata_addresses_are_refused() {
        for refused in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_link_local(refused.parse().unwrap()), "{refused}");
        }
        for allowed in ["127.0.0.1", "10.0.0.1", "8.8.8.8", "::1", "fd00::1"] {
            assert!(!is_link_local(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_connection() {
        assert_eq!(
            check_url("http://169.254.169.254/latest/meta-data/", false),
            Err(EgressError::LinkLocal("169.254.169.254".parse().unwrap()))
        );
        assert!(check_url("http://[fd00:ec2::254]/", false).is_err());
        assert!(check_url("http://169.254.169.254/", true).is_ok());
        assert!(check_url("https://grafana.example/api", false).is_ok());
        assert!(matches!(
            check_url("file:///etc/passwd", false),
            Err(EgressError::Scheme(_))
        ));
    }
}
