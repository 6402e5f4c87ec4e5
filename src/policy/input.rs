//! The input document of one evaluation:
//!
//! ```json
//! {"object": {...},
//!  "app": {"name", "labels", "image", "pipeline", "canary"},
//!  "environment": {"name", "namespace", "clusters", "production"},
//!  "pipeline": [stages] | null,
//!  "autoscaler": {HorizontalPodAutoscaler} | null}
//! ```
//!
//! `environment.namespace` is the app's namespace in that environment; `pipeline` holds the
//! stages of the app's pipeline template instantiated for the app (null when it has none);
//! `autoscaler` is the rendered HorizontalPodAutoscaler whose `scaleTargetRef` names the
//! object, if any.

use std::collections::{BTreeMap, HashMap};

use regorus::Value;
use serde::Deserialize;
use serde_json::json;

use super::Target;
use super::builtin::is_production;
use crate::render::RenderedObject;

/// The parts of the input shared by every object of one target, converted once.
pub struct Shared {
    app: Value,
    environment: Value,
    pipeline: Value,
    /// HPAs by (namespace, kind, name) of the object they scale.
    autoscalers: HashMap<(Option<String>, String, String), Value>,
}

impl Shared {
    /// Converts the target once for all its objects.
    pub fn new(target: &Target<'_>, objects: &[RenderedObject]) -> Shared {
        let app = target.app;
        let namespace = app.namespace_in(target.environment);
        let image = crate::config::Image::effective(
            app.spec.image.as_ref(),
            app.spec
                .environments
                .get(&target.environment.name)
                .and_then(|e| e.as_ref())
                .and_then(|e| e.image.as_ref()),
        );
        let app_value = json!({
            "name": app.metadata.name,
            "labels": app.metadata.labels,
            "image": image,
            "pipeline": target.pipeline_name,
            "canary": app.spec.canary.as_ref().map(|c| &c.config),
        });
        let environment = json!({
            "name": target.environment.name,
            "namespace": namespace,
            "clusters": target.environment.clusters.iter().map(|c| &c.name).collect::<Vec<_>>(),
            "production": is_production(&target.environment.name),
        });
        let pipeline = match target.pipeline {
            Some(stages) => serde_json::to_value(stages).unwrap_or(serde_json::Value::Null),
            None => serde_json::Value::Null,
        };
        let autoscalers = objects
            .iter()
            .filter(|o| o.kind == "HorizontalPodAutoscaler")
            .filter_map(|o| {
                let target = o.object.pointer("/spec/scaleTargetRef")?;
                let kind = target.get("kind")?.as_str()?.to_string();
                let name = target.get("name")?.as_str()?.to_string();
                Some(((o.namespace.clone(), kind, name), to_value(&o.object)))
            })
            .collect();
        Shared {
            app: Value::from(app_value),
            environment: Value::from(environment),
            pipeline: Value::from(pipeline),
            autoscalers,
        }
    }

    /// The input for one object.
    pub fn input(&self, object: &RenderedObject) -> Value {
        let autoscaler = self
            .autoscalers
            .get(&(
                object.namespace.clone(),
                object.kind.clone(),
                object.name.clone(),
            ))
            .cloned()
            .unwrap_or(Value::Null);
        let mut map = BTreeMap::new();
        map.insert(Value::from("object"), to_value(&object.object));
        map.insert(Value::from("app"), self.app.clone());
        map.insert(Value::from("environment"), self.environment.clone());
        map.insert(Value::from("pipeline"), self.pipeline.clone());
        map.insert(Value::from("autoscaler"), autoscaler);
        Value::from(map)
    }
}

/// Converts a JSON value without copying it first (undefined should the conversion fail, as
/// regorus's own `From<serde_json::Value>`).
fn to_value(json: &serde_json::Value) -> Value {
    Value::deserialize(json).unwrap_or(Value::Undefined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_like_regorus_from_json() {
        let json = json!({"a": [1, 2.5, -3, "x", null, true], "b": {"c": {}}, "n": 18446744073709551615u64});
        assert_eq!(to_value(&json), Value::from(json.clone()));
    }
}
