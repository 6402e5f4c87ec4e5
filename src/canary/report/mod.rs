//! Reports of a canary judgment: the result JSON (Kayenta's result model), a Markdown summary
//! for pull-request comments, and an SVG chart per metric. Pure text rendering.

pub mod json;
pub mod markdown;
pub mod svg;

/// A short, stable rendering of a number for humans (NaN as "NaN").
pub fn human_number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "∞" } else { "-∞" }.to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    let text = if !(1e-3..1e6).contains(&a) {
        format!("{v:.3e}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    };
    if text.contains('e') || !text.contains('.') {
        text
    } else {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A file-name-safe slug.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    if out.is_empty() {
        "metric".to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_short() {
        assert_eq!(human_number(0.1), "0.1");
        assert_eq!(human_number(100.91211666666666), "100.9");
        assert_eq!(human_number(1.05), "1.05");
        assert_eq!(human_number(0.00012345), "1.234e-4");
        assert_eq!(human_number(f64::NAN), "NaN");
        assert_eq!(human_number(3.0), "3");
        assert_eq!(slug("p95 latency{code=\"5xx\"}"), "p95_latency_code_5xx_");
    }
}
