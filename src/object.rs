//! Kubernetes objects as every step names them: their key (apiVersion, kind, namespace,
//! name), the labels and annotations bowline puts on what it manages, and the order kinds are
//! applied in (namespaces and CRDs first, then what workloads depend on — accounts, config,
//! storage, RBAC, services —, workloads after their config, then routing; unknown kinds, custom
//! resources, last; modelled on Helm's install order). A leaf module: `render`, `diff`,
//! `cluster` and `sync` share it without depending on one another.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// Label on every object bowline manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "bowline";
/// Label and annotation naming the application an object belongs to (pruning deletes only
/// objects carrying it for that app).
pub const APP_KEY: &str = "bowline.dev/app";
/// Label and annotation naming the environment.
pub const ENV_KEY: &str = "bowline.dev/environment";

/// Which object: the identity every step uses (render, plan, diff, cluster, store).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectKey {
    /// `apiVersion`, e.g. `apps/v1`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// Namespace; absent for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// The key of `object` (empty strings where fields are missing).
    pub fn of(object: &Value) -> ObjectKey {
        let text = |p: &str| object.pointer(p).and_then(Value::as_str);
        ObjectKey {
            api_version: text("/apiVersion").unwrap_or_default().to_string(),
            kind: text("/kind").unwrap_or_default().to_string(),
            namespace: text("/metadata/namespace").map(str::to_string),
            name: text("/metadata/name").unwrap_or_default().to_string(),
        }
    }

    /// The API group (empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }
}

impl fmt::Display for ObjectKey {
    /// `apps/v1 Deployment shop/checkout-api`, or `v1 Namespace shop` when cluster-scoped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {} {ns}/{}", self.api_version, self.kind, self.name),
            None => write!(f, "{} {} {}", self.api_version, self.kind, self.name),
        }
    }
}

/// Kinds in apply order.
const KIND_ORDER: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
];

/// Built-in kinds that are not namespaced.
const CLUSTER_SCOPED: &[&str] = &[
    "APIService",
    "CSIDriver",
    "CSINode",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "FlowSchema",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PodSecurityPolicy",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "RuntimeClass",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
];

/// Rank of a kind in apply order; unknown kinds rank after all known ones.
pub fn kind_rank(kind: &str) -> usize {
    KIND_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KIND_ORDER.len())
}

/// True for built-in kinds that live outside namespaces. Custom resources are assumed
/// namespaced, as most are; the live cluster's discovery decides at apply time.
pub fn is_cluster_scoped(kind: &str) -> bool {
    CLUSTER_SCOPED.contains(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_crds_first_workloads_after_config() {
        assert!(kind_rank("Namespace") < kind_rank("CustomResourceDefinition"));
        assert!(kind_rank("CustomResourceDefinition") < kind_rank("ConfigMap"));
        assert!(kind_rank("ConfigMap") < kind_rank("Deployment"));
        assert!(kind_rank("Service") < kind_rank("Deployment"));
        assert!(kind_rank("Deployment") < kind_rank("Ingress"));
        assert!(kind_rank("Ingress") < kind_rank("ServiceMonitor"));
    }
}
