//! Per-application input digests: a digest of the Git ids of everything an app's output
//! depends on — its directory, `bowline.yaml`, its pipeline template file and its canary config
//! file. Equal digests between two commits mean the app is unchanged, so a push or a pull
//! request costs work only for the apps it touches.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::ConfigRepo;
use crate::source::ROOT_FILE;
use crate::source::git::TreeIds;

/// The digest of every app of `config`, from the Git ids of its commit; the id of
/// `bowline.yaml` is taken as `root` when given (a pull request planned under the tracked
/// branch's settings counts an app as changed only when its own inputs changed).
pub fn digests(config: &ConfigRepo, ids: &TreeIds, root: Option<&str>) -> BTreeMap<String, String> {
    let root = root.unwrap_or_else(|| ids.id(ROOT_FILE));
    config
        .apps
        .iter()
        .map(|(name, app)| {
            let mut hasher = Sha256::new();
            hasher.update(root.as_bytes());
            hasher.update(ids.id(&format!("apps/{name}")).as_bytes());
            if let Some(template) = config
                .pipeline_of(&app.doc)
                .and_then(|t| config.pipelines.get(t))
            {
                hasher.update(ids.id(&template.file).as_bytes());
            }
            if let Some(canary) = app
                .doc
                .spec
                .canary
                .as_ref()
                .and_then(|c| config.canaries.get(&c.config))
            {
                hasher.update(ids.id(&canary.file).as_bytes());
            }
            (name.clone(), hex::encode(&hasher.finalize()[..12]))
        })
        .collect()
}

/// Applications whose input digest differs between `old` and `new` (new apps included,
/// removed apps excluded), sorted.
pub fn changed_apps(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<String> {
    new.iter()
        .filter(|(app, id)| old.get(*app) != Some(id))
        .map(|(app, _)| app.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_apps_compares_digests() {
        let old: BTreeMap<String, String> = [
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("gone".into(), "3".into()),
        ]
        .into();
        let new: BTreeMap<String, String> = [
            ("a".into(), "1".into()),
            ("b".into(), "9".into()),
            ("new".into(), "4".into()),
        ]
        .into();
        assert_eq!(
            changed_apps(&old, &new),
            vec!["b".to_string(), "new".to_string()]
        );
    }
}
