//! The sticky pull request comment: a hidden marker (so the comment is found and updated in
//! place), a header (typically the summary table), one collapsible section per app and
//! environment, and a footer — kept under GitHub's 65,536-character limit by truncating the
//! largest sections first, with a visible note in each truncated section.

/// GitHub's limit on a comment body, in characters.
pub const COMMENT_LIMIT: usize = 65_536;

/// The note appended to a truncated section (`{n}` is the number of lines left out).
const TRUNCATED_NOTE: &str = "… {n} lines truncated; run `bowline plan` for the full diff";

/// The hidden marker identifying the sticky comment of kind `key`, e.g.
/// `sticky_marker("plan")` = `<!-- bowline:plan -->`. Characters that could end the HTML
/// comment early (`-`, `>`) and whitespace are replaced by `_`.
pub fn sticky_marker(key: &str) -> String {
    let key: String = key
        .chars()
        .map(|c| {
            if c == '>' || c == '-' || c == '<' || c == '!' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("<!-- bowline:{key} -->")
}

/// One collapsible section of the comment, e.g. the diff of one app in one environment.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CommentSection {
    /// Shown in the `<summary>`, e.g. `web → production`.
    pub title: String,
    /// Shown after the title, e.g. `2 changed, 1 added`.
    pub summary: String,
    /// Preformatted text (typically a unified diff), shown in a ```` ```diff ```` code block.
    /// May be cut at a line boundary when the comment is too long.
    pub body: String,
}

/// Length as GitHub counts it. GitHub counts characters; UTF-16 code units are never fewer
/// than characters, so counting them keeps the comment under the limit either way.
pub fn github_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Renders the comment: `marker`, `header` (e.g. the summary table), a `<details>` block per
/// section, then `footer`. When the result would exceed [`COMMENT_LIMIT`], the largest section
/// bodies are cut (at line boundaries, each with a note "… N lines truncated; run `bowline plan`
/// for the full diff"); if the sections still do not fit with empty bodies, trailing sections
/// are left out with a note, and as a last resort the header and footer are shortened. The
/// marker always comes first.
pub fn render_comment(
    marker: &str,
    header: &str,
    sections: &[CommentSection],
    footer: &str,
) -> String {
    let full = render(marker, header, sections, footer, None, sections.len());
    if github_len(&full) <= COMMENT_LIMIT {
        return full;
    }
    let fits = |cap: Option<usize>, keep: usize| {
        let text = render(marker, header, sections, footer, cap, keep);
        (github_len(&text) <= COMMENT_LIMIT).then_some(text)
    };
    // With every section kept, find the largest body cap that fits (binary search).
    if let Some(mut best) = fits(Some(0), sections.len()) {
        let (mut lo, mut hi) = (
            0usize,
            sections
                .iter()
                .map(|s| github_len(&s.body))
                .max()
                .unwrap_or(0),
        );
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            match fits(Some(mid), sections.len()) {
                Some(text) => {
                    best = text;
                    lo = mid;
                }
                None => hi = mid - 1,
            }
        }
        return best;
    }
    // Too many sections even with empty bodies: keep as many (without bodies) as fit.
    let (mut lo, mut hi) = (0usize, sections.len());
    let mut best = None;
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match fits(Some(0), mid) {
            Some(text) => {
                best = Some(text);
                lo = mid;
            }
            None => hi = mid - 1,
        }
    }
    if let Some(text) = best.or_else(|| fits(Some(0), 0)) {
        return text;
    }
    // The header and footer alone are too long: shorten them.
    let note = "\n\n… comment shortened; run `bowline plan` for the full output\n";
    let room = COMMENT_LIMIT.saturating_sub(github_len(marker) + github_len(note) + 2);
    let mut out = String::with_capacity(COMMENT_LIMIT);
    out.push_str(marker);
    out.push('\n');
    let mut used = 0;
    for c in header.chars().chain("\n\n".chars()).chain(footer.chars()) {
        used += c.len_utf16();
        if used > room {
            break;
        }
        out.push(c);
    }
    out.push_str(note);
    out
}

fn render(
    marker: &str,
    header: &str,
    sections: &[CommentSection],
    footer: &str,
    cap: Option<usize>,
    keep: usize,
) -> String {
    let mut out = String::new();
    out.push_str(marker);
    out.push('\n');
    out.push_str(header.trim_end());
    out.push_str("\n\n");
    for section in sections.iter().take(keep) {
        out.push_str("<details><summary>");
        out.push_str(&escape_html(&section.title));
        if !section.summary.is_empty() {
            out.push_str(" — ");
            out.push_str(&escape_html(&section.summary));
        }
        out.push_str("</summary>\n\n");
        let (body, cut) = cut_body(&section.body, cap);
        if !body.is_empty() {
            let fence = fence_for(&section.body);
            out.push_str(&fence);
            out.push_str("diff\n");
            out.push_str(body);
            if !body.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&fence);
            out.push_str("\n\n");
        }
        if cut > 0 {
            out.push_str(&TRUNCATED_NOTE.replace("{n}", &cut.to_string()));
            out.push_str("\n\n");
        }
        out.push_str("</details>\n\n");
    }
    let left_out = sections.len().saturating_sub(keep);
    if left_out > 0 {
        out.push_str(&format!(
            "… {left_out} more section{} not shown; run `bowline plan` for the full diff\n\n",
            if left_out == 1 { "" } else { "s" }
        ));
    }
    let footer = footer.trim();
    if !footer.is_empty() {
        out.push_str(footer);
        out.push('\n');
    }
    out
}

/// The body cut to at most `cap` UTF-16 units at a line boundary, and how many lines were cut.
fn cut_body(body: &str, cap: Option<usize>) -> (&str, usize) {
    let Some(cap) = cap else {
        return (body, 0);
    };
    if github_len(body) <= cap {
        return (body, 0);
    }
    let mut end = 0;
    let mut used = 0;
    for line in body.split_inclusive('\n') {
        let len = github_len(line);
        if used + len > cap {
            break;
        }
        used += len;
        end += line.len();
    }
    let kept = &body[..end];
    let cut = body[end..].split_inclusive('\n').count();
    (kept, cut)
}

/// A backtick fence longer than any backtick run in `body` (at least three).
fn fence_for(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(title: &str, lines: usize, width: usize) -> CommentSection {
        CommentSection {
            title: title.into(),
            summary: format!("{lines} lines"),
            body: (0..lines)
                .map(|i| format!("+{:0width$}\n", i, width = width))
                .collect(),
        }
    }

    #[test]
    fn marker_is_hidden_and_safe() {
        assert_eq!(sticky_marker("plan"), "<!-- bowline:plan -->");
        assert_eq!(sticky_marker("a-->b c"), "<!-- bowline:a___b_c -->");
    }

    #[test]
    fn small_comment_is_rendered_whole() {
        let marker = sticky_marker("plan");
        let text = render_comment(
            &marker,
            "| app | env |\n|---|---|\n| web | prod |",
            &[CommentSection {
                title: "web <prod>".into(),
                summary: "1 changed".into(),
                body: "-a\n+b\n".into(),
            }],
            "_bowline_",
        );
        assert!(text.starts_with(&marker));
        assert!(text.contains("<details><summary>web &lt;prod&gt; — 1 changed</summary>"));
        assert!(text.contains("```diff\n-a\n+b\n```"));
        assert!(text.trim_end().ends_with("_bowline_"));
        assert!(!text.contains("truncated"));
    }

    #[test]
    fn fences_survive_backticks_in_the_body() {
        let text = render_comment(
            "<!-- m -->",
            "h",
            &[CommentSection {
                title: "t".into(),
                summary: String::new(),
                body: "+ ```\n".into(),
            }],
            "",
        );
        assert!(text.contains("````diff\n+ ```\n````"), "{text}");
    }

    #[test]
    fn largest_sections_are_truncated_first() {
        let marker = sticky_marker("plan");
        let header = "| summary table |";
        let sections = vec![
            section("small", 10, 10),
            section("huge", 20_000, 10),
            section("medium", 2_000, 10),
        ];
        let text = render_comment(&marker, header, &sections, "footer");
        assert!(github_len(&text) <= COMMENT_LIMIT, "{}", github_len(&text));
        assert!(github_len(&text) > COMMENT_LIMIT - 200, "uses the room");
        assert!(text.starts_with(&marker));
        assert!(text.contains(header));
        assert!(text.contains("footer"));
        // The small and medium sections are whole; the huge one is cut with a note.
        assert!(text.contains(&sections[0].body));
        assert!(text.contains(&sections[2].body));
        assert!(text.contains("lines truncated; run `bowline plan` for the full diff"));
        assert_eq!(text.matches("lines truncated").count(), 1);
    }

    #[test]
    fn many_sections_are_left_out_with_a_note() {
        let sections: Vec<_> = (0..3000)
            .map(|i| section(&format!("app-{i}"), 5, 5))
            .collect();
        let text = render_comment("<!-- m -->", "table", &sections, "");
        assert!(github_len(&text) <= COMMENT_LIMIT);
        assert!(text.contains("more sections not shown"));
        assert!(text.starts_with("<!-- m -->\ntable"));
    }

    #[test]
    fn huge_header_is_shortened() {
        let header = "x".repeat(COMMENT_LIMIT * 2);
        let text = render_comment("<!-- m -->", &header, &[section("a", 3, 3)], "f");
        assert!(github_len(&text) <= COMMENT_LIMIT);
        assert!(text.starts_with("<!-- m -->"));
        assert!(text.contains("comment shortened"));
    }

    #[test]
    fn counts_utf16_units() {
        // Emoji are two UTF-16 units each; the limit must hold in those units.
        let body: String = "+😀😀😀😀😀😀😀😀😀😀\n".repeat(10_000);
        let text = render_comment(
            "<!-- m -->",
            "h",
            &[CommentSection {
                title: "e".into(),
                summary: "s".into(),
                body,
            }],
            "",
        );
        assert!(github_len(&text) <= COMMENT_LIMIT);
        assert!(text.contains("lines truncated"));
    }
}
