//! Result JSON. A judgment is Kayenta's `CanaryJudgeResult`; a live analysis wraps its last one
//! as `result.judgeResult` (the shape of Kayenta's canary execution result) next to every
//! interim judgment.

use serde_json::{Value, json};

use crate::canary::analysis::AnalysisReport;
use crate::canary::judge::JudgeResult;

/// The judge result as JSON (NaN written as "NaN").
pub fn judge_result(result: &JudgeResult) -> Value {
    serde_json::to_value(result).unwrap_or(Value::Null)
}

/// The analysis report as JSON.
pub fn analysis(report: &AnalysisReport) -> Value {
    let mut value = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.insert(
            "result".to_string(),
            json!({ "judgeResult": report.last_result().map(judge_result) }),
        );
    }
    value
}
