//! Expressions evaluated while an execution runs: stage `when` conditions, precondition
//! expressions and the templated fields of webhooks, in the MiniJinja sandbox.
//!
//! The context holds `execution` (`id`, `revision`), `revision` (the config-repository
//! revision delivered), `parameters`, `app`, `trigger`, `environment` (of the stage, if any),
//! `stages` (by name: `status` in lower case and `outputs`) and `secrets`. Functions:
//! `success()` (no stage has failed, been rejected or been canceled so far), `failure()` (some
//! stage has failed: not true after a mere rejection or cancellation), `rejected()` (a manual
//! judgment was rejected), `canceled()` (some stage was canceled), `always()`,
//! `stage(name)` (like `stages[name]` but with the status in upper case, as Spinnaker writes
//! it: `stage("canary").status == "SUCCEEDED"`), and `http_ok(url)` in preconditions (a GET
//! answering 2xx within 10 s).

use std::collections::BTreeMap;
use std::sync::Arc;

use minijinja::value::Value as JValue;
use minijinja::{Error, ErrorKind};
use serde::Serialize;
use serde_json::Value;

use crate::store::StageStatus;

/// What a stage looks like to expressions.
#[derive(Debug, Clone, Serialize)]
pub struct StageView {
    /// `succeeded`, `failed`, `rejected`, `skipped`, `running`, `waiting`, `not_started`,
    /// `canceled`.
    pub status: String,
    /// The stage's outputs.
    pub outputs: Value,
}

impl StageView {
    /// The view of a stage with `status` and `outputs`.
    pub fn new(status: StageStatus, outputs: Value) -> StageView {
        StageView {
            status: status.as_str().to_ascii_lowercase(),
            outputs,
        }
    }
}

/// Everything expressions can see.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExprContext {
    /// The execution: `id` and `revision`.
    pub execution: Value,
    /// The config-repository revision the execution delivers.
    pub revision: String,
    /// Pipeline parameters of the app.
    pub parameters: Value,
    /// The application (`name`, `labels`, `image`, …).
    pub app: Value,
    /// What started the execution.
    pub trigger: Value,
    /// The stage's environment (`name`, `namespace`, …), if any.
    pub environment: Value,
    /// Stages by name.
    pub stages: BTreeMap<String, StageView>,
    /// Secrets by name (never logged).
    pub secrets: BTreeMap<String, String>,
}

/// Why an expression could not be evaluated.
#[derive(Debug, thiserror::Error)]
#[error("expression `{expression}`: {message}")]
pub struct ExprError {
    /// The expression or template.
    pub expression: String,
    /// The problem.
    pub message: String,
}

/// Performs `http_ok` checks; the engine supplies one backed by its HTTP client.
pub type HttpCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

fn environment(ctx: &ExprContext, http: Option<HttpCheck>) -> minijinja::Environment<'static> {
    let mut env = crate::template::sandbox();
    let any = |status: &str| ctx.stages.values().any(|s| s.status == status);
    let (failed, rejected, canceled) = (any("failed"), any("rejected"), any("canceled"));
    env.add_function("success", move || !(failed || rejected || canceled));
    env.add_function("failure", move || failed);
    env.add_function("rejected", move || rejected);
    env.add_function("canceled", move || canceled);
    env.add_function("always", || true);
    let stages = ctx.stages.clone();
    env.add_function("stage", move |name: String| -> Result<JValue, Error> {
        let view = stages.get(&name).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("no stage named \"{name}\" in this pipeline"),
            )
        })?;
        Ok(JValue::from(minijinja::value::Serde(serde_json::json!({
            "status": view.status.to_ascii_uppercase(),
            "outputs": view.outputs,
        }))))
    });
    if let Some(http) = http {
        env.add_function("http_ok", move |url: String| http(&url));
    }
    env
}

fn error(expression: &str, e: impl std::fmt::Display) -> ExprError {
    ExprError {
        expression: expression.to_string(),
        message: e.to_string(),
    }
}

/// Evaluates a condition. Anything but a boolean result is an error, so a typo does not
/// silently count as false.
pub fn eval_bool(
    expression: &str,
    ctx: &ExprContext,
    http: Option<HttpCheck>,
) -> Result<bool, ExprError> {
    let env = environment(ctx, http);
    let compiled = env
        .compile_expression(expression)
        .map_err(|e| error(expression, e))?;
    let value = compiled
        .eval(JValue::from(minijinja::value::Serde(ctx)))
        .map_err(|e| error(expression, e))?;
    match value.kind() {
        minijinja::value::ValueKind::Bool => Ok(value.is_true()),
        other => Err(error(
            expression,
            format!("must be true or false, not a {other} ({value})"),
        )),
    }
}

/// Renders every string inside `value` as a template (webhook URL, headers and body).
pub fn render_value(value: &Value, ctx: &ExprContext) -> Result<Value, ExprError> {
    let env = environment(ctx, None);
    let context = JValue::from(minijinja::value::Serde(ctx));
    render_in(&env, value, &context)
}

fn render_in(
    env: &minijinja::Environment<'_>,
    value: &Value,
    ctx: &JValue,
) -> Result<Value, ExprError> {
    Ok(match value {
        Value::String(s) if crate::template::is_templated(s) => {
            Value::String(env.render_str(s, ctx.clone()).map_err(|e| error(s, e))?)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_in(env, v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_in(env, v, ctx)?)))
                .collect::<Result<_, ExprError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> ExprContext {
        let mut stages = BTreeMap::new();
        stages.insert(
            "deploy-staging".into(),
            StageView::new(StageStatus::Succeeded, json!({"revision": "abc"})),
        );
        stages.insert(
            "canary".into(),
            StageView::new(StageStatus::Failed, json!({})),
        );
        ExprContext {
            parameters: json!({"canaryWeight": 10}),
            app: json!({"name": "web"}),
            stages,
            secrets: [("token".to_string(), "s3cr3t".to_string())].into(),
            ..ExprContext::default()
        }
    }

    #[test]
    fn conditions() {
        let c = ctx();
        assert!(
            eval_bool("stages['deploy-staging'].status == 'succeeded'", &c, None).expect("eval")
        );
        assert!(eval_bool("stage('canary').status == 'FAILED'", &c, None).expect("eval"));
        assert!(eval_bool("failure()", &c, None).expect("eval"));
        assert!(!eval_bool("success()", &c, None).expect("eval"));
        assert!(eval_bool("parameters.canaryWeight > 5 and always()", &c, None).expect("eval"));
        let e = eval_bool("parameters.canaryWeight", &c, None).expect_err("not a bool");
        assert!(e.to_string().contains("must be true or false"), "{e}");
        let e = eval_bool("stage('nope').status", &c, None).expect_err("unknown stage");
        assert!(e.to_string().contains("no stage named \"nope\""), "{e}");
        let e = eval_bool("parameters.missing == 1", &c, None).expect_err("strict undefined");
        assert!(e.to_string().contains("undefined"), "{e}");
        let e = eval_bool("http_ok('http://x')", &c, None).expect_err("no http here");
        assert!(e.to_string().contains("http_ok"), "{e}");
        let ok: HttpCheck = Arc::new(|url: &str| url.ends_with("/healthz"));
        assert!(eval_bool("http_ok('http://x/healthz')", &c, Some(ok)).expect("eval"));
    }

    #[test]
    fn outcome_functions_tell_failure_rejection_and_cancellation_apart() {
        let with = |status: StageStatus| ExprContext {
            stages: [
                (
                    "deploy".to_string(),
                    StageView::new(StageStatus::Succeeded, json!({})),
                ),
                ("gate".to_string(), StageView::new(status, json!({}))),
            ]
            .into(),
            ..ExprContext::default()
        };
        let eval = |expr: &str, status| eval_bool(expr, &with(status), None).expect("eval");
        for (status, success, failure, rejected, canceled) in [
            (StageStatus::Succeeded, true, false, false, false),
            (StageStatus::Failed, false, true, false, false),
            (StageStatus::Rejected, false, false, true, false),
            (StageStatus::Canceled, false, false, false, true),
            (StageStatus::Skipped, true, false, false, false),
        ] {
            assert_eq!(
                eval("success()", status),
                success,
                "success() after {status}"
            );
            assert_eq!(
                eval("failure()", status),
                failure,
                "failure() after {status}"
            );
            assert_eq!(
                eval("rejected()", status),
                rejected,
                "rejected() after {status}"
            );
            assert_eq!(
                eval("canceled()", status),
                canceled,
                "canceled() after {status}"
            );
            assert!(eval("always()", status), "always() after {status}");
        }
        assert!(eval(
            "stage('gate').status == 'REJECTED' and stages.gate.status == 'rejected'",
            StageStatus::Rejected
        ));
    }

    #[test]
    fn templated_values() {
        let body = json!({"text": "{{ app.name }} promoted", "tags": ["deploy", "{{ app.name }}"], "n": 1,
                          "auth": "Bearer {{ secrets.token }}"});
        assert_eq!(
            render_value(&body, &ctx()).expect("render"),
            json!({"text": "web promoted", "tags": ["deploy", "web"], "n": 1, "auth": "Bearer s3cr3t"})
        );
    }

    #[test]
    fn templates_see_the_execution_and_revision() {
        let c = ExprContext {
            execution: json!({"id": "01J0EXEC", "revision": "abc123"}),
            revision: "abc123".into(),
            ..ctx()
        };
        let body = json!({"id": "{{ execution.id }}", "text": "{{ app.name }} at {{ revision }}",
                          "same": "{{ execution.revision == revision }}"});
        assert_eq!(
            render_value(&body, &c).expect("render"),
            json!({"id": "01J0EXEC", "text": "web at abc123", "same": "True"})
        );
    }
}
