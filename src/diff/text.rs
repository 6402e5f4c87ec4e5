//! Unified diffs of normalized objects, rendered as YAML with sorted keys.

use serde_json::Value;
use similar::TextDiff;

use super::ObjectKey;

/// A unified diff between `live` and `desired` (either may be absent) with `context` lines
/// around changes (3 when zero) and headers naming the object, e.g.
/// `--- live apps/v1 Deployment shop/web` / `+++ desired apps/v1 Deployment shop/web`.
pub fn unified(
    key: &ObjectKey,
    live: Option<&Value>,
    desired: Option<&Value>,
    context: usize,
) -> String {
    let old = live.map(to_yaml).unwrap_or_default();
    let new = desired.map(to_yaml).unwrap_or_default();
    let old_header = match live {
        Some(_) => format!("live {key}"),
        None => "live (absent)".to_string(),
    };
    let new_header = match desired {
        Some(_) => format!("desired {key}"),
        None => "desired (absent: to be deleted)".to_string(),
    };
    TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(if context == 0 { 3 } else { context })
        .header(&old_header, &new_header)
        .to_string()
}

/// YAML text of `value` with map keys in sorted order.
pub fn to_yaml(value: &Value) -> String {
    // serde_json's Map is ordered by key (the `preserve_order` feature is not enabled; a unit
    // test in the parent module fails if that ever changes), so the text is canonical.
    serde_yaml::to_string(value).unwrap_or_else(|e| format!("# not representable as YAML: {e}\n"))
}
