//! Who may decide a manual judgment. Approver lists hold GitHub logins (matched
//! case-insensitively, like GitHub) and `@org/team` entries, resolved through GitHub's team
//! membership API. Answers are cached briefly; when GitHub cannot answer, the user is not an
//! approver (fail closed). (That a pull request's author does not approve their own change is
//! the operations layer's rule: [`crate::pipeline::operations`].)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Daemon, DaemonError};
use crate::forge::is_authorized;

/// How long a team membership answer is reused.
pub(super) const TEAM_CACHE_TTL: Duration = Duration::from_secs(60);

/// How many (org, team, user) answers are kept at most.
pub(super) const TEAM_CACHE_CAPACITY: usize = 1024;

/// The `org` and `team-slug` of an approver entry `@org/team-slug` (the `@` is optional);
/// `None` for a plain login.
pub fn team_entry(entry: &str) -> Option<(&str, &str)> {
    let entry = entry.trim().trim_start_matches('@');
    let (org, team) = entry.split_once('/')?;
    (!org.is_empty() && !team.is_empty() && !team.contains('/')).then_some((org, team))
}

/// Whether a user is one of an approver list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApproverCheck {
    /// Listed by login, or an active member of a listed team.
    Listed,
    /// Neither.
    NotListed,
    /// Not listed by login, and GitHub could not confirm membership of these teams
    /// (`@org/team`): refused.
    Unconfirmed(Vec<String>),
}

/// (org, team, user), lowercase.
type TeamKey = (String, String, String);

/// Recent team membership answers, per (org, team, user), for [`TEAM_CACHE_TTL`]; at most
/// [`TEAM_CACHE_CAPACITY`] of them. Errors are never cached.
#[derive(Debug)]
pub(super) struct TeamCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<TeamKey, (Instant, bool)>>,
}

impl TeamCache {
    pub(super) fn new(ttl: Duration, capacity: usize) -> TeamCache {
        TeamCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(org: &str, team: &str, user: &str) -> TeamKey {
        (
            org.to_ascii_lowercase(),
            team.to_ascii_lowercase(),
            user.to_ascii_lowercase(),
        )
    }

    /// The cached answer, while fresh.
    pub(super) fn get(&self, org: &str, team: &str, user: &str) -> Option<bool> {
        let entries = super::lock(&self.entries);
        entries
            .get(&Self::key(org, team, user))
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, member)| *member)
    }

    /// Remembers an answer; when full, expired answers go first, then the oldest.
    pub(super) fn put(&self, org: &str, team: &str, user: &str, member: bool) {
        let mut entries = super::lock(&self.entries);
        let key = Self::key(org, team, user);
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (Instant::now(), member));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        super::lock(&self.entries).len()
    }
}

impl Daemon {
    /// Whether `user` is one of `approvers`: by login, or as an active member of a listed
    /// `@org/team` (asked of GitHub, cached briefly). Teams GitHub cannot answer for count as
    /// not confirmed.
    pub(super) async fn check_approver(
        &self,
        user: &str,
        approvers: &[String],
    ) -> Result<ApproverCheck, DaemonError> {
        if is_authorized(user, approvers, &[]) {
            return Ok(ApproverCheck::Listed);
        }
        let user = user.trim().trim_start_matches('@');
        let teams: Vec<(&str, &str)> = approvers.iter().filter_map(|a| team_entry(a)).collect();
        if user.is_empty() || teams.is_empty() {
            return Ok(ApproverCheck::NotListed);
        }
        let mut unconfirmed = Vec::new();
        for (org, team) in teams {
            // Team slugs are lowercase; organization names compare case-insensitively.
            let (org, team) = (org.to_ascii_lowercase(), team.to_ascii_lowercase());
            let (org, team) = (org.as_str(), team.as_str());
            let member = match self.teams.get(org, team, user) {
                Some(member) => member,
                None => match self.github()?.team_membership(org, team, user).await {
                    Ok(membership) => {
                        let member = membership.is_member();
                        self.teams.put(org, team, user, member);
                        member
                    }
                    Err(e) => {
                        tracing::warn!(org, team, user, error = %e, "team membership not confirmed: not an approver through this team");
                        unconfirmed.push(format!("@{org}/{team}"));
                        continue;
                    }
                },
            };
            if member {
                return Ok(ApproverCheck::Listed);
            }
        }
        Ok(if unconfirmed.is_empty() {
            ApproverCheck::NotListed
        } else {
            ApproverCheck::Unconfirmed(unconfirmed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_entries() {
        assert_eq!(team_entry("@acme/sre"), Some(("acme", "sre")));
        assert_eq!(
            team_entry("acme/platform-team"),
            Some(("acme", "platform-team"))
        );
        assert_eq!(team_entry("maria"), None);
        assert_eq!(team_entry("@maria"), None);
        assert_eq!(team_entry("@/sre"), None);
        assert_eq!(team_entry("@acme/"), None);
        assert_eq!(team_entry("@acme/a/b"), None);
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let cache = TeamCache::new(Duration::from_millis(50), 3);
        cache.put("Acme", "SRE", "Maria", true);
        assert_eq!(cache.get("acme", "sre", "maria"), Some(true));
        assert_eq!(cache.get("acme", "sre", "bob"), None);
        for user in ["a", "b", "c", "d", "e"] {
            cache.put("acme", "sre", user, false);
        }
        assert_eq!(cache.len(), 3, "bounded");
        assert_eq!(cache.get("acme", "sre", "e"), Some(false), "newest kept");
        assert_eq!(cache.get("acme", "sre", "maria"), None, "oldest evicted");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("acme", "sre", "e"), None, "expired");
    }
}
