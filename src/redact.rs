//! Credentials out of text: any `scheme://user:password@host` in an error or status loses its
//! whole user-info part (`scheme://***@host`), wherever in the text it appears — libgit2 and
//! HTTP errors quote the URL they failed on.

/// `text` with the user-info of every URL in it replaced by `***`.
pub fn urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the first character that cannot be part of it.
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#') || c.is_whitespace() || "\"'<>()[]{}`,;".contains(c)
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_removed_whole_everywhere() {
        assert_eq!(
            urls("https://x-access-token:ghs_abc@github.com/acme/config.git"),
            "https://***@github.com/acme/config.git"
        );
        assert_eq!(
            urls(
                "failed to fetch 'https://bot:p%40ss@git.example:8443/r.git': 401; retry https://tok@h/x"
            ),
            "failed to fetch 'https://***@git.example:8443/r.git': 401; retry https://***@h/x"
        );
        assert_eq!(urls("/srv/git/config"), "/srv/git/config");
        assert_eq!(
            urls("see http://host/a@b and ssh://git@github.com:acme/x"),
            "see http://host/a@b and ssh://***@github.com:acme/x"
        );
        assert_eq!(urls("error: ://@"), "error: ://***@");
    }
}
