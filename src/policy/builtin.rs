//! The built-in policies, embedded in the binary from the repository's `policies/` directory
//! so bowline works anywhere. `policies/README.md` describes each one.

use super::PolicySource;

/// (file, Rego text) of every built-in module, helpers first.
const BUILTIN: &[(&str, &str)] = &[
    ("policies/lib.rego", include_str!("../../policies/lib.rego")),
    (
        "policies/image_tag.rego",
        include_str!("../../policies/image_tag.rego"),
    ),
    (
        "policies/resources.rego",
        include_str!("../../policies/resources.rego"),
    ),
    (
        "policies/probes.rego",
        include_str!("../../policies/probes.rego"),
    ),
    (
        "policies/privileged_container.rego",
        include_str!("../../policies/privileged_container.rego"),
    ),
    (
        "policies/host_path.rego",
        include_str!("../../policies/host_path.rego"),
    ),
    (
        "policies/host_network.rego",
        include_str!("../../policies/host_network.rego"),
    ),
    (
        "policies/production_gate.rego",
        include_str!("../../policies/production_gate.rego"),
    ),
    (
        "policies/production_replicas.rego",
        include_str!("../../policies/production_replicas.rego"),
    ),
    (
        "policies/namespace.rego",
        include_str!("../../policies/namespace.rego"),
    ),
];

/// Path prefix of the built-in policies in messages (`builtin:policies/x.rego`), so they
/// are never confused with the config repository's own `policies/`.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// The built-in policy sources.
pub fn sources() -> Vec<PolicySource> {
    BUILTIN
        .iter()
        .map(|(file, text)| PolicySource {
            file: format!("{BUILTIN_PREFIX}{file}"),
            text: (*text).to_string(),
        })
        .collect()
}

/// An environment is production when its name is `production` or `prod`, or starts with
/// `production-` or `prod-` (`prod-eu`).
pub fn is_production(environment: &str) -> bool {
    let name = environment.to_ascii_lowercase();
    name == "production"
        || name == "prod"
        || name.starts_with("production-")
        || name.starts_with("prod-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_environments_by_name() {
        for name in [
            "production",
            "prod",
            "prod-eu",
            "production-us",
            "Production",
        ] {
            assert!(is_production(name), "{name}");
        }
        for name in ["staging", "preprod", "production2", "dev", "products"] {
            assert!(!is_production(name), "{name}");
        }
    }
}
