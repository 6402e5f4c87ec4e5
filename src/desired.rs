//! The desired state of an application in one environment and cluster: the render, shaped by
//! the deploy strategy's state there. One function per strategy, called by the deploy stages
//! (what they apply), by `promote` (what it records as deployed, which drift and self-heal then
//! compare with) and by `plan` and pull-request plans (what they dry-run), so no part undoes
//! another's work — self-heal never routes a blue/green Service back to every revision.
//!
//! Blue/green: every Deployment runs as `<name>-<revision>` with the `bowline.dev/revision`
//! label on it, its selector and its pods; the preview Service selects the new revision; the
//! other Services select the active revision (the new one once switched). Rolling and canary
//! deploys leave the render as it is once promoted.
//!
//! Canary: while an execution runs, [`canary_tracks`] adds a baseline and a canary Deployment
//! next to each production one. They belong to the strategy: pruning never deletes them (nor
//! earlier blue/green revisions), drift waits for executions of the app, and the execution
//! removes them when it ends, whatever its outcome.

use serde_json::{Value, json};

use crate::config::{BlueGreenSettings, CanaryDeploySettings, ConfigRepo, StageAction, Strategy};

/// Label naming the revision of blue/green workloads and what Services select.
pub const REVISION_LABEL: &str = "bowline.dev/revision";

/// Label telling canary and baseline pods apart (`baseline` or `canary`).
pub const TRACK_LABEL: &str = "bowline.dev/track";

/// True for an object a strategy runs beside the render: a canary track or a blue/green
/// revision. Such objects are the strategy's to remove, never pruning's.
pub fn belongs_to_strategy(o: &Value) -> bool {
    let labels = &o["metadata"]["labels"];
    labels.get(REVISION_LABEL).is_some() || labels.get(TRACK_LABEL).is_some()
}

/// The canary tracks of rendered Deployment `deployment`, whose live production version is
/// `production`: `<name>-baseline` running the production pod template and `<name>-canary`
/// the new one, each with the replicas of `settings` (`replicas`, else `weight` percent of
/// production's rounded up, at least one).
pub fn canary_tracks(
    deployment: &Value,
    production: &Value,
    settings: &CanaryDeploySettings,
) -> [Value; 2] {
    let prod_replicas = production["spec"]["replicas"].as_i64().unwrap_or(1);
    let replicas = match (settings.replicas, settings.weight) {
        (Some(r), _) => i64::from(r),
        (None, Some(w)) => (prod_replicas * i64::from(w) + 99) / 100,
        (None, None) => 1,
    }
    .max(1);
    [
        variant(
            deployment,
            production,
            "baseline",
            TRACK_LABEL,
            "baseline",
            replicas,
        ),
        variant(
            deployment,
            deployment,
            "canary",
            TRACK_LABEL,
            "canary",
            replicas,
        ),
    ]
}

/// The revision name used in object names and labels: the first 12 characters of the commit
/// id, lower case (`new` when there is none).
pub fn revision_name(revision: &str) -> String {
    let short: String = revision
        .chars()
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    if short.is_empty() {
        "new".to_string()
    } else {
        short
    }
}

fn kind_is(o: &Value, kind: &str) -> bool {
    o.get("kind").and_then(Value::as_str) == Some(kind)
}

/// True for a Deployment.
pub fn is_deployment(o: &Value) -> bool {
    kind_is(o, "Deployment")
}

/// True for a Service.
pub fn is_service(o: &Value) -> bool {
    kind_is(o, "Service")
}

/// True for the blue/green preview Service of `settings`.
pub fn is_preview(o: &Value, settings: &BlueGreenSettings) -> bool {
    is_service(o)
        && settings
            .preview_service
            .as_deref()
            .is_some_and(|p| o["metadata"]["name"].as_str() == Some(p))
}

/// `<name>-<suffix>` Deployment from `template_source`'s pod template, with `label=value` on
/// the object, its selector and its pods.
pub fn variant(
    deployment: &Value,
    template_source: &Value,
    suffix: &str,
    label: &str,
    value: &str,
    replicas: i64,
) -> Value {
    let mut d = deployment.clone();
    let name = format!(
        "{}-{suffix}",
        deployment["metadata"]["name"].as_str().unwrap_or_default()
    );
    d["metadata"]["name"] = json!(name);
    d["metadata"]["labels"][label] = json!(value);
    d["spec"]["replicas"] = json!(replicas);
    d["spec"]["template"] = template_source["spec"]["template"].clone();
    d["spec"]["template"]["metadata"]["labels"][label] = json!(value);
    d["spec"]["selector"]["matchLabels"][label] = json!(value);
    if let Some(meta) = d["spec"]["template"]["metadata"].as_object_mut() {
        meta.remove("creationTimestamp");
    }
    d
}

/// The Service `service` selecting the pods of `revision`.
pub fn selecting(service: &Value, revision: &str) -> Value {
    let mut s = service.clone();
    s["spec"]["selector"][REVISION_LABEL] = json!(revision);
    s
}

/// The blue/green desired state of rendered `objects` at `revision`: versioned Deployments,
/// the preview Service on `revision`, the other Services on `active` (`None`: no Service
/// routes yet, so they are left out until the switch; `Some(revision)` once switched).
pub fn blue_green(
    objects: &[Value],
    revision: &str,
    active: Option<&str>,
    settings: &BlueGreenSettings,
) -> Vec<Value> {
    objects
        .iter()
        .filter_map(|o| {
            if is_deployment(o) {
                let replicas = o["spec"]["replicas"].as_i64().unwrap_or(1);
                Some(variant(o, o, revision, REVISION_LABEL, revision, replicas))
            } else if is_preview(o, settings) {
                Some(selecting(o, revision))
            } else if is_service(o) {
                active.map(|a| selecting(o, a))
            } else {
                Some(o.clone())
            }
        })
        .collect()
}

/// The blue/green settings of the deploy stage `app` runs in `environment`, when that stage
/// deploys blue/green.
pub fn blue_green_settings(
    repo: &ConfigRepo,
    app: &str,
    environment: &str,
) -> Option<BlueGreenSettings> {
    let doc = &repo.apps.get(app)?.doc;
    let template = repo.pipelines.get(repo.pipeline_of(doc)?)?;
    let stages = crate::config::instantiate::instantiate(&template.doc, doc).ok()?;
    stages.into_iter().find_map(|s| match s.action {
        StageAction::Deploy(d)
            if s.environment.as_deref() == Some(environment)
                && d.strategy == Strategy::BlueGreen =>
        {
            Some(d.blue_green.unwrap_or_default())
        }
        _ => None,
    })
}

/// The revision a live blue/green Service of `objects` selects, if one exists and selects one.
pub fn active_revision<'l>(
    objects: &[Value],
    settings: &BlueGreenSettings,
    live: impl Fn(&Value) -> Option<&'l Value>,
) -> Option<String> {
    objects
        .iter()
        .filter(|o| is_service(o) && !is_preview(o, settings))
        .filter_map(live)
        .find_map(|l| {
            l["spec"]["selector"][REVISION_LABEL]
                .as_str()
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render() -> Vec<Value> {
        vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {}}}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-preview"},
                "spec": {"selector": {"app": "web"}}}),
        ]
    }

    fn settings() -> BlueGreenSettings {
        BlueGreenSettings {
            preview_service: Some("web-preview".into()),
            ..BlueGreenSettings::default()
        }
    }

    #[test]
    fn switched_blue_green_keeps_versioned_workloads_and_selectors() {
        let desired = blue_green(&render(), "abc123", Some("abc123"), &settings());
        let names: Vec<&str> = desired
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(names, ["web", "web-abc123", "web", "web-preview"]);
        assert_eq!(
            desired[1]["spec"]["selector"]["matchLabels"][REVISION_LABEL],
            "abc123"
        );
        assert_eq!(desired[1]["spec"]["replicas"], 4);
        assert_eq!(desired[2]["spec"]["selector"][REVISION_LABEL], "abc123");
        assert_eq!(desired[3]["spec"]["selector"][REVISION_LABEL], "abc123");
    }

    #[test]
    fn before_the_switch_the_active_service_stays_on_the_active_revision() {
        let desired = blue_green(&render(), "new1", Some("old1"), &settings());
        assert_eq!(desired[2]["spec"]["selector"][REVISION_LABEL], "old1");
        assert_eq!(desired[3]["spec"]["selector"][REVISION_LABEL], "new1");
        // First deploy: nothing routes yet, the active Service waits for the switch.
        let first = blue_green(&render(), "new1", None, &settings());
        assert_eq!(first.len(), 3);
        let live = json!({"spec": {"selector": {"app": "web", REVISION_LABEL: "old1"}}});
        let active = active_revision(&render(), &settings(), |o| {
            (o["metadata"]["name"] == "web").then_some(&live)
        });
        assert_eq!(active.as_deref(), Some("old1"));
    }

    #[test]
    fn canary_tracks_run_both_templates_beside_production() {
        let rendered = &render()[1];
        let mut production = rendered.clone();
        production["spec"]["template"]["spec"] = json!({"containers": [{"image": "web:1"}]});
        production["spec"]["replicas"] = json!(12);
        let weighted = CanaryDeploySettings {
            replicas: None,
            weight: Some(10),
        };
        let [baseline, canary] = canary_tracks(rendered, &production, &weighted);
        assert_eq!(baseline["metadata"]["name"], "web-baseline");
        assert_eq!(canary["metadata"]["name"], "web-canary");
        assert_eq!(
            baseline["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:1"
        );
        assert_eq!(canary["spec"]["template"]["spec"], json!({}));
        // 10 % of 12, rounded up.
        assert_eq!(baseline["spec"]["replicas"], 2);
        assert_eq!(
            canary["spec"]["selector"]["matchLabels"][TRACK_LABEL],
            "canary"
        );
        assert!(belongs_to_strategy(&canary) && belongs_to_strategy(&baseline));
        assert!(!belongs_to_strategy(rendered));
        let fixed = CanaryDeploySettings {
            replicas: Some(3),
            weight: Some(10),
        };
        assert_eq!(
            canary_tracks(rendered, &production, &fixed)[1]["spec"]["replicas"],
            3
        );
        let tiny = CanaryDeploySettings::default();
        assert_eq!(
            canary_tracks(rendered, &production, &tiny)[0]["spec"]["replicas"],
            1
        );
    }

    #[test]
    fn revision_names_are_short_and_lower_case() {
        assert_eq!(revision_name("ABCDEF0123456789"), "abcdef012345");
        assert_eq!(revision_name(""), "new");
    }
}
