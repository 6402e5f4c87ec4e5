//! The sandboxed MiniJinja setup shared by manifests, pipeline stage fields and canary queries.
//!
//! Templates come from an untrusted repository: no loader is installed (so no file or network
//! access), undefined values are errors, and a fuel limit stops runaway loops.

use minijinja::{Environment, UndefinedBehavior};

/// Instruction budget of one render; generous for real manifests, fatal for endless loops.
const FUEL: u64 = 5_000_000;

/// A new environment with bowline's sandbox settings and no templates.
pub fn sandbox() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.keep_trailing_newline(true);
    if let Ok(syntax) = syntax.build() {
        env.set_syntax(syntax);
    }
    env
}

/// True when a string holds template syntax.
pub fn is_templated(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// When the whole string is one `{{ expression }}`, that expression.
pub fn sole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

/// The message of a MiniJinja error without the template name and position (reported apart),
/// followed by the detail MiniJinja adds.
pub fn error_message(e: &minijinja::Error) -> String {
    let mut message = match e.detail() {
        Some(detail) => format!("{}: {detail}", kind_text(e)),
        None => kind_text(e),
    };
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message.push_str(&format!(" ({inner})"));
        source = inner.source();
    }
    message
}

fn kind_text(e: &minijinja::Error) -> String {
    use minijinja::ErrorKind as K;
    match e.kind() {
        K::UndefinedError => "undefined value".to_string(),
        K::SyntaxError => "template syntax error".to_string(),
        K::OutOfFuel => "template ran too long (endless loop?)".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sole_expression_detects_whole_expressions_only() {
        assert_eq!(sole_expression("{{ parameters.x }}"), Some("parameters.x"));
        assert_eq!(sole_expression("a {{ x }}"), None);
        assert_eq!(sole_expression("{{ a }}{{ b }}"), None);
    }

    #[test]
    fn undefined_is_an_error_and_loops_run_out_of_fuel() {
        let env = sandbox();
        let e = env.render_str("{{ nope }}", ()).unwrap_err();
        assert!(error_message(&e).starts_with("undefined value"), "{e}");
        let e = env
            .render_str(
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                (),
            )
            .unwrap_err();
        assert!(error_message(&e).contains("too long"), "{e}");
    }

    #[test]
    fn no_file_access() {
        let env = sandbox();
        assert!(env.render_str("{% include '/etc/passwd' %}", ()).is_err());
    }
}
