//! Destinations: the namespaces and cluster-scoped kinds an environment's applications may
//! reach, in the spirit of Argo CD's AppProject `destinations` and `clusterResourceWhitelist`.
//!
//! Set by the platform team in `bowline.yaml` (an application cannot widen them) and checked
//! on every object before any request about it reaches a cluster: when rendering (so a commit
//! with an object outside them does not validate) and again in [`crate::sync`], which `plan`,
//! `sync`, deploy stages, drift and self-heal all go through, with the scope the cluster's
//! discovery reports. This is not a policy: no annotation waives it.

use globset::{Glob, GlobMatcher};

use crate::config::{DestinationsSpec, Environment, GroupKind};
use crate::diff::ObjectKey;

/// An object outside its environment's destinations.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{object} is outside the destinations of environment \"{environment}\": {reason}")]
pub struct Refused {
    /// The object, as `apiVersion kind namespace/name`.
    pub object: String,
    /// The environment.
    pub environment: String,
    /// What is not allowed.
    pub reason: String,
}

/// The destinations of one environment, ready to check objects against.
#[derive(Debug, Clone)]
pub struct Destinations {
    environment: String,
    namespaces: Vec<Pattern>,
    cluster_resources: Vec<(Pattern, Pattern)>,
}

/// One glob with its source text. A glob that does not compile matches nothing (validation
/// reports it), so a typo never widens what is allowed.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    matcher: Option<GlobMatcher>,
}

impl Pattern {
    fn new(text: &str) -> Pattern {
        Pattern {
            text: text.to_string(),
            matcher: Glob::new(text).ok().map(|g| g.compile_matcher()),
        }
    }

    fn matches(&self, value: &str) -> bool {
        self.matcher.as_ref().is_some_and(|m| m.is_match(value))
    }
}

/// Why a glob of `destinations` is invalid, for validation.
pub fn glob_error(text: &str) -> Option<String> {
    Glob::new(text).err().map(|e| e.kind().to_string())
}

impl Destinations {
    /// The destinations of `environment` (its own namespace when it declares none).
    pub fn of(environment: &Environment) -> Destinations {
        Destinations::from_spec(
            &environment.name,
            &environment.destinations,
            &environment.namespace,
        )
    }

    /// The destinations `spec` declares for `environment`, or `default_namespace` alone.
    pub fn from_spec(
        environment: &str,
        spec: &DestinationsSpec,
        default_namespace: &str,
    ) -> Destinations {
        let namespaces = if spec.namespaces.is_empty() {
            vec![Pattern::new(&glob_literal(default_namespace))]
        } else {
            spec.namespaces.iter().map(|n| Pattern::new(n)).collect()
        };
        Destinations {
            environment: environment.to_string(),
            namespaces,
            cluster_resources: spec
                .cluster_resources
                .iter()
                .map(|GroupKind { group, kind }| (Pattern::new(group), Pattern::new(kind)))
                .collect(),
        }
    }

    /// Whether applications may use `namespace`.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|p| p.matches(namespace))
    }

    /// Checks the object `key`; `cluster_scoped` says whether its kind has no namespace
    /// (from discovery when a cluster is at hand, from the built-in kinds otherwise).
    pub fn check(&self, key: &ObjectKey, cluster_scoped: bool) -> Result<(), Refused> {
        let refuse = |reason: String| Refused {
            object: key.to_string(),
            environment: self.environment.clone(),
            reason,
        };
        if cluster_scoped {
            let group = key.group();
            if group.is_empty() && key.kind == "Namespace" && self.allows_namespace(&key.name) {
                return Ok(());
            }
            if self
                .cluster_resources
                .iter()
                .any(|(g, k)| g.matches(group) && k.matches(&key.kind))
            {
                return Ok(());
            }
            let kind = if group.is_empty() {
                key.kind.clone()
            } else {
                format!("{}.{group}", key.kind)
            };
            return Err(refuse(format!(
                "cluster-scoped kind {kind} is not in its clusterResources{}",
                self.listed_kinds()
            )));
        }
        match &key.namespace {
            Some(ns) if self.allows_namespace(ns) => Ok(()),
            Some(ns) => Err(refuse(format!(
                "namespace \"{ns}\" is not among its namespaces ({})",
                self.listed_namespaces()
            ))),
            None => Err(refuse(
                "the kind is namespaced but the object names no namespace".to_string(),
            )),
        }
    }

    fn listed_namespaces(&self) -> String {
        self.namespaces
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn listed_kinds(&self) -> String {
        if self.cluster_resources.is_empty() {
            return " (none allowed)".to_string();
        }
        let kinds: Vec<String> = self
            .cluster_resources
            .iter()
            .map(|(g, k)| {
                if g.text.is_empty() {
                    k.text.clone()
                } else {
                    format!("{}.{}", k.text, g.text)
                }
            })
            .collect();
        format!(" ({})", kinds.join(", "))
    }
}

/// `name` as a glob matching only itself (namespaces never contain glob characters, but a
/// default must not become a wildcard if one ever did).
fn glob_literal(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '\\' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectKey {
        ObjectKey {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        }
    }

    fn spec(namespaces: &[&str], kinds: &[(&str, &str)]) -> DestinationsSpec {
        DestinationsSpec {
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            cluster_resources: kinds
                .iter()
                .map(|(g, k)| GroupKind {
                    group: g.to_string(),
                    kind: k.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn by_default_only_the_environment_namespace_and_its_namespace_object() {
        let d = Destinations::from_spec("staging", &DestinationsSpec::default(), "shop-staging");
        let deployment = key("apps/v1", "Deployment", Some("shop-staging"), "api");
        assert_eq!(d.check(&deployment, false), Ok(()));
        let ns = key("v1", "Namespace", None, "shop-staging");
        assert_eq!(d.check(&ns, true), Ok(()));
        let elsewhere = key("v1", "ConfigMap", Some("payments"), "payments-config");
        let refused = d.check(&elsewhere, false).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "v1 ConfigMap payments/payments-config is outside the destinations of environment \
             \"staging\": namespace \"payments\" is not among its namespaces (shop-staging)"
        );
        let other_ns = key("v1", "Namespace", None, "kube-system");
        assert!(d.check(&other_ns, true).is_err());
        let binding = key(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            None,
            "everyone-admin",
        );
        assert_eq!(
            d.check(&binding, true).unwrap_err().reason,
            "cluster-scoped kind ClusterRoleBinding.rbac.authorization.k8s.io is not in its \
             clusterResources (none allowed)"
        );
    }

    #[test]
    fn globs_and_listed_kinds_widen_it() {
        let d = Destinations::from_spec(
            "prod",
            &spec(
                &["shop-*", "shared"],
                &[
                    ("rbac.authorization.k8s.io", "ClusterRole"),
                    ("*", "Ingress*"),
                ],
            ),
            "shop",
        );
        assert!(
            d.check(&key("v1", "Service", Some("shop-eu"), "s"), false)
                .is_ok()
        );
        assert!(
            d.check(&key("v1", "Service", Some("shared"), "s"), false)
                .is_ok()
        );
        // The default namespace is no longer implied once namespaces are listed.
        assert!(
            d.check(&key("v1", "Service", Some("shop"), "s"), false)
                .is_err()
        );
        let role = key("rbac.authorization.k8s.io/v1", "ClusterRole", None, "r");
        assert!(d.check(&role, true).is_ok());
        let class = key("networking.k8s.io/v1", "IngressClass", None, "c");
        assert!(d.check(&class, true).is_ok());
        let binding = key(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            None,
            "b",
        );
        assert!(d.check(&binding, true).is_err());
    }

    #[test]
    fn a_namespaced_kind_without_namespace_and_a_bad_glob_are_refused() {
        let d = Destinations::from_spec("dev", &spec(&["[bad"], &[]), "dev");
        assert!(
            d.check(&key("v1", "Service", Some("[bad"), "s"), false)
                .is_err()
        );
        assert!(d.check(&key("v1", "Service", None, "s"), false).is_err());
        assert!(glob_error("[bad").is_some());
        assert!(glob_error("shop-*").is_none());
    }
}
