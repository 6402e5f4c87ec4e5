//! Every built-in policy, proven with passing and failing cases and the exact diagnostics
//! (see `tests/fixtures/policy/README.md` for the case format), plus the exception
//! annotation; the bytecode and the interpreter agreeing, and the interpreter taking over
//! where the bytecode cannot run.

use std::fs;
use std::path::{Path, PathBuf};

use bowline::config::yaml::parse_stream;
use bowline::config::{Application, Environment, Stage};
use bowline::object as order;
use bowline::policy::{PolicyReport, PolicySet, PolicySeverity, PolicySource, Target};
use bowline::render::RenderedObject;
use serde_json::{Value, json};

fn builtin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy/builtin")
}

fn app() -> Application {
    serde_json::from_value(json!({
        "metadata": {"name": "api", "labels": {"team": "payments"}},
        "spec": {
            "image": {"repository": "ghcr.io/acme/api", "tag": "1.4.2"},
            "environments": {"staging": null, "production": null},
            "pipeline": {"template": "release"},
        },
    }))
    .expect("application")
}

fn environment(name: &str) -> Environment {
    let namespace = if name == "production" {
        "shop".to_string()
    } else {
        format!("shop-{name}")
    };
    serde_json::from_value(json!({
        "name": name,
        "namespace": namespace,
        "clusters": [{"name": format!("{name}-eu-1"), "context": format!("{name}-eu-1")}],
    }))
    .expect("environment")
}

/// The default pipeline of the cases: an approval before a rolling production deploy.
fn gated_pipeline() -> Vec<Stage> {
    serde_json::from_value(json!([
        {"name": "deploy-staging", "type": "deploy", "environment": "staging", "strategy": "rolling"},
        {"name": "approve", "type": "manualJudgment", "dependsOn": ["deploy-staging"]},
        {"name": "deploy-production", "type": "deploy", "environment": "production",
         "dependsOn": ["approve"], "strategy": "rolling"},
    ]))
    .expect("stages")
}

/// Objects of a case file (after its context document), as rendering would produce them.
fn objects(file: &str, documents: &[(usize, Value)], namespace: &str) -> Vec<RenderedObject> {
    documents
        .iter()
        .map(|(line, value)| {
            let mut object = value.clone();
            let kind = object["kind"].as_str().expect("kind").to_string();
            let name = object["metadata"]["name"]
                .as_str()
                .expect("name")
                .to_string();
            let namespace = if order::is_cluster_scoped(&kind) {
                None
            } else {
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(namespace)
                    .to_string();
                object["metadata"]["namespace"] = json!(ns);
                Some(ns)
            };
            RenderedObject {
                api_version: object["apiVersion"].as_str().expect("apiVersion").into(),
                kind,
                namespace,
                name,
                source: file.to_string(),
                line: *line,
                object,
            }
        })
        .collect()
}

/// Evaluates one case file; returns the report and the expected lines.
fn run_case(policies: &PolicySet, path: &Path) -> (PolicyReport, Vec<String>) {
    let text = fs::read_to_string(path).expect("case file");
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .expect("file name");
    let documents = parse_stream(&text).expect("case is YAML");
    let (context, rest) = documents.split_first().expect("a context document");
    let context = &context.value;
    let env = environment(context["environment"].as_str().unwrap_or("production"));
    let stages = match &context["pipeline"] {
        Value::Null => Some(gated_pipeline()),
        Value::String(s) if s == "gated" => Some(gated_pipeline()),
        Value::String(s) if s == "none" => None,
        other => Some(serde_json::from_value(other.clone()).expect("stages")),
    };
    let app = app();
    let target = Target {
        app: &app,
        environment: &env,
        pipeline_name: stages.as_ref().map(|_| "release"),
        pipeline: stages.as_deref(),
    };
    let documents: Vec<(usize, Value)> = rest.iter().map(|d| (d.line, d.value.clone())).collect();
    let objects = objects(file, &documents, &env.namespace);
    let expected = context["expected"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| l.as_str().expect("expected line").to_string())
                .collect()
        })
        .unwrap_or_default();
    (policies.evaluate(&target, &objects), expected)
}

/// Rewrites the `expected:` list of a case (`BLESS=1`; run twice, as the list's length moves
/// the objects' lines). Review the result by hand.
fn bless(case: &Path, actual: &[String]) {
    let text = fs::read_to_string(case).expect("case file");
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("expected:") {
            out.push("expected:".to_string());
            out.extend(actual.iter().map(|l| format!("  - {l:?}")));
            while lines.peek().is_some_and(|l| l.starts_with("  - ")) {
                lines.next();
            }
        } else {
            out.push(line.to_string());
        }
    }
    fs::write(case, out.join("\n") + "\n").expect("write case");
}

#[test]
fn every_builtin_policy_has_passing_and_failing_cases() {
    let policies = PolicySet::builtin().expect("built-in policies compile");
    let mut failures = Vec::new();
    let mut covered = Vec::new();
    for policy in policies.policies() {
        let dir = builtin_dir().join(&policy.id);
        let mut cases: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        cases.sort();
        let name = |p: &PathBuf| {
            p.file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("")
                .to_string()
        };
        assert!(
            cases.iter().any(|c| name(c).starts_with("pass")),
            "{}: no passing case",
            policy.id
        );
        assert!(
            cases.iter().any(|c| name(c).starts_with("fail")),
            "{}: no failing case",
            policy.id
        );
        for case in cases {
            let (report, expected) = run_case(&policies, &case);
            let actual: Vec<String> = report
                .diagnostics()
                .iter()
                .map(ToString::to_string)
                .collect();
            let label = format!("{}/{}", policy.id, name(&case));
            if name(&case).starts_with("pass") {
                if !actual.is_empty() {
                    failures.push(format!(
                        "{label}: expected no result, got:\n{}",
                        actual.join("\n")
                    ));
                }
                continue;
            }
            if actual.is_empty() {
                failures.push(format!("{label}: expected results, got none"));
            }
            if let Some(other) = report.results.iter().find(|r| r.policy != policy.id) {
                failures.push(format!("{label}: result of another policy: {other:?}"));
            }
            if actual != expected && std::env::var_os("BLESS").is_some() {
                bless(&case, &actual);
                continue;
            }
            if actual != expected {
                let quoted: Vec<String> = actual.iter().map(|l| format!("  - {l:?}")).collect();
                failures.push(format!(
                    "{label}: diagnostics differ; actual:\n{}",
                    quoted.join("\n")
                ));
            }
        }
        covered.push(policy.id.clone());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(
        covered,
        [
            "image-tag",
            "resources",
            "probes",
            "privileged-container",
            "host-path",
            "host-network",
            "production-gate",
            "production-replicas",
            "namespace"
        ]
    );
}

#[test]
fn builtin_severities() {
    let policies = PolicySet::builtin().expect("built-in policies compile");
    for policy in policies.policies() {
        let expected = if policy.id == "probes" {
            PolicySeverity::Warn
        } else {
            PolicySeverity::Deny
        };
        assert_eq!(policy.severities, [expected], "{}", policy.id);
        assert!(policy.builtin);
    }
}

/// A Deployment breaking image-tag and production-replicas, with the given annotations.
fn annotated(annotations: Value) -> Vec<RenderedObject> {
    let object = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "shop", "annotations": annotations},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{
            "name": "api",
            "image": "ghcr.io/acme/api:latest",
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "livenessProbe": {"tcpSocket": {"port": 80}},
            "readinessProbe": {"tcpSocket": {"port": 80}},
        }]}}},
    });
    objects("apps/api/manifests/deployment.yaml", &[(1, object)], "shop")
}

fn evaluate_production(objects: &[RenderedObject]) -> PolicyReport {
    let policies = PolicySet::builtin().expect("built-in policies compile");
    evaluate_production_with(&policies, objects)
}

fn evaluate_production_with(policies: &PolicySet, objects: &[RenderedObject]) -> PolicyReport {
    let app = app();
    let env = environment("production");
    let stages = gated_pipeline();
    let target = Target {
        app: &app,
        environment: &env,
        pipeline_name: Some("release"),
        pipeline: Some(&stages),
    };
    policies.evaluate(&target, objects)
}

#[test]
fn an_exception_with_a_reason_suppresses_and_is_listed() {
    let report = evaluate_production(&annotated(json!({
        "bowline.dev/policy-exception.production-replicas": "singleton: leader election is not implemented yet (ACME-123)",
    })));
    let policies: Vec<&str> = report.results.iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(policies, ["image-tag"]);
    assert_eq!(report.exceptions.len(), 1);
    let e = &report.exceptions[0];
    assert_eq!(e.policy, "production-replicas");
    assert_eq!(e.suppressed, 1);
    assert_eq!(
        e.to_string(),
        "apps/api/manifests/deployment.yaml:1:1: exception: production-replicas: Deployment shop/api in production: \"singleton: leader election is not implemented yet (ACME-123)\" (1 result suppressed)"
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn an_exception_without_a_reason_does_not_apply() {
    let report = evaluate_production(&annotated(json!({
        "bowline.dev/policy-exception.image-tag": "  ",
    })));
    let lines: Vec<String> = report
        .diagnostics()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "apps/api/manifests/deployment.yaml:1:1: error: image-tag: Deployment shop/api in production: spec.template.spec.containers[0].image: image \"ghcr.io/acme/api:latest\" uses the tag \"latest\"; pin a version tag or a digest (the annotation bowline.dev/policy-exception.image-tag gives no reason, so it does not apply)",
            "apps/api/manifests/deployment.yaml:1:1: error: production-replicas: Deployment shop/api in production: spec.replicas: runs 1 replica in production; run at least 2",
        ]
    );
    assert!(report.exceptions.is_empty());
}

#[test]
fn an_exception_naming_no_policy_is_a_warning() {
    let report = evaluate_production(&annotated(json!({
        "bowline.dev/policy-exception.image-tags": "typo",
    })));
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        problems,
        [
            "apps/api/manifests/deployment.yaml:1:1: warning: Deployment shop/api in production: annotation bowline.dev/policy-exception.image-tags names no known policy (did you mean \"image-tag\"?)"
        ]
    );
    assert_eq!(report.results.len(), 2);
}

/// Every case file under the built-in fixtures, sorted.
fn all_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(builtin_dir())
        .expect("fixture directory")
        .flat_map(|dir| fs::read_dir(dir.expect("entry").path()).expect("policy directory"))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    cases
}

#[test]
fn bytecode_and_interpreter_agree_on_every_case() {
    let bytecode = PolicySet::builtin().expect("built-in policies compile");
    assert!(bytecode.uses_bytecode(), "{bytecode:?}");
    let interpreted = bytecode.interpreted();
    assert!(!interpreted.uses_bytecode());
    let cases = all_cases();
    assert!(cases.len() >= 18, "{cases:?}");
    for case in &cases {
        let (compiled, _) = run_case(&bytecode, case);
        let (walked, _) = run_case(&interpreted, case);
        assert_eq!(compiled, walked, "{}", case.display());
    }
}

/// The built-in policies plus one repository policy `policies/<name>.rego` holding `text`.
fn with_repository_policy(name: &str, text: &str) -> PolicySet {
    let (set, problems) = bowline::policy::load::with_repository(&[PolicySource {
        file: format!("policies/{name}.rego"),
        text: text.to_string(),
    }])
    .expect("built-in policies compile");
    assert!(problems.is_empty(), "{problems:?}");
    set
}

#[test]
fn repository_policies_run_in_the_interpreter_beside_the_builtin_bytecode() {
    // `with` is not supported by the bytecode compiler, and needs none.
    let policies = with_repository_policy(
        "with_input",
        "package bowline.policies.with_input\n\nis_service if input.object.kind == \"Service\"\n\ndeny contains \"checked as a Service\" if {\n\tis_service with input.object.kind as \"Service\"\n\tinput.object.kind == \"Deployment\"\n}\n",
    );
    assert!(policies.uses_bytecode());
    let report = evaluate_production_with(&policies, &annotated(json!({})));
    let found: Vec<(&str, &str)> = report
        .results
        .iter()
        .map(|r| (r.policy.as_str(), r.message.as_str()))
        .collect();
    assert!(
        found.contains(&("with-input", "checked as a Service")),
        "{found:?}"
    );
    assert_eq!(found.len(), 3, "{found:?}");
}

#[test]
fn a_repository_policy_failing_at_run_time_is_reported_at_its_line() {
    // Two values for one complete rule: an error at evaluation time only, which the bytecode
    // would not report.
    let policies = with_repository_policy(
        "conflict",
        "package bowline.policies.conflict\n\ndeny := \"one\" if input.object.kind == \"Deployment\"\n\ndeny := \"two\" if input.object.kind == \"Deployment\"\n",
    );
    assert!(policies.uses_bytecode());
    let report = evaluate_production_with(&policies, &annotated(json!({})));
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0],
        "policies/conflict.rego:5:1: error: policy \"conflict\" failed: rule conflicts with rule at policies/conflict.rego:3:1"
    );
    // The built-in policies still report on the object.
    let policies: Vec<&str> = report.results.iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(policies, ["image-tag", "production-replicas"]);
}

#[test]
fn repository_modules_may_not_take_the_builtin_packages() {
    for package in [
        "bowline.lib",
        "bowline_internal.builtin",
        "bowline_internal",
    ] {
        let (set, problems) = bowline::policy::load::with_repository(&[PolicySource {
            file: "policies/helpers.rego".to_string(),
            text: format!("package {package}\n\nextra := true\n"),
        }])
        .expect("built-in policies compile");
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [format!(
                "policies/helpers.rego:1:1: error: invalid Rego policy: package {package} is reserved for bowline's built-in modules; choose another name"
            )]
        );
        assert!(set.uses_bytecode());
    }
}
