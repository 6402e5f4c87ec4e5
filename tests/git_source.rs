//! The Git source against real repositories created with git2 in temporary directories and
//! fetched through a local path, the way a `file://` or bare remote is.

mod common;

use std::fs;
use std::path::Path;

use bowline::config;
use bowline::config::inputs::{changed_apps, digests};
use bowline::source::Limits;
use bowline::source::git::{GitAuth, GitError, GitSource};
use git2::{Repository, Signature};

/// Commits every file of `dir` on `main` of the repository at `dir`; returns the commit id.
fn commit_all(repo: &Repository, message: &str) -> String {
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.update_all(["*"], None).expect("update");
    index.write().expect("write index");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig = Signature::now("Test", "test@example.com").expect("signature");
    let parent = repo
        .head()
        .ok()
        .and_then(|h| h.target())
        .and_then(|id| repo.find_commit(id).ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(
        Some("refs/heads/main"),
        &sig,
        &sig,
        message,
        &tree,
        &parents,
    )
    .expect("commit")
    .to_string()
}

fn setup() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().expect("temp dir");
    common::copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
        dir.path(),
        &[],
    );
    let repo = Repository::init(dir.path()).expect("init");
    repo.set_head("refs/heads/main").expect("head");
    (dir, repo)
}

#[test]
fn fetch_snapshot_and_changed_apps() {
    let (work, repo) = setup();
    let first = commit_all(&repo, "initial");
    let cache = tempfile::tempdir().expect("cache");
    let source = GitSource::open(
        work.path().to_str().expect("utf-8 path"),
        "main",
        &cache.path().join("mirror"),
        GitAuth::default(),
    )
    .expect("open");
    assert_eq!(source.fetch().expect("fetch"), first);

    let (snapshot, diagnostics) = source
        .snapshot(&first, &Limits::default())
        .expect("snapshot");
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let (from_dir, _) =
        bowline::source::Snapshot::from_dir(work.path(), &Limits::default()).expect("dir");
    let paths =
        |s: &bowline::source::Snapshot| s.files().map(|(p, _)| p.to_string()).collect::<Vec<_>>();
    assert_eq!(
        paths(&snapshot),
        paths(&from_dir),
        "a commit reads like its working copy"
    );
    let (loaded, errors) = config::load(&snapshot);
    assert!(errors.is_empty(), "{errors:?}");
    let before = digests(&loaded, &source.tree_ids(&first).expect("ids"), None);
    assert_eq!(before.len(), 3);

    // Touch one app: only it changes. Touch a shared pipeline: the apps using it change.
    let app = work.path().join("apps/storefront-web/app.yaml");
    fs::write(
        &app,
        fs::read_to_string(&app)
            .expect("read")
            .replace("5.3.0", "5.4.0"),
    )
    .expect("write");
    let second = commit_all(&repo, "storefront 5.4.0");
    assert_eq!(source.fetch().expect("fetch"), second);
    let (snapshot, _) = source
        .snapshot(&second, &Limits::default())
        .expect("snapshot");
    let (loaded, _) = config::load(&snapshot);
    let after = digests(&loaded, &source.tree_ids(&second).expect("ids"), None);
    assert_eq!(
        changed_apps(&before, &after),
        vec!["storefront-web".to_string()]
    );

    let pipeline = work.path().join("pipelines/rolling-release.yaml");
    fs::write(
        &pipeline,
        fs::read_to_string(&pipeline)
            .expect("read")
            .replace("default: 5m", "default: 6m"),
    )
    .expect("write");
    let third = commit_all(&repo, "longer soak");
    source.fetch().expect("fetch");
    let (snapshot, _) = source
        .snapshot(&third, &Limits::default())
        .expect("snapshot");
    let (loaded, _) = config::load(&snapshot);
    let later = digests(&loaded, &source.tree_ids(&third).expect("ids"), None);
    assert_eq!(
        changed_apps(&after, &later),
        vec!["inventory-worker".to_string()]
    );
}

#[test]
fn limits_and_refusals_apply_to_commits() {
    let (work, repo) = setup();
    fs::write(
        work.path().join("apps/checkout-api/manifests/big.yaml"),
        "x: 1\n".repeat(100),
    )
    .expect("write");
    fs::write(
        work.path().join("apps/checkout-api/manifests/latin1.yaml"),
        b"name: caf\xe9\n",
    )
    .expect("write");
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        "/etc/passwd",
        work.path().join("apps/checkout-api/manifests/link.yaml"),
    )
    .expect("symlink");
    let sha = commit_all(&repo, "bad files");
    let cache = tempfile::tempdir().expect("cache");
    let source = GitSource::open(
        work.path().to_str().expect("path"),
        "main",
        cache.path(),
        GitAuth::default(),
    )
    .expect("open");
    source.fetch().expect("fetch");
    let limits = Limits {
        max_file_bytes: 400,
        ..Limits::default()
    };
    let (snapshot, diagnostics) = source.snapshot(&sha, &limits).expect("snapshot");
    let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    let find = |file: &str, what: &str| {
        assert!(
            text.iter().any(|d| d.starts_with(file) && d.contains(what)),
            "no {what:?} for {file}: {text:#?}"
        );
    };
    find(
        "apps/checkout-api/manifests/big.yaml",
        "over the limit of 400 bytes",
    );
    find("apps/checkout-api/manifests/latin1.yaml", "not UTF-8");
    #[cfg(unix)]
    find(
        "apps/checkout-api/manifests/link.yaml",
        "symbolic links are not followed",
    );
    assert!(snapshot.was_refused("apps/checkout-api/manifests/big.yaml"));
    assert!(
        snapshot
            .get("apps/checkout-api/manifests/link.yaml")
            .is_none()
    );
}

#[test]
fn a_missing_branch_or_remote_is_a_clear_error() {
    let (work, repo) = setup();
    commit_all(&repo, "initial");
    let cache = tempfile::tempdir().expect("cache");
    let source = GitSource::open(
        work.path().to_str().expect("path"),
        "release",
        cache.path(),
        GitAuth::default(),
    )
    .expect("open");
    assert!(matches!(source.fetch(), Err(GitError::MissingRef(r)) if r == "refs/heads/release"));
    let gone = GitSource::open(
        "/nonexistent/config-repo",
        "main",
        &cache.path().join("other"),
        GitAuth::default(),
    )
    .expect("open");
    let e = gone.fetch().expect_err("no such remote").to_string();
    assert!(e.starts_with("git fetch /nonexistent/config-repo: "), "{e}");
}

#[test]
fn credentials_in_the_remote_url_never_appear_in_errors() {
    let cache = tempfile::tempdir().expect("cache");
    // Nothing listens on port 9 of this machine: the fetch fails and libgit2 quotes the URL.
    let source = GitSource::open(
        "http://bot:s3cret-token@127.0.0.1:9/acme/config.git",
        "main",
        cache.path(),
        GitAuth::default(),
    )
    .expect("open");
    let e = source.fetch().expect_err("nothing listens").to_string();
    assert!(!e.contains("s3cret-token") && !e.contains("bot:"), "{e}");
    assert!(e.contains("http://***@127.0.0.1:9/acme/config.git"), "{e}");
    assert!(!format!("{source:?}").contains("s3cret-token"));
}

/// Every file under an app's `manifests/` is read, from a commit as from a directory:
/// `.json` and upper-case `.YAML` manifests render, anything else is an error naming the file;
/// files of other extensions elsewhere are not read.
#[test]
fn every_file_under_manifests_is_read_or_refused() {
    let (dir, repo) = setup();
    let manifests = dir.path().join("apps/checkout-api/manifests");
    fs::write(
        manifests.join("config.json"),
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "api-json"}, "data": {"tag": "{{ app.image.tag }}"}}"#,
    )
    .expect("json");
    fs::write(
        manifests.join("SECRET-ENV.YAML"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: api-upper\n",
    )
    .expect("upper-case yaml");
    fs::write(manifests.join("notes.txt"), "not a manifest\n").expect("notes");
    fs::write(dir.path().join("apps/checkout-api/README.md"), "# api\n").expect("readme");
    let sha = commit_all(&repo, "manifests of every kind");
    let cache = tempfile::tempdir().expect("cache");
    let source = GitSource::open(
        dir.path().to_str().expect("utf-8"),
        "main",
        cache.path(),
        GitAuth::default(),
    )
    .expect("open");
    assert_eq!(source.fetch().expect("fetch"), sha);
    let (from_git, git_problems) = source.snapshot(&sha, &Limits::default()).expect("snapshot");
    let (from_dir, dir_problems) =
        bowline::source::Snapshot::from_dir(dir.path(), &Limits::default()).expect("dir");
    assert!(git_problems.is_empty() && dir_problems.is_empty());
    for snapshot in [from_git, from_dir] {
        assert!(
            snapshot
                .get("apps/checkout-api/manifests/notes.txt")
                .is_some()
        );
        assert!(snapshot.get("apps/checkout-api/README.md").is_none());
        let checked =
            bowline::check::check_snapshot(&snapshot, Some("checkout-api"), Some("staging"))
                .expect("check");
        let errors: Vec<String> = checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            vec![
                "apps/checkout-api/manifests/notes.txt:1:1: error: not a manifest: files under manifests/ are Kubernetes manifests ending in .yaml, .yml or .json (or, in an app built with Kustomize, the files its kustomizations use); move other files out of manifests/"
            ]
        );
        let app = &checked.repo.apps["checkout-api"];
        let rendered = bowline::render::render_app(&checked.repo, app, Some("staging"));
        let names: Vec<&str> = rendered[0]
            .result
            .as_ref()
            .expect("renders")
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        assert!(names.contains(&"api-json"), "{names:?}");
        assert!(names.contains(&"api-upper"), "{names:?}");
    }
}
