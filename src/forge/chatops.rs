//! ChatOps: `/bowline approve|reject|retry|rollback|plan` in a pull request comment, and who
//! may use it.
//!
//! A command is a line that starts with `/bowline` (leading spaces allowed; lines inside fenced
//! code blocks and quoted lines are ignored). The first such line counts. Verbs are
//! case-insensitive:
//!
//! - `/bowline approve [INPUT]` — approve a manual judgment, optionally choosing an input
//!   (the rest of the line, surrounding quotes removed);
//! - `/bowline reject` — reject it;
//! - `/bowline retry` — retry the failed stage;
//! - `/bowline rollback` — roll back;
//! - `/bowline plan` — plan the pull request against the live clusters (any collaborator with
//!   write access may ask, e.g. for a pull request from a fork).

/// A ChatOps command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Approve the pending manual judgment, optionally with a chosen input.
    Approve {
        /// The chosen input (e.g. `promote`), when given.
        input: Option<String>,
    },
    /// Reject the pending manual judgment.
    Reject,
    /// Retry the failed stage.
    Retry,
    /// Roll back.
    Rollback,
    /// Plan the pull request against the live clusters.
    Plan,
}

/// The usage text for replies.
pub const USAGE: &str = "usage: `/bowline approve [input]`, `/bowline reject`, `/bowline retry`, `/bowline rollback` or `/bowline plan`";

/// Finds a `/bowline …` command in a comment: `None` when there is none, `Some(Err(reply))`
/// when the command is malformed (unknown verb, unexpected arguments) with a message to reply
/// with, else the command.
pub fn parse_command(comment_body: &str) -> Option<Result<Command, String>> {
    let mut fence: Option<String> = None;
    for line in comment_body.lines() {
        let trimmed = line.trim_start();
        if let Some(open) = &fence {
            if trimmed.starts_with(open.as_str()) {
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            let marker: String = trimmed
                .chars()
                .take_while(|c| *c == '`' || *c == '~')
                .collect();
            fence = Some(marker);
            continue;
        }
        let Some(rest) = trimmed.strip_prefix("/bowline") else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
            continue; // e.g. `/bowlines`
        }
        return Some(parse_line(rest.trim()));
    }
    None
}

fn parse_line(rest: &str) -> Result<Command, String> {
    let (verb, args) = match rest.split_once(char::is_whitespace) {
        Some((verb, args)) => (verb, args.trim()),
        None => (rest, ""),
    };
    let no_args = |command: Command, name: &str| {
        if args.is_empty() {
            Ok(command)
        } else {
            Err(format!("`/bowline {name}` takes no arguments; {USAGE}"))
        }
    };
    match verb.to_ascii_lowercase().as_str() {
        "approve" => {
            let input = args
                .strip_prefix('"')
                .and_then(|a| a.strip_suffix('"'))
                .or_else(|| args.strip_prefix('\'').and_then(|a| a.strip_suffix('\'')))
                .or_else(|| args.strip_prefix('`').and_then(|a| a.strip_suffix('`')))
                .unwrap_or(args)
                .trim();
            Ok(Command::Approve {
                input: (!input.is_empty()).then(|| input.to_string()),
            })
        }
        "reject" => no_args(Command::Reject, "reject"),
        "retry" => no_args(Command::Retry, "retry"),
        "rollback" => no_args(Command::Rollback, "rollback"),
        "plan" => no_args(Command::Plan, "plan"),
        "" => Err(format!("missing command; {USAGE}")),
        other => {
            let shown: String = other.chars().take(40).filter(|c| *c != '`').collect();
            Err(format!("unknown command `{shown}`; {USAGE}"))
        }
    }
}

/// Whether `user` may run commands: listed in `approvers` by login (case-insensitive, an
/// optional leading `@` ignored), or a member of a team listed as `@org/team` (`teams_of_user`
/// holds the user's teams as `org/team`, with or without `@`; compared case-insensitively).
/// An empty user is never authorized.
pub fn is_authorized(user: &str, approvers: &[String], teams_of_user: &[String]) -> bool {
    let user = user.trim().trim_start_matches('@');
    if user.is_empty() {
        return false;
    }
    let norm = |s: &str| s.trim().trim_start_matches('@').to_ascii_lowercase();
    let teams: Vec<String> = teams_of_user.iter().map(|t| norm(t)).collect();
    approvers.iter().any(|entry| {
        let entry = norm(entry);
        if entry.is_empty() {
            false
        } else if entry.contains('/') {
            teams.contains(&entry)
        } else {
            entry.eq_ignore_ascii_case(user)
        }
    })
}

/// Whether a collaborator permission (as [`super::GitHub::permission`] returns it) includes
/// write access: `admin`, `maintain` or `write`. Commands need this in addition to
/// [`is_authorized`].
pub fn has_write_access(permission: &str) -> bool {
    matches!(
        permission.trim().to_ascii_lowercase().as_str(),
        "admin" | "maintain" | "write"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<Result<Command, String>> {
        parse_command(s)
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse("/bowline approve"),
            Some(Ok(Command::Approve { input: None }))
        );
        assert_eq!(
            parse("LGTM\n  /bowline Approve \"promote\"  \nthanks"),
            Some(Ok(Command::Approve {
                input: Some("promote".into())
            }))
        );
        assert_eq!(
            parse("/bowline approve rollback please"),
            Some(Ok(Command::Approve {
                input: Some("rollback please".into())
            }))
        );
        assert_eq!(parse("/bowline reject"), Some(Ok(Command::Reject)));
        assert_eq!(parse("/bowline RETRY\r\n"), Some(Ok(Command::Retry)));
        assert_eq!(parse("/bowline\trollback"), Some(Ok(Command::Rollback)));
        assert_eq!(parse("please\n/bowline Plan"), Some(Ok(Command::Plan)));
        // the first command line counts
        assert_eq!(
            parse("/bowline retry\n/bowline reject"),
            Some(Ok(Command::Retry))
        );
    }

    #[test]
    fn not_commands() {
        assert_eq!(parse("This is a test comment message."), None);
        assert_eq!(parse("please /bowline approve"), None);
        assert_eq!(parse("> /bowline approve"), None);
        assert_eq!(parse("/bowlines approve"), None);
        assert_eq!(parse("```\n/bowline approve\n```"), None);
        assert_eq!(
            parse("~~~sh\n/bowline approve\n~~~\n/bowline reject"),
            Some(Ok(Command::Reject))
        );
    }

    #[test]
    fn malformed_commands_get_a_reply() {
        let err = parse("/bowline deploy").unwrap().unwrap_err();
        assert!(err.contains("unknown command `deploy`"), "{err}");
        assert!(err.contains("/bowline approve"));
        assert!(
            parse("/bowline")
                .unwrap()
                .unwrap_err()
                .contains("missing command")
        );
        assert!(
            parse("/bowline retry now")
                .unwrap()
                .unwrap_err()
                .contains("takes no arguments")
        );
        assert!(
            parse("/bowline plan now")
                .unwrap()
                .unwrap_err()
                .contains("`/bowline plan` takes no arguments")
        );
        assert!(
            parse("/bowline deploy")
                .unwrap()
                .unwrap_err()
                .contains("`/bowline plan`")
        );
    }

    #[test]
    fn write_access() {
        for p in ["admin", "maintain", "write", "Write"] {
            assert!(has_write_access(p), "{p}");
        }
        for p in ["triage", "read", "none", ""] {
            assert!(!has_write_access(p), "{p}");
        }
    }

    #[test]
    fn authorization() {
        let approvers = vec![
            "Alice".to_string(),
            "@acme/SRE".to_string(),
            "@carol".to_string(),
        ];
        assert!(is_authorized("alice", &approvers, &[]));
        assert!(is_authorized("ALICE", &approvers, &[]));
        assert!(is_authorized("carol", &approvers, &[]));
        assert!(!is_authorized("bob", &approvers, &[]));
        assert!(is_authorized("bob", &approvers, &["acme/sre".to_string()]));
        assert!(is_authorized("bob", &approvers, &["@ACME/sre".to_string()]));
        assert!(!is_authorized(
            "bob",
            &approvers,
            &["other/sre".to_string()]
        ));
        assert!(!is_authorized("", &approvers, &[]));
        // a login never matches a team entry
        assert!(!is_authorized("acme/sre", &approvers, &[]));
    }
}
