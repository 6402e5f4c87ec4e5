//! The config repository of the replica test and benchmark: many apps, each deployed to one
//! cluster through a deploy and a soak.

use std::path::Path;

use git2::{Repository, Signature};

/// A config repository of `apps` apps (`app-00`, …) deployed to one cluster (context `test`,
/// namespace `shop`), each through a deploy and a soak of `soak` (so executions are in the
/// middle when replicas die) and a 1 s settle; image tag `tag`; with `automated` false no
/// commit starts anything.
pub fn write_repo(root: &Path, apps: usize, tag: &str, soak: &str, automated: bool) {
    let write = |rel: &str, text: &str| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(path, text).expect("write");
    };
    write(
        "bowline.yaml",
        "apiVersion: bowline/v1\nkind: Repository\nmetadata:\n  name: shop\nspec:\n  environments:\n    - name: staging\n      namespace: shop\n      clusters:\n        - name: staging\n          context: test\n  defaults:\n    syncPolicy: {automated: true, prune: true}\n    pipeline: soak-release\n  forge:\n    github: {owner: acme, repository: shop-config, branch: main}\n",
    );
    write(
        "pipelines/soak-release.yaml",
        &format!(
            "apiVersion: bowline/v1\nkind: PipelineTemplate\nmetadata:\n  name: soak-release\nspec:\n  stages:\n    - name: deploy-staging\n      type: deploy\n      environment: staging\n      strategy: rolling\n    - name: soak\n      type: wait\n      environment: staging\n      dependsOn: [deploy-staging]\n      duration: {soak}\n    - name: settle\n      type: wait\n      environment: staging\n      dependsOn: [soak]\n      duration: 1s\n"
        ),
    );
    let policy = if automated {
        ""
    } else {
        "  syncPolicy:\n    automated: false\n"
    };
    for i in 0..apps {
        let name = format!("app-{i:02}");
        write(
            &format!("apps/{name}/app.yaml"),
            &format!(
                "apiVersion: bowline/v1\nkind: Application\nmetadata:\n  name: {name}\nspec:\n  image:\n    repository: ghcr.io/acme/{name}\n    tag: \"{tag}\"\n  environments:\n    staging: {{}}\n{policy}"
            ),
        );
        write(
            &format!("apps/{name}/manifests/config.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ app.name }}\ndata:\n  image: \"{{ image }}\"\n",
        );
    }
}

pub fn commit_all(repo: &Repository, message: &str) -> String {
    commit_to(repo, "refs/heads/main", "refs/heads/main", message)
}

/// Commits the work tree to `reference`, on top of `parent`'s commit.
pub fn commit_to(repo: &Repository, reference: &str, parent: &str, message: &str) -> String {
    let mut index = repo.index().expect("index");
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .expect("add");
    index.write().expect("index");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let sig = Signature::now("Test", "test@example.com").expect("signature");
    let parent = repo
        .refname_to_id(parent)
        .ok()
        .map(|id| repo.find_commit(id).expect("parent"));
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some(reference), &sig, &sig, message, &tree, &parents)
        .expect("commit")
        .to_string()
}
