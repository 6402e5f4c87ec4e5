//! Every validation rule of `bowline validate`, proven with a failing fixture and the exact
//! diagnostics it must produce.
//!
//! Each case lives in `tests/fixtures/invalid/<case>/` as an overlay of `tests/fixtures/base/`
//! (see `tests/common/mod.rs`) and is validated in a fresh temporary copy. The whole sorted
//! diagnostic list is compared with the case's `expected.txt`, so a missing or an extra
//! diagnostic fails the test. `BLESS=1 cargo test --test validate_rules` rewrites the expected
//! files; review them by hand before committing.

mod common;

use std::path::Path;

use common::{base_repo, case_names, lines, run_case_with, validate, write_file};

/// Declares one test per fixture case and the list of every case the tests cover.
macro_rules! cases {
    ($($test:ident => $case:literal $(with $setup:expr)?;)*) => {
        /// Every case directory a test of this file runs.
        const CASES: &[&str] = &[$($case),*];

        $(
            #[test]
            fn $test() {
                run_case_with($case, cases!(@setup $($setup)?));
            }
        )*
    };
    (@setup) => { |_: &Path| {} };
    (@setup $setup:expr) => { $setup };
}

cases! {
    // YAML syntax and structure.
    malformed_yaml => "malformed-yaml";
    malformed_yaml_flow => "malformed-yaml-flow";
    duplicate_keys => "duplicate-keys";
    duplicate_keys_top_level => "duplicate-keys-top-level";
    alias_bomb => "alias-bomb";
    multiple_documents => "multiple-documents";
    empty_document => "empty-document";
    not_a_mapping => "not-a-mapping";
    // Kind, location and JSON Schema.
    wrong_type => "wrong-type";
    unknown_field => "unknown-field";
    unknown_field_in_stage => "unknown-field-in-stage";
    missing_required_field => "missing-required-field";
    missing_required_stage_field => "missing-required-stage-field";
    wrong_kind => "wrong-kind";
    wrong_api_version => "wrong-api-version";
    invalid_name_pattern => "invalid-name-pattern";
    invalid_environment_key => "invalid-environment-key";
    invalid_duration => "invalid-duration";
    app_name_differs_from_directory => "app-name-differs-from-directory";
    // References between documents and repository layout.
    unknown_environment_in_app => "unknown-environment-in-app";
    unknown_environment_in_stage => "unknown-environment-in-stage";
    unknown_environment_in_window => "unknown-environment-in-window";
    unknown_pipeline_template => "unknown-pipeline-template";
    unknown_default_pipeline => "unknown-default-pipeline";
    unknown_default_pipeline_used => "unknown-default-pipeline-used";
    unknown_canary_config => "unknown-canary-config";
    unknown_canary_config_in_stage => "unknown-canary-config-in-stage";
    manifests_without_app => "manifests-without-app";
    ignored_file => "ignored-file";
    no_manifests => "no-manifests";
    missing_repository_file => "missing-repository-file";
    // The stage DAG.
    unknown_stage_in_depends_on => "unknown-stage-in-depends-on";
    stage_depends_on_itself => "stage-depends-on-itself";
    dependency_cycle => "dependency-cycle";
    duplicate_stage_names => "duplicate-stage-names";
    // Duplicate names.
    duplicate_environment_names => "duplicate-environment-names";
    duplicate_cluster_names => "duplicate-cluster-names";
    duplicate_app_names => "duplicate-app-names";
    duplicate_pipeline_names => "duplicate-pipeline-names";
    duplicate_canary_names => "duplicate-canary-names";
    duplicate_metric_names => "duplicate-metric-names";
    duplicate_parameter_names => "duplicate-parameter-names";
    // Template parameters and application variables.
    missing_template_variable => "missing-template-variable";
    unknown_template_variable => "unknown-template-variable";
    variable_wrong_type => "variable-wrong-type";
    parameter_default_wrong_type => "parameter-default-wrong-type";
    unknown_parameter_reference => "unknown-parameter-reference";
    unknown_stage_variable => "unknown-stage-variable";
    stage_template_syntax_error => "stage-template-syntax-error";
    invalid_when_expression => "invalid-when-expression";
    instantiated_value_invalid => "instantiated-value-invalid";
    // Execution windows.
    unknown_time_zone => "unknown-time-zone";
    empty_execution_window => "empty-execution-window";
    // Canary configs.
    canary_analysis_without_config => "canary-analysis-without-config";
    group_without_weight => "group-without-weight";
    weight_without_metrics => "weight-without-metrics";
    weights_not_100 => "weights-not-100";
    thresholds_out_of_order => "thresholds-out-of-order";
    stage_thresholds_out_of_order => "stage-thresholds-out-of-order";
    effect_sizes_out_of_order => "effect-sizes-out-of-order";
    interval_longer_than_lifetime => "interval-longer-than-lifetime";
    stage_interval_longer_than_lifetime => "stage-interval-longer-than-lifetime";
    step_longer_than_interval => "step-longer-than-interval";
    step_longer_than_lifetime => "step-longer-than-lifetime";
    unknown_query_template => "unknown-query-template";
    unknown_query_variable => "unknown-query-variable";
    query_syntax_error => "query-syntax-error";
    // Manifests and rendered objects.
    manifest_syntax_error => "manifest-syntax-error";
    manifest_undefined_variable => "manifest-undefined-variable";
    rendered_not_yaml => "rendered-not-yaml";
    rendered_object_without_name => "rendered-object-without-name";
    generate_name => "generate-name";
    rendered_object_not_mapping => "rendered-object-not-mapping";
    rendered_object_without_kind => "rendered-object-without-kind";
    object_defined_twice => "object-defined-twice";
    object_defined_twice_in_one_file => "object-defined-twice-in-one-file";
    object_rendered_by_two_apps => "object-rendered-by-two-apps";
    manifest_not_a_manifest => "manifest-not-a-manifest";
    argo_cd_annotations => "argo-cd-annotations";
    template_uses_image_the_app_does_not_set => "template-uses-image-the-app-does-not-set";
    manifest_duplicate_keys => "manifest-duplicate-keys";
    // Kustomize sources.
    kustomize_references => "kustomize-references";
    kustomize_no_overlay => "kustomize-no-overlay";
    kustomize_path_not_found => "kustomize-path-not-found";
    kustomize_build_error => "kustomize-build-error";
    kustomize_unused_files => "kustomize-unused-files";
    kustomize_image_not_used => "kustomize-image-not-used";
    // Reading the repository (inputs that cannot be stored in Git, made at test time).
    file_too_large => "file-too-large" with setup_file_too_large;
    non_utf8_file => "non-utf8-file" with setup_non_utf8_file;
    non_utf8_app_file => "non-utf8-app-file" with setup_non_utf8_app_file;
    byte_order_mark => "byte-order-mark" with setup_byte_order_mark;
}

/// One byte over the default limit of 1 MiB: a manifest with a huge ConfigMap.
fn setup_file_too_large(root: &Path) {
    let limit = bowline::source::Limits::default().max_file_bytes;
    let head = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  blob: \"";
    let tail = "\"\n";
    let fill = usize::try_from(limit).expect("limit fits usize") + 1 - head.len() - tail.len();
    let text = format!("{head}{}{tail}", "x".repeat(fill));
    assert_eq!(text.len() as u64, limit + 1);
    write_file(root, "apps/api/manifests/big-configmap.yaml", text);
}

/// A Latin-1 `é` (0xE9) on line 3, column 21 of a manifest.
fn setup_non_utf8_file(root: &Path) {
    let bytes: &[u8] =
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: caf\xe9}\ndata:\n  a: b\n";
    write_file(root, "apps/api/manifests/configmap.yaml", bytes);
}

/// The app's own app.yaml with a Latin-1 `é` in its description (line 8, column 26).
fn setup_non_utf8_app_file(root: &Path) {
    let path = root.join("apps/api/app.yaml");
    let text = std::fs::read_to_string(&path).expect("base app.yaml");
    let mut bytes = Vec::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("  description:") {
            bytes.extend_from_slice(b"  description: Public caf\xe9 API.\n");
        } else {
            bytes.extend_from_slice(line.as_bytes());
        }
    }
    std::fs::write(&path, bytes).expect("write app.yaml");
}

/// A UTF-8 byte order mark (as Windows editors write) before bowline.yaml; the case's
/// bowline.yaml has one schema error, which must be found at the same position as without it.
fn setup_byte_order_mark(root: &Path) {
    let path = root.join("bowline.yaml");
    let text = std::fs::read_to_string(&path).expect("case bowline.yaml");
    std::fs::write(&path, format!("\u{feff}{text}")).expect("write bowline.yaml");
}

#[cfg(unix)]
#[test]
fn symlink_outside_repo() {
    let outside = tempfile::tempdir().expect("temp dir");
    let target = outside.path().join("secret.yaml");
    std::fs::write(
        &target,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: stolen\n",
    )
    .expect("write target");
    run_case_with("symlink-outside-repo", |root| {
        std::os::unix::fs::symlink(&target, root.join("apps/api/manifests/secret.yaml"))
            .expect("create symlink");
        // A link to a directory outside the repository is refused the same way.
        std::os::unix::fs::symlink(outside.path(), root.join("canary/shared"))
            .expect("create directory symlink");
    });
}

#[cfg(unix)]
#[test]
fn broken_symlink() {
    run_case_with("broken-symlink", |root| {
        std::os::unix::fs::symlink(
            root.join("apps/api/manifests/gone.yaml"),
            root.join("apps/api/manifests/ingress.yaml"),
        )
        .expect("create symlink");
    });
}

/// Linux only: other systems (macOS) refuse file names that are not UTF-8.
#[cfg(target_os = "linux")]
#[test]
fn non_utf8_file_name() {
    use std::os::unix::ffi::OsStrExt;
    run_case_with("non-utf8-file-name", |root| {
        let name = std::ffi::OsStr::from_bytes(b"caf\xe9.yaml");
        std::fs::write(
            root.join("apps/api/manifests").join(name),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cafe\n",
        )
        .expect("write file with a Latin-1 name");
    });
}

/// Cases run by explicit tests rather than by the `cases!` list.
const EXPLICIT_CASES: &[&str] = &[
    "symlink-outside-repo",
    "broken-symlink",
    "non-utf8-file-name",
];

#[test]
fn base_repository_is_valid() {
    let repo = base_repo();
    let diagnostics = validate(repo.path());
    assert!(
        diagnostics.is_empty(),
        "the base fixture must validate without errors or warnings:\n{}",
        lines(&diagnostics).join("\n")
    );
}

#[test]
fn every_fixture_case_has_a_test() {
    let mut covered: Vec<&str> = CASES.iter().chain(EXPLICIT_CASES).copied().collect();
    covered.sort_unstable();
    let on_disk = case_names();
    assert_eq!(
        on_disk, covered,
        "every directory under tests/fixtures/invalid needs a test (and vice versa)"
    );
}

#[test]
fn every_case_directory_has_an_expected_file() {
    for case in case_names() {
        let expected = common::case_dir(&case).join("expected.txt");
        assert!(
            expected.is_file() || std::env::var_os("BLESS").is_some(),
            "{} is missing",
            expected.display()
        );
    }
}

/// Cases whose rule is a warning: the repository stays valid.
const WARNING_CASES: &[&str] = &["argo-cd-annotations", "ignored-file", "no-manifests"];

/// Every case fails validation (its expected diagnostics hold an error), except the warning
/// cases, which must hold warnings only.
#[test]
fn every_case_expects_errors_or_is_a_warning_case() {
    for case in case_names() {
        let path = common::case_dir(&case).join("expected.txt");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let errors = text.lines().filter(|l| l.contains(": error: ")).count();
        let warnings = text.lines().filter(|l| l.contains(": warning: ")).count();
        if WARNING_CASES.contains(&case.as_str()) {
            assert!(
                errors == 0 && warnings > 0,
                "{case}: expected warnings only\n{text}"
            );
        } else {
            assert!(errors > 0, "{case}: expected.txt lists no error\n{text}");
        }
    }
}

#[test]
fn outcome_functions_validate_in_when() {
    let repo = base_repo();
    let path = repo.path().join("pipelines/standard.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    let extra = "    - name: on-rejection
      type: wait
      dependsOn: [approve]
      when: rejected() or canceled()
      duration: 1s
    - name: on-cancel
      type: checkPreconditions
      dependsOn: [approve]
      when: canceled() and not failure()
      preconditions:
        - expression: rejected() or success() or always()
";
    write_file(
        repo.path(),
        "pipelines/standard.yaml",
        format!("{text}{extra}"),
    );
    let diagnostics = validate(repo.path());
    assert!(
        diagnostics.is_empty(),
        "rejected() and canceled() are valid:\n{}",
        lines(&diagnostics).join("\n")
    );
}

/// `spec.image` is optional: an app whose manifests carry their own images is valid.
#[test]
fn an_app_without_an_image_whose_manifests_carry_theirs_is_valid() {
    let repo = base_repo();
    let app = repo.path().join("apps/api/app.yaml");
    let text = std::fs::read_to_string(&app).expect("read");
    let without: String = text
        .lines()
        .filter(|l| {
            !l.starts_with("  image:")
                && !l.starts_with("    repository:")
                && !l.starts_with("    tag:")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!without.contains("image"), "{without}");
    write_file(repo.path(), "apps/api/app.yaml", &without);
    let deployment = repo.path().join("apps/api/manifests/deployment.yaml");
    let manifest = std::fs::read_to_string(&deployment).expect("read");
    write_file(
        repo.path(),
        "apps/api/manifests/deployment.yaml",
        manifest.replace("{{ image }}", "ghcr.io/acme/api:1.4.2"),
    );
    let diagnostics = validate(repo.path());
    assert!(
        diagnostics.iter().all(|d| !d.is_error()),
        "{:#?}",
        lines(&diagnostics)
    );
}
