//! The sandboxed MiniJinja setup shared by manifests, pipeline stage fields and canary queries.
//!
//! Templates come from an untrusted repository: no loader is installed (so no file or network
//! access), undefined values are errors, a fuel limit stops runaway loops, and
//! [`render_capped`] stops a render whose output outgrows its budget as it is written.

use std::io::Write;

use minijinja::{Environment, UndefinedBehavior};

/// Instruction budget of one render; generous for real manifests, fatal for endless loops.
const FUEL: u64 = 5_000_000;
/// Largest output of one rendered manifest file.
pub const MAX_OUTPUT_BYTES: usize = 8 * 1024 * 1024;
/// Largest output of all the manifest files of one application in one environment.
pub const MAX_TOTAL_OUTPUT_BYTES: usize = 64 * 1024 * 1024;

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

/// Renders `template` with `context`, failing as soon as the output passes `cap` bytes: the
/// writer refuses the write that crosses it, which stops the render there. The error names
/// the limit; MiniJinja adds the template and line where the render stopped.
pub fn render_capped<V: Into<minijinja::Value>>(
    template: &minijinja::Template<'_, '_>,
    context: V,
    cap: usize,
) -> Result<String, minijinja::Error> {
    let mut out = CappedWriter {
        buffer: Vec::new(),
        cap,
    };
    template.render_captured_to(context, &mut out)?;
    String::from_utf8(out.buffer)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::BadSerialization, e.to_string()))
}

/// A buffer refusing to grow beyond `cap` bytes.
struct CappedWriter {
    buffer: Vec<u8>,
    cap: usize,
}

impl Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buffer.len().saturating_add(data.len()) > self.cap {
            return Err(std::io::Error::other(format!(
                "rendered output exceeds the limit of {}",
                describe_size(self.cap)
            )));
        }
        self.buffer.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `8 MiB`, or a byte count when not a whole number of MiB.
pub fn describe_size(bytes: usize) -> String {
    if bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{bytes} bytes")
    }
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
        K::WriteFailure => "template output too large".to_string(),
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
    fn output_beyond_the_cap_is_cut_while_rendering() {
        let mut env = sandbox();
        let big = "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}";
        env.add_template("big.yaml", big).expect("template");
        let template = env.get_template("big.yaml").expect("template");
        let started = std::time::Instant::now();
        let e = render_capped(&template, (), 1024 * 1024).expect_err("too large");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let message = error_message(&e);
        assert!(message.contains("exceeds the limit of 1 MiB"), "{message}");
        // One huge expression: MiniJinja builds the string (at most 100 MB), the cap stops
        // its output.
        env.add_template("one.yaml", "{{ 'x' * 100000000 }}")
            .expect("template");
        let template = env.get_template("one.yaml").expect("template");
        assert!(render_capped(&template, (), MAX_OUTPUT_BYTES).is_err());
        // Beyond MiniJinja's own limits (fuel, 100 MB), the multiplication itself is refused.
        env.add_template("huge.yaml", "{{ 'x' * 1000000000 }}")
            .expect("template");
        let template = env.get_template("huge.yaml").expect("template");
        assert!(render_capped(&template, (), MAX_OUTPUT_BYTES).is_err());
        // Within the cap, the output is the template's.
        env.add_template("small.yaml", "a: {{ 1 + 1 }}\n")
            .expect("template");
        let template = env.get_template("small.yaml").expect("template");
        assert_eq!(render_capped(&template, (), 64).expect("small"), "a: 2\n");
    }

    #[test]
    fn no_file_access() {
        let env = sandbox();
        assert!(env.render_str("{% include '/etc/passwd' %}", ()).is_err());
    }
}
