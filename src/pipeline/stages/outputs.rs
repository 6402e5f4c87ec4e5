//! Typed outputs of the stages whose outputs are read back: by the stage itself when it
//! resumes (checkpoints), and by later stages (`promote` and `rollback` read what `deploy`
//! did). They serialize to the JSON stored in every execution so far, so executions stored
//! before still load; keys not modelled here are kept as they are.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::config::{BlueGreenSettings, Strategy};
use crate::diff::ObjectKey;
use crate::pipeline::StageError;

/// Reads the outputs of stage `stage` as `T`; stored outputs that do not fit are a terminal
/// failure naming the stage.
pub(crate) fn read<T: DeserializeOwned>(stage: &str, outputs: &Value) -> Result<T, StageError> {
    T::deserialize(outputs)
        .map_err(|e| StageError::terminal(format!("stage {stage}: stored outputs: {e}")))
}

/// Scale-down delay of blue/green when neither the stage nor its outputs say (seconds).
pub(crate) const DEFAULT_SCALE_DOWN_DELAY: u64 = 30;

/// What a deploy stage applied to one cluster (checkpointed, so a resumed stage only waits
/// for health there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Applied {
    /// The canary tracks (`true`).
    Tracks(bool),
    /// The blue/green revision.
    Revision(String),
}

/// A canary track Deployment created by a deploy stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CanaryWorkload {
    /// Cluster name.
    pub cluster: String,
    /// The Deployment.
    pub key: ObjectKey,
}

/// The blue/green state of a deploy stage, carried on by `promote` once it switched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlueGreenOutputs {
    /// The revision deployed (`<name>-<revision>` Deployments).
    #[serde(default)]
    pub revision: String,
    /// Whether the Services route to it.
    #[serde(default)]
    pub switched: bool,
    /// Seconds the previous revision keeps running after the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_delay: Option<u64>,
    /// The stage's blue/green settings.
    #[serde(default)]
    pub settings: BlueGreenSettings,
    /// The revision the Services routed to before the switch: absent before a switch,
    /// `null` when there was none (a first delivery).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub previous: Option<Option<String>>,
    /// When the Services were switched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<DateTime<Utc>>,
}

impl BlueGreenOutputs {
    /// The previous revision, if the switch found one.
    pub fn previous_revision(&self) -> Option<&str> {
        self.previous.as_ref().and_then(|p| p.as_deref())
    }

    /// The scale-down delay in seconds.
    pub fn delay(&self) -> u64 {
        self.scale_down_delay.unwrap_or(DEFAULT_SCALE_DOWN_DELAY)
    }
}

/// A field that is present (possibly `null`) as `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The blue/green part of a deploy or promote stage's outputs (both switch Services and
/// scale the previous revision down).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BlueGreenCheckpoint {
    /// The blue/green state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenOutputs>,
    /// The previous revision was scaled to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_scaled_down: Option<bool>,
}

/// Health per cluster of a stage that syncs (`"healthy"` once synced and healthy).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ClustersCheckpoint {
    /// Cluster name → health.
    #[serde(default)]
    pub clusters: BTreeMap<String, String>,
}

/// Health recorded for a synced cluster.
pub(crate) const HEALTHY: &str = "healthy";

/// Outputs of a `deploy` stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeployOutputs {
    /// The strategy deployed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// What was applied per cluster (canary and blue/green).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<BTreeMap<String, Applied>>,
    /// Canary tracks created, recorded before they are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_workloads: Option<Vec<CanaryWorkload>>,
    /// Blue/green state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenOutputs>,
    /// Health per synced cluster (rolling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<BTreeMap<String, String>>,
    /// The previous blue/green revision was scaled to zero (`autoPromote`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_scaled_down: Option<bool>,
    /// Everything else (execution window, rejection reason, …), kept as is.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl DeployOutputs {
    /// The strategy, rolling when not recorded.
    pub fn strategy(&self) -> Strategy {
        self.strategy.unwrap_or(Strategy::Rolling)
    }

    /// The canary tracks recorded for `cluster`.
    pub fn canary_tracks(&self, cluster: &str) -> Vec<ObjectKey> {
        self.canary_workloads
            .iter()
            .flatten()
            .filter(|w| w.cluster == cluster)
            .map(|w| w.key.clone())
            .collect()
    }

    /// Whether `what` was applied to `cluster`.
    pub fn applied_in(&self, cluster: &str, what: &Applied) -> bool {
        self.applied
            .as_ref()
            .and_then(|a| a.get(cluster))
            .is_some_and(|a| a == what)
    }
}

/// Outputs of a `promote` stage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromoteOutputs {
    /// The strategy promoted (`canary`, `blueGreen`, `rolling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<Strategy>,
    /// Production health after a canary promotion (also a checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<String>,
    /// The Services were switched (a checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched: Option<bool>,
    /// The blue/green revision promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Blue/green state after the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenOutputs>,
    /// Everything else, kept as is.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// What a `rollback` stage went back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum RolledBack {
    /// Canary tracks removed.
    Canary,
    /// Blue/green routed back or the new revision scaled down.
    BlueGreen,
    /// An earlier revision re-applied.
    Revision,
    /// Nothing to roll back to.
    Nothing,
}

/// Outputs of a `rollback` stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RollbackOutputs {
    /// What was rolled back.
    pub rolled_back: RolledBack,
    /// The blue/green revision rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The blue/green revision routed to again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<String>,
    /// The revision re-applied per cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revisions: Option<BTreeMap<String, String>>,
}

impl RollbackOutputs {
    /// Rolled back `what`, with nothing else to say.
    pub fn of(what: RolledBack) -> RollbackOutputs {
        RollbackOutputs {
            rolled_back: what,
            revision: None,
            restored: None,
            revisions: None,
        }
    }
}

/// The JSON of typed outputs.
pub(crate) fn to_value<T: Serialize>(outputs: &T) -> Result<Value, StageError> {
    serde_json::to_value(outputs).map_err(|e| StageError::terminal(format!("outputs: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Round trip: stored JSON → typed → the same JSON.
    fn same<T: DeserializeOwned + Serialize>(stored: Value) -> T {
        let typed: T = read("s", &stored).expect("reads");
        assert_eq!(serde_json::to_value(&typed).expect("writes"), stored);
        typed
    }

    #[test]
    fn deploy_outputs_of_every_strategy_load_as_stored_before() {
        let canary: DeployOutputs = same(json!({
            "strategy": "canary",
            "canaryWorkloads": [
                {"cluster": "staging-eu-west-1", "key": {"apiVersion": "apps/v1", "kind": "Deployment",
                 "namespace": "shop-staging", "name": "web-baseline"}},
                {"cluster": "staging-eu-west-1", "key": {"apiVersion": "apps/v1", "kind": "Deployment",
                 "namespace": "shop-staging", "name": "web-canary"}}
            ],
            "applied": {"staging-eu-west-1": true},
            "windowOpenedAt": "2026-12-07T15:00:00Z"
        }));
        assert_eq!(canary.strategy(), Strategy::Canary);
        assert_eq!(canary.canary_tracks("staging-eu-west-1").len(), 2);
        assert!(canary.canary_tracks("other").is_empty());
        assert!(canary.applied_in("staging-eu-west-1", &Applied::Tracks(true)));
        assert!(canary.rest.contains_key("windowOpenedAt"));

        let blue_green: DeployOutputs = same(json!({
            "strategy": "blueGreen",
            "applied": {"staging-eu-west-1": "abc1234"},
            "blueGreen": {"revision": "abc1234", "switched": true, "scaleDownDelay": 60,
                          "settings": {"previewService": "web-preview", "autoPromote": true, "scaleDownDelay": "1m"},
                          "previous": null, "switchedAt": "2026-12-07T15:58:59.123456789Z"},
            "previousScaledDown": true
        }));
        let bg = blue_green.blue_green.expect("blue/green");
        assert_eq!(bg.revision, "abc1234");
        assert!(bg.switched && bg.settings.auto_promote);
        assert_eq!(
            bg.previous,
            Some(None),
            "switched, with no previous revision"
        );
        assert_eq!(bg.delay(), 60);
        assert!(
            blue_green
                .applied
                .is_some_and(|a| a["staging-eu-west-1"] == Applied::Revision("abc1234".into()))
        );

        let not_switched: DeployOutputs = same(json!({
            "strategy": "blueGreen",
            "blueGreen": {"revision": "abc1234", "switched": false, "scaleDownDelay": 30,
                          "settings": {"autoPromote": false}}
        }));
        assert_eq!(not_switched.blue_green.expect("bg").previous, None);

        let rolling: DeployOutputs = same(json!({
            "strategy": "rolling",
            "clusters": {"staging-eu-west-1": "healthy"},
            "reason": "skipped"
        }));
        assert_eq!(rolling.strategy(), Strategy::Rolling);
        // Before strategies were recorded.
        let old: DeployOutputs = same(json!({}));
        assert_eq!(old.strategy(), Strategy::Rolling);
    }

    #[test]
    fn promote_and_rollback_outputs_load_as_stored_before() {
        let promoted: PromoteOutputs = same(json!({
            "promoted": "blueGreen", "revision": "abc1234",
            "blueGreen": {"revision": "abc1234", "switched": true, "scaleDownDelay": 30,
                          "settings": {"autoPromote": false}, "previous": "0123abc",
                          "switchedAt": "2026-12-07T15:58:59Z"}
        }));
        assert_eq!(
            promoted.blue_green.expect("bg").previous_revision(),
            Some("0123abc")
        );
        same::<PromoteOutputs>(json!({"promoted": "canary", "production": "healthy"}));
        same::<PromoteOutputs>(json!({"promoted": "rolling"}));
        same::<RollbackOutputs>(json!({"rolledBack": "canary"}));
        same::<RollbackOutputs>(json!({"rolledBack": "nothing"}));
        same::<RollbackOutputs>(
            json!({"rolledBack": "blueGreen", "revision": "abc1234", "restored": "0123abc"}),
        );
        same::<RollbackOutputs>(
            json!({"rolledBack": "revision", "revisions": {"staging-eu-west-1": "rev0"}}),
        );
    }

    #[test]
    fn partial_checkpoints_write_only_their_fields() {
        let canary = DeployOutputs {
            canary_workloads: Some(vec![]),
            ..DeployOutputs::default()
        };
        assert_eq!(
            to_value(&canary).expect("json"),
            json!({"canaryWorkloads": []})
        );
        let mut clusters = ClustersCheckpoint::default();
        clusters.clusters.insert("a".into(), HEALTHY.into());
        assert_eq!(
            to_value(&clusters).expect("json"),
            json!({"clusters": {"a": "healthy"}})
        );
        assert_eq!(
            to_value(&BlueGreenCheckpoint {
                previous_scaled_down: Some(true),
                ..BlueGreenCheckpoint::default()
            })
            .expect("json"),
            json!({"previousScaledDown": true})
        );
        let err = read::<DeployOutputs>("deploy-staging", &json!({"strategy": 3}))
            .expect_err("not a strategy");
        assert!(!err.is_transient());
        assert!(
            err.message()
                .starts_with("stage deploy-staging: stored outputs:"),
            "{err}"
        );
    }
}
