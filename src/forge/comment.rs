//! The sticky pull request comment: a hidden marker (so the comment is found and updated in
//! place), a header (typically the summary table), one collapsible section per app,
//! environment and cluster holding one diff per object, and a footer — kept under GitHub's
//! 65,536-character limit by cutting the largest diffs first (every small diff stays whole),
//! with a note naming each diff that was cut.

/// GitHub's limit on a comment body, in characters.
pub const COMMENT_LIMIT: usize = 65_536;

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

/// One collapsible section of the comment, e.g. the changes of one app in one environment.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CommentSection {
    /// Shown in the `<summary>`, e.g. `web → production`.
    pub title: String,
    /// Shown after the title, e.g. `2 changed, 1 added`.
    pub summary: String,
    /// The diffs, one per object, shown together in a ```` ```diff ```` code block.
    pub diffs: Vec<SectionDiff>,
}

/// The diff of one object in a section.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SectionDiff {
    /// What it is a diff of (`apps/v1 Deployment shop/web`), named when it is cut.
    pub object: String,
    /// Preformatted text (a unified diff); cut at a line boundary when the comment is too long.
    pub text: String,
}

/// Length as GitHub counts it. GitHub counts characters; UTF-16 code units are never fewer
/// than characters, so counting them keeps the comment under the limit either way.
pub fn github_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Renders the comment: `marker`, `header` (e.g. the summary table), a `<details>` block per
/// section, then `footer`. When the result would exceed [`COMMENT_LIMIT`], one cap on the
/// length of every diff is lowered until the comment fits, so the largest diffs are cut first
/// and the small ones stay whole (each cut at a line boundary, the section noting which object's
/// diff lost how many lines); if the sections still do not fit with empty diffs, trailing
/// sections are left out with a note, and as a last resort the header and footer are
/// shortened. The marker always comes first.
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
                .flat_map(|s| &s.diffs)
                .map(|d| github_len(&d.text))
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
        let mut shown = String::new();
        let mut notes = Vec::new();
        for diff in &section.diffs {
            let (kept, cut) = cut_body(&diff.text, cap);
            if !kept.is_empty() {
                if !shown.is_empty() && !shown.ends_with("\n\n") {
                    shown.push('\n');
                }
                shown.push_str(kept);
                if !kept.ends_with('\n') {
                    shown.push('\n');
                }
            }
            if cut > 0 {
                notes.push(format!(
                    "… {}: {cut} line{} truncated",
                    escape_html(&diff.object),
                    if cut == 1 { "" } else { "s" }
                ));
            }
        }
        if !shown.is_empty() {
            let fence = fence_for(&shown);
            out.push_str(&fence);
            out.push_str("diff\n");
            out.push_str(&shown);
            out.push_str(&fence);
            out.push_str("\n\n");
        }
        if !notes.is_empty() {
            out.push_str(&notes.join("<br>\n"));
            out.push_str("; run `bowline plan` for the full diff\n\n");
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

    fn diff(object: &str, lines: usize, width: usize) -> SectionDiff {
        SectionDiff {
            object: object.into(),
            text: (0..lines)
                .map(|i| format!("+{:0width$}\n", i, width = width))
                .collect(),
        }
    }

    fn section(title: &str, lines: usize, width: usize) -> CommentSection {
        CommentSection {
            title: title.into(),
            summary: format!("{lines} lines"),
            diffs: vec![diff(title, lines, width)],
        }
    }

    fn one(text: &str) -> Vec<SectionDiff> {
        vec![SectionDiff {
            object: "v1 ConfigMap web".into(),
            text: text.into(),
        }]
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
                diffs: one("-a\n+b\n"),
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
                diffs: one("+ ```\n"),
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
        assert!(text.contains(&sections[0].diffs[0].text));
        assert!(text.contains(&sections[2].diffs[0].text));
        assert!(text.contains("lines truncated; run `bowline plan` for the full diff"));
        assert_eq!(text.matches("lines truncated").count(), 1);
        assert!(text.contains("… huge: "), "the note names the cut diff");
    }

    #[test]
    fn within_a_section_the_small_diffs_stay_whole() {
        // One target: a huge ConfigMap applied first, then small Deployment and Service diffs.
        let sections = vec![CommentSection {
            title: "web → production (prod-eu)".into(),
            summary: "3 to update".into(),
            diffs: vec![
                diff("v1 ConfigMap shop/web", 30_000, 10),
                diff("apps/v1 Deployment shop/web", 12, 30),
                diff("v1 Service shop/web", 4, 30),
            ],
        }];
        let text = render_comment("<!-- m -->", "table", &sections, "");
        assert!(github_len(&text) <= COMMENT_LIMIT);
        assert!(text.contains(&sections[0].diffs[1].text));
        assert!(text.contains(&sections[0].diffs[2].text));
        assert!(
            text.contains("… v1 ConfigMap shop/web: "),
            "the cut diff is named"
        );
        assert_eq!(text.matches("truncated").count(), 1);
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
                diffs: one(&body),
            }],
            "",
        );
        assert!(github_len(&text) <= COMMENT_LIMIT);
        assert!(text.contains("lines truncated"));
    }
}
