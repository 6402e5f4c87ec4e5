//! The JSON Schemas of `schema/`, compiled once and applied to every document at load time.
//!
//! Raw validator messages are reworded where they would puzzle a user: unknown fields get a
//! "did you mean", `anyOf`/`pattern` failures quote the schema's description of what is
//! expected, and missing fields point at their parent object.

use std::sync::OnceLock;

use jsonschema::Validator;
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use crate::diagnostic::{did_you_mean, pointer_join};

/// The document kinds of a config repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `bowline.yaml`.
    Repository,
    /// `apps/<name>/app.yaml`.
    Application,
    /// `pipelines/<name>.yaml`.
    PipelineTemplate,
    /// `canary/<name>.yaml`.
    CanaryConfig,
}

impl Kind {
    /// The `kind:` string of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Repository => "Repository",
            Kind::Application => "Application",
            Kind::PipelineTemplate => "PipelineTemplate",
            Kind::CanaryConfig => "CanaryConfig",
        }
    }

    /// The schema text shipped in `schema/`.
    pub fn schema_text(self) -> &'static str {
        match self {
            Kind::Repository => include_str!("../../schema/repository.schema.json"),
            Kind::Application => include_str!("../../schema/application.schema.json"),
            Kind::PipelineTemplate => include_str!("../../schema/pipeline-template.schema.json"),
            Kind::CanaryConfig => include_str!("../../schema/canary-config.schema.json"),
        }
    }

    const ALL: [Kind; 4] = [
        Kind::Repository,
        Kind::Application,
        Kind::PipelineTemplate,
        Kind::CanaryConfig,
    ];

    fn index(self) -> usize {
        match self {
            Kind::Repository => 0,
            Kind::Application => 1,
            Kind::PipelineTemplate => 2,
            Kind::CanaryConfig => 3,
        }
    }
}

/// One schema violation: where (JSON pointer into the document) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaViolation {
    /// Pointer to the offending value (for unknown or missing fields: to that field).
    pub pointer: String,
    /// Plain-language message.
    pub message: String,
}

struct Compiled {
    schema: Value,
    validator: Validator,
}

fn compiled() -> &'static [Compiled; 4] {
    static COMPILED: OnceLock<[Compiled; 4]> = OnceLock::new();
    COMPILED.get_or_init(|| {
        Kind::ALL.map(|kind| {
            // The schemas are part of the binary and covered by tests (`schemas_compile`), so a
            // failure here is a build defect, not bad input.
            let schema: Value =
                serde_json::from_str(kind.schema_text()).expect("embedded schema is valid JSON");
            let validator = jsonschema::draft202012::options()
                .build(&schema)
                .expect("embedded schema compiles");
            Compiled { schema, validator }
        })
    })
}

/// Validates `document` against the schema of `kind`, returning every violation.
pub fn validate(kind: Kind, document: &Value) -> Vec<SchemaViolation> {
    let compiled = &compiled()[kind.index()];
    let mut out = Vec::new();
    for error in compiled.validator.iter_errors(document) {
        let pointer = error.instance_path().as_str().to_string();
        describe(&compiled.schema, &error, pointer, &mut out);
    }
    out
}

/// Validates one pipeline stage (after its parameters were filled in) against the stage
/// schema of PipelineTemplate; pointers are relative to the stage.
pub fn validate_stage(stage: &Value) -> Vec<SchemaViolation> {
    static STAGE: OnceLock<Validator> = OnceLock::new();
    let compiled = &compiled()[Kind::PipelineTemplate.index()];
    let validator = STAGE.get_or_init(|| {
        let mut schema = compiled.schema.clone();
        if let Some(obj) = schema.as_object_mut() {
            obj.insert("$ref".into(), Value::String("#/$defs/stage".into()));
            for key in [
                "type",
                "required",
                "properties",
                "additionalProperties",
                "title",
            ] {
                obj.remove(key);
            }
        }
        // Derived from the embedded schema, covered by tests: a failure is a build defect.
        jsonschema::draft202012::options()
            .build(&schema)
            .expect("stage schema compiles")
    });
    let mut out = Vec::new();
    for error in validator.iter_errors(stage) {
        let pointer = error.instance_path().as_str().to_string();
        describe(&compiled.schema, &error, pointer, &mut out);
    }
    out
}

/// Turns one validator error into violations with plain messages. `pointer` is where the
/// problem is (for `propertyNames`, the offending key rather than its object).
fn describe(
    schema: &Value,
    error: &jsonschema::ValidationError<'_>,
    pointer: String,
    out: &mut Vec<SchemaViolation>,
) {
    let schema_node = error
        .absolute_keyword_location()
        .and_then(|uri| uri.fragment().map(|f| f.as_str().to_string()))
        .and_then(|fragment| {
            let decoded = fragment.replace("%24", "$");
            let parent = decoded.rsplit_once('/').map_or("", |(p, _)| p).to_string();
            schema.pointer(&parent)
        });
    let description = schema_node
        .and_then(|n| n.get("description"))
        .and_then(Value::as_str);
    let shown = short_value(error.instance());
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let known = schema_node.map(known_properties).unwrap_or_default();
            // When a field of an `if/then` branch fails its own check, the validator also
            // counts that branch's fields as unevaluated; those are reported already.
            let allowed = schema_node
                .map(|n| allowed_for(n, error.instance()))
                .unwrap_or_default();
            for field in unexpected.iter().filter(|f| !allowed.contains(f)) {
                out.push(SchemaViolation {
                    pointer: pointer_join(&pointer, field),
                    message: format!(
                        "unknown field \"{field}\"{}",
                        did_you_mean(field, known.iter().map(String::as_str))
                    ),
                });
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            out.push(SchemaViolation {
                pointer: pointer_join(&pointer, name),
                message: format!("missing required field \"{name}\""),
            });
        }
        ValidationErrorKind::PropertyNames { error: inner } => {
            let key = inner.instance().as_str().unwrap_or_default();
            describe(schema, inner, pointer_join(&pointer, key), out);
        }
        ValidationErrorKind::AnyOf { .. }
        | ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::Pattern { .. } => {
            let message = match description {
                Some(d) => format!("{shown} is not valid: expected {}", lowercase_first(d)),
                None => shorten_message(&error.to_string(), error.instance()),
            };
            out.push(SchemaViolation { pointer, message });
        }
        ValidationErrorKind::Constant { expected_value } => {
            out.push(SchemaViolation {
                pointer,
                message: format!("must be {expected_value}, found {shown}"),
            });
        }
        _ => out.push(SchemaViolation {
            pointer,
            message: shorten_message(&error.to_string(), error.instance()),
        }),
    }
}

/// The validator's message with the offending value, which it prints whole, shortened.
fn shorten_message(message: &str, instance: &Value) -> String {
    let full = instance.to_string();
    let shown = short_value(instance);
    if full.len() > shown.len() {
        message.replacen(&full, &shown, 1)
    } else {
        message.to_string()
    }
}

/// Property names a schema object allows for this particular instance: its own properties
/// and those of the `allOf` branches whose `if` matches the instance's `type` field.
fn allowed_for(node: &Value, instance: &Value) -> Vec<String> {
    let mut names: Vec<String> = node
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let Some(kind) = instance.get("type") else {
        return names;
    };
    for branch in node
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let condition = branch.pointer("/if/properties/type");
        let matches = condition.is_some_and(|c| {
            c.get("const") == Some(kind)
                || c.get("enum")
                    .and_then(Value::as_array)
                    .is_some_and(|e| e.contains(kind))
        });
        if matches {
            if let Some(props) = branch
                .pointer("/then/properties")
                .and_then(Value::as_object)
            {
                names.extend(props.keys().cloned());
            }
        }
    }
    names
}

/// Property names a schema object allows, including those of `allOf`/`then` branches.
fn known_properties(node: &Value) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        names.extend(props.keys().cloned());
    }
    if let Some(all) = node.get("allOf").and_then(Value::as_array) {
        for branch in all {
            if let Some(then) = branch.get("then") {
                names.extend(known_properties(then));
            }
        }
    }
    names
}

/// A value as JSON, cut to 60 characters, for messages.
pub fn short_value(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_compile() {
        for kind in Kind::ALL {
            let _ = validate(kind, &json!({}));
        }
    }

    #[test]
    fn unknown_field_points_at_the_field_with_suggestion() {
        let doc = json!({"apiVersion": "bowline/v1", "kind": "CanaryConfig",
            "metadata": {"name": "c"},
            "spec": {"metrics": [{"name": "m", "groups": ["g"], "query": "up", "directon": "increase"}],
                     "classifier": {"groupWeights": {"g": 100}, "scoreThresholds": {"marginal": 75, "pass": 95}}}});
        let v = validate(Kind::CanaryConfig, &doc);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "/spec/metrics/0/directon");
        assert_eq!(
            v[0].message,
            "unknown field \"directon\" (did you mean \"direction\"?)"
        );
    }

    #[test]
    fn missing_field_points_below_parent() {
        let v = validate(
            Kind::Repository,
            &json!({"apiVersion": "bowline/v1", "kind": "Repository", "metadata": {"name": "r"}}),
        );
        assert_eq!(
            v,
            vec![SchemaViolation {
                pointer: "/spec".into(),
                message: "missing required field \"spec\"".into()
            }]
        );
    }

    #[test]
    fn pattern_failures_quote_the_description() {
        let v = validate(
            Kind::Repository,
            &json!({"apiVersion": "bowline/v1", "kind": "Repository", "metadata": {"name": "Bad_Name"},
            "spec": {"environments": [{"name": "s", "namespace": "n", "clusters": [{"name": "c", "context": "x"}]}]}}),
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "/metadata/name");
        assert!(
            v[0].message
                .starts_with("\"Bad_Name\" is not valid: expected a DNS-1123 label"),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn stage_fields_are_checked_per_type() {
        let doc = json!({"apiVersion": "bowline/v1", "kind": "PipelineTemplate", "metadata": {"name": "p"},
            "spec": {"stages": [{"name": "w", "type": "wait", "duration": "10x", "strategy": "rolling"}]}});
        let v = validate(Kind::PipelineTemplate, &doc);
        let pointers: Vec<_> = v.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/spec/stages/0/duration"), "{v:?}");
        assert!(pointers.contains(&"/spec/stages/0/strategy"), "{v:?}");
    }
}
