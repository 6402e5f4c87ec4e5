//! `webhook`: a templated HTTP call (e.g. a Grafana annotation), with expected status codes
//! and its own retries. Secret values never appear in outputs or logs. Every send carries an
//! `Idempotency-Key` header, the same for every resend of the stage of an execution: delivery
//! is at least once, and receivers de-duplicate on the key.

use std::time::Duration;

use serde_json::{Value, json};

use super::StageRun;
use crate::config::WebhookStage;
use crate::pipeline::expr;
use crate::pipeline::{StageError, StageResult};

/// Header naming a webhook delivery for de-duplication.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The idempotency key of stage `stage` of execution `execution`: `<execution>:<stage>`, or
/// `<execution>:sha256-<hex>` when the stage name is not plain visible ASCII.
fn idempotency_key(execution: &str, stage: &str) -> String {
    if !stage.is_empty() && stage.bytes().all(|b| b.is_ascii_graphic()) {
        format!("{execution}:{stage}")
    } else {
        use sha2::Digest;
        format!(
            "{execution}:sha256-{}",
            hex::encode(sha2::Sha256::digest(stage.as_bytes()))
        )
    }
}

pub(super) async fn webhook(run: &mut StageRun, stage: WebhookStage) -> StageResult {
    let states = run.engine.store.stages(&run.execution)?;
    let mut ctx = run
        .snapshot
        .expr_context(&run.execution, &run.revision, &run.stage, &states);
    ctx.secrets = run.engine.services.secrets.clone();
    let redact = |text: &str| {
        ctx.secrets
            .values()
            .filter(|s| !s.is_empty())
            .fold(crate::redact::urls(text), |t, s| {
                t.replace(s.as_str(), "***")
            })
    };
    // Templates, URLs and methods that are refused now are refused on every attempt.
    let terminal = |text: String| StageError::terminal(redact(&text));
    let url = expr::render_value(&Value::String(stage.url.clone()), &ctx)
        .map_err(|e| terminal(e.to_string()))?;
    let url = url.as_str().unwrap_or_default().to_string();
    crate::pipeline::egress::check_url(&url, run.engine.services.allow_link_local_egress)
        .map_err(|e| terminal(format!("{} {url}: {e}", stage.method.to_ascii_uppercase())))?;
    let headers =
        expr::render_value(&json!(stage.headers), &ctx).map_err(|e| terminal(e.to_string()))?;
    let body = stage
        .body
        .as_ref()
        .map(|b| expr::render_value(b, &ctx))
        .transpose()
        .map_err(|e| terminal(e.to_string()))?;
    let method = reqwest::Method::from_bytes(stage.method.to_ascii_uppercase().as_bytes())
        .map_err(|e| StageError::terminal(format!("method {}: {e}", stage.method)))?;
    let expected: Vec<u16> = if stage.expect_status.is_empty() {
        (200..300).collect()
    } else {
        stage.expect_status.clone()
    };
    // The same key on every send of this stage of this execution (retries, resumes after a
    // crash), so receivers can de-duplicate: delivery is at least once. A key set in
    // `headers` wins.
    let key = idempotency_key(&run.execution, &run.stage.name);
    let own_key = headers
        .as_object()
        .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case(IDEMPOTENCY_KEY)));
    let mut delay = Duration::from_millis(500);
    let mut last = StageError::transient("no request was sent");
    for attempt in 0..=stage.retries {
        if attempt > 0 {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        let mut request = run.engine.services.http.request(method.clone(), &url);
        if !own_key {
            request = request.header(IDEMPOTENCY_KEY, &key);
        }
        if let Some(map) = headers.as_object() {
            for (k, v) in map {
                request = request.header(k, v.as_str().unwrap_or_default());
            }
        }
        if let Some(body) = &body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                if expected.contains(&status) {
                    run.note(&format!("{method} {} answered {status}", redact(&url)));
                    return Ok(json!({"status": status, "attempts": attempt + 1}));
                }
                let text = response.text().await.unwrap_or_default();
                let message = format!(
                    "{method} {} answered {status} (expected {}): {}",
                    redact(&url),
                    expected
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    redact(text.chars().take(200).collect::<String>().trim())
                );
                // Client errors other than throttling will not change on retry.
                if (400..500).contains(&status) && status != 429 && status != 408 {
                    last = StageError::terminal(message);
                    break;
                }
                last = StageError::transient(message);
            }
            Err(e) => last = StageError::transient(redact(&format!("{method} {}: {e}", url))),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::idempotency_key;

    #[test]
    fn idempotency_keys_name_the_execution_and_stage() {
        assert_eq!(
            idempotency_key("01J0EXEC", "notify-grafana"),
            "01J0EXEC:notify-grafana"
        );
        assert_eq!(
            idempotency_key("01J0EXEC", "notify-grafana"),
            idempotency_key("01J0EXEC", "notify-grafana")
        );
        let odd = idempotency_key("01J0EXEC", "notify grafana");
        assert!(odd.starts_with("01J0EXEC:sha256-"), "{odd}");
        assert!(odd.bytes().all(|b| b.is_ascii_graphic()));
    }
}
