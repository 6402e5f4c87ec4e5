//! Instantiating a pipeline template for one application: parameter values (application
//! variables over template defaults) are filled into the stage fields, and the stages become
//! typed [`Stage`]s.
//!
//! A field that is exactly `{{ expression }}` takes the expression's value with its type (so an
//! integer parameter stays an integer); other templated strings are rendered as text. Fields
//! evaluated at run time — `when`, precondition expressions and webhook requests, which may use
//! secrets and execution state — are left as written.

use serde_json::{Map, Value};

use super::model::{Application, PipelineTemplate, Stage};
use super::schema;
use crate::diagnostic::pointer_join;
use crate::template;

/// Fields evaluated when the stage runs, not when the template is instantiated.
pub const RUNTIME_FIELDS: &[&str] = &["when", "expression", "url", "headers", "body"];

/// Roots of the variables instantiation provides to stage fields.
pub const INSTANTIATION_ROOTS: &[&str] = &["parameters", "app"];

/// A failure to instantiate one field.
#[derive(Debug, Clone, PartialEq)]
pub struct InstantiateError {
    /// Pointer into the template document.
    pub pointer: String,
    /// What went wrong.
    pub message: String,
}

/// Parameter values of an application for a template: declared defaults, overridden by the
/// application's variables (unknown variables are ignored here; validation reports them).
pub fn parameter_values(template: &PipelineTemplate, app: &Application) -> Map<String, Value> {
    let mut values = Map::new();
    let variables = app.spec.pipeline.as_ref().map(|p| &p.variables);
    for parameter in &template.spec.parameters {
        let value = variables
            .and_then(|v| v.get(&parameter.name))
            .or(parameter.default.as_ref());
        if let Some(value) = value {
            values.insert(parameter.name.clone(), value.clone());
        }
    }
    values
}

/// The typed stages of `template` for `app`.
pub fn instantiate(
    template: &PipelineTemplate,
    app: &Application,
) -> Result<Vec<Stage>, Vec<InstantiateError>> {
    let context = serde_json::json!({
        "parameters": parameter_values(template, app),
        "app": { "name": app.metadata.name, "labels": app.metadata.labels },
    });
    let env = template::sandbox();
    let ctx = minijinja::Value::from(minijinja::value::Serde(&context));
    let mut errors = Vec::new();
    let mut stages = Vec::new();
    for (i, raw) in template.spec.stages.iter().enumerate() {
        let pointer = format!("/spec/stages/{i}");
        let before = errors.len();
        let filled = fill(&env, &ctx, raw, &pointer, false, &mut errors);
        if errors.len() > before {
            continue;
        }
        // Filled-in values get the schema's checks (ranges, formats) that a template string
        // skipped, with the schema's messages and pointers.
        let violations = schema::validate_stage(&filled);
        if !violations.is_empty() {
            errors.extend(violations.into_iter().map(|v| InstantiateError {
                pointer: format!("{pointer}{}", v.pointer),
                message: format!("after filling in parameters: {}", v.message),
            }));
            continue;
        }
        match serde_json::from_value::<Stage>(filled) {
            Ok(stage) => stages.push(stage),
            Err(e) => errors.push(InstantiateError {
                pointer,
                message: format!("after filling in parameters: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(stages)
    } else {
        Err(errors)
    }
}

fn fill(
    env: &minijinja::Environment<'static>,
    ctx: &minijinja::Value,
    value: &Value,
    pointer: &str,
    runtime: bool,
    errors: &mut Vec<InstantiateError>,
) -> Value {
    match value {
        Value::String(text) if !runtime && template::is_templated(text) => {
            match render_field(env, ctx, text) {
                Ok(v) => v,
                Err(message) => {
                    errors.push(InstantiateError {
                        pointer: pointer.to_string(),
                        message,
                    });
                    value.clone()
                }
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    fill(
                        env,
                        ctx,
                        v,
                        &pointer_join(pointer, &i.to_string()),
                        runtime,
                        errors,
                    )
                })
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let runtime = runtime || RUNTIME_FIELDS.contains(&k.as_str());
                    (
                        k.clone(),
                        fill(env, ctx, v, &pointer_join(pointer, k), runtime, errors),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn render_field(
    env: &minijinja::Environment<'static>,
    ctx: &minijinja::Value,
    text: &str,
) -> Result<Value, String> {
    if let Some(expr) = template::sole_expression(text) {
        let compiled = env
            .compile_expression(expr)
            .map_err(|e| template::error_message(&e))?;
        let result = compiled
            .eval(ctx)
            .map_err(|e| template::error_message(&e))?;
        return serde_json::to_value(&result).map_err(|e| e.to_string());
    }
    env.render_str(text, ctx)
        .map(Value::String)
        .map_err(|e| template::error_message(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(stages: Value) -> PipelineTemplate {
        serde_json::from_value(json!({
            "metadata": {"name": "t"},
            "spec": {"parameters": [{"name": "weight", "type": "integer", "default": 10},
                                     {"name": "lifetime", "type": "duration"}],
                     "stages": stages}
        }))
        .unwrap()
    }

    fn app(variables: Value) -> Application {
        serde_json::from_value(json!({
            "metadata": {"name": "api"},
            "spec": {"image": {"repository": "r", "tag": "1"}, "environments": {"prod": null},
                     "pipeline": {"template": "t", "variables": variables}}
        }))
        .unwrap()
    }

    #[test]
    fn typed_values_and_text_are_filled_in() {
        let t = template(json!([
            {"name": "d", "type": "deploy", "environment": "prod", "strategy": "canary",
             "canary": {"weight": "{{ parameters.weight }}"}},
            {"name": "a", "type": "canaryAnalysis", "environment": "prod", "lifetime": "{{ parameters.lifetime }}",
             "when": "{{ not_filled }}"},
            {"name": "m", "type": "manualJudgment", "instructions": "Check {{ app.name }}"}
        ]));
        let stages = instantiate(&t, &app(json!({"lifetime": "45m"}))).unwrap();
        let json = serde_json::to_value(&stages).unwrap();
        assert_eq!(json[0]["canary"]["weight"], 10);
        assert_eq!(json[1]["lifetime"], "45m");
        assert_eq!(json[1]["when"], "{{ not_filled }}");
        assert_eq!(json[2]["instructions"], "Check api");
    }

    #[test]
    fn bad_values_point_at_the_stage() {
        let t = template(json!([
            {"name": "a", "type": "canaryAnalysis", "environment": "prod", "lifetime": "{{ parameters.lifetime }}"}
        ]));
        let errors = instantiate(&t, &app(json!({"lifetime": "soon"}))).unwrap_err();
        assert_eq!(errors[0].pointer, "/spec/stages/0/lifetime");
        assert!(
            errors[0].message.contains("\"soon\" is not valid"),
            "{errors:?}"
        );
    }
}
