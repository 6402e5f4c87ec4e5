//! Policies: Rego guardrails evaluated on every rendered object before anything reaches a
//! cluster.
//!
//! A policy is a Rego module whose package lies under `bowline.policies` (for example
//! `package bowline.policies.image_tag`, policy id `image-tag`) and which defines `deny`
//! and/or `warn` as sets of results. A result is a message string or an object
//! `{"msg": "...", "field": "spec.replicas"}`. Every policy sees, per rendered object, the
//! input built by [`input`]: `object`, `app`, `environment` (with `production`), `pipeline`
//! (the instantiated stages, or null) and `autoscaler`.
//!
//! The built-in policies ship in the binary ([`builtin`]); repository policies come from the
//! config repository's `policies/*.rego` ([`load`]). Evaluation ([`PolicySet::evaluate`]) is a
//! pure function of the policies, the target and its objects. An object opts out of one policy
//! with the annotation `bowline.dev/policy-exception.<policy-id>: "<reason>"`; every exception
//! is listed in the [`PolicyReport`] so it stays visible.
//!
//! The built-in policies run as bytecode on regorus's virtual machine, compiled when the
//! policies are loaded; the tests hold its results to the interpreter's on every fixture. Repository
//! policies run in regorus's interpreter, the reference for any Rego a team writes. Should the
//! bytecode fail on an object, the interpreter evaluates it instead, and when a policy fails
//! there too, each rule alone names the failing policy, file and line.

pub mod builtin;
pub mod input;
pub mod load;
pub mod sandbox;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rayon::prelude::*;
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use serde::Serialize;

use crate::config::instantiate::instantiate;
use crate::config::{Application, ConfigRepo, Environment, PolicyLevel, Stage};
use crate::diagnostic::{Diagnostic, did_you_mean};
use crate::render::{self, RenderSummary, RenderedObject};

pub use load::from_snapshot;

/// Prefix of the packages that are policies (`data.bowline.policies.<name>`).
pub const POLICY_PACKAGE_PREFIX: &str = "data.bowline.policies.";
/// Prefix of the annotation that exempts an object from one policy; the policy id follows.
pub const EXCEPTION_ANNOTATION_PREFIX: &str = "bowline.dev/policy-exception.";
/// Longest time one evaluation of the policies on one object may take.
pub const EVALUATION_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Most bytecode instructions one evaluation on one object may execute, a bound against
/// runaway evaluation; beyond it the interpreter takes over, bound by
/// [`EVALUATION_TIME_LIMIT`].
pub const EVALUATION_INSTRUCTION_LIMIT: usize = 10_000_000;

/// How bad a policy result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicySeverity {
    /// Fails validation and plan (exit 1); `sync` refuses.
    Deny,
    /// Reported as a warning.
    Warn,
}

impl PolicySeverity {
    /// The Rego rule holding results of this severity.
    pub fn rule(self) -> &'static str {
        match self {
            PolicySeverity::Deny => "deny",
            PolicySeverity::Warn => "warn",
        }
    }
}

/// Errors of the policy engine itself (not findings about the repository).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A built-in policy does not compile: a defect of bowline itself.
    #[error("built-in policy {file} does not compile: {message}")]
    Builtin {
        /// The policy file.
        file: String,
        /// The compiler's message.
        message: String,
    },
}

/// One policy: its id, where it comes from and which rules it defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Policy id: the package name below `bowline.policies`, `_` written as `-`.
    pub id: String,
    /// Rego package, `data.bowline.policies.<name>`.
    pub package: String,
    /// The file defining it (`policies/x.rego`).
    pub file: String,
    /// True for the policies shipped with bowline.
    pub builtin: bool,
    /// The severities it has rules for (`deny`, `warn`).
    pub severities: Vec<PolicySeverity>,
}

/// A Rego source file.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// Path shown in messages.
    pub file: String,
    /// The Rego text.
    pub text: String,
}

/// A compiled set of policies, ready to evaluate. Cloning is cheap (the compiled modules and
/// the bytecode are shared).
#[derive(Clone)]
pub struct PolicySet {
    engine: regorus::Engine,
    policies: Vec<Policy>,
    /// A generated rule gathering every built-in policy's results in one evaluation (helpers
    /// such as `bowline.lib.containers` are then computed once per object, not once per
    /// policy).
    builtin_rule: Option<String>,
    /// The same for the repository policies, when there are any.
    repository_rule: Option<String>,
    /// The built-in rule compiled to regorus's virtual machine bytecode, several times faster
    /// than the tree-walking interpreter. Only the built-in policies run as bytecode: their
    /// results are checked against the interpreter's by the tests, while the interpreter
    /// stays the reference for the repository's own Rego (the bytecode differs from it in
    /// corners, such as a complete rule with conflicting values, which it does not report).
    program: Option<Arc<Program>>,
    /// The repository's modules that loaded, in order.
    repository_sources: Vec<PolicySource>,
    /// The worker process evaluating the repository policies, when isolation is set up
    /// ([`sandbox::isolate`]); shared by clones.
    sandbox: Option<Arc<sandbox::Sandbox>>,
}

impl fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicySet")
            .field("policies", &self.policies)
            .field("builtin_rule", &self.builtin_rule)
            .field("repository_rule", &self.repository_rule)
            .field("bytecode", &self.program.is_some())
            .field("sandbox", &self.sandbox)
            .finish_non_exhaustive()
    }
}

/// Package of the generated rule gathering the built-in policies' results.
const BUILTIN_RESULTS_PACKAGE: &str = "bowline_internal.builtin";
/// Package of the generated rule gathering the repository policies' results.
const REPOSITORY_RESULTS_PACKAGE: &str = "bowline_internal.repository";
/// Packages reserved to bowline: the built-in helpers and the generated rules.
const RESERVED_PACKAGES: &[&str] = &["data.bowline.lib", "data.bowline_internal"];

/// One finding of one policy on one rendered object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResult {
    /// Policy id.
    pub policy: String,
    /// Deny or warn.
    pub severity: PolicySeverity,
    /// Application.
    pub app: String,
    /// Environment.
    pub environment: String,
    /// The object, `Kind namespace/name` (or `Kind name`).
    pub object: String,
    /// Manifest file the object was rendered from.
    pub file: String,
    /// Line where the object's document starts.
    pub line: usize,
    /// Dotted path of the offending field, when the policy names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl PolicyResult {
    /// The result as a diagnostic: deny → error, warn → warning, message
    /// `<policy>: <object> in <environment>: <field>: <message>`.
    pub fn to_diagnostic(&self) -> Diagnostic {
        let field = self
            .field
            .as_deref()
            .map(|f| format!("{f}: "))
            .unwrap_or_default();
        let d = Diagnostic::error(
            &self.file,
            self.line,
            1,
            "",
            format!(
                "{}: {} in {}: {field}{}",
                self.policy, self.object, self.environment, self.message
            ),
        );
        match self.severity {
            PolicySeverity::Deny => d,
            PolicySeverity::Warn => d.into_warning(),
        }
    }
}

/// An object exempted from a policy by its annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyException {
    /// Policy id.
    pub policy: String,
    /// Application.
    pub app: String,
    /// Environment.
    pub environment: String,
    /// The object, `Kind namespace/name`.
    pub object: String,
    /// Manifest file the object was rendered from.
    pub file: String,
    /// Line where the object's document starts.
    pub line: usize,
    /// The reason given in the annotation.
    pub reason: String,
    /// How many results the exception suppressed here.
    pub suppressed: usize,
}

impl fmt::Display for PolicyException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:1: exception: {}: {} in {}: {:?} ({} suppressed)",
            self.file,
            self.line,
            self.policy,
            self.object,
            self.environment,
            self.reason,
            crate::diagnostic::count(self.suppressed, "result")
        )
    }
}

/// Everything the policies found, for one target or a whole repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyReport {
    /// Results that were not excepted, deny before warn within a position.
    pub results: Vec<PolicyResult>,
    /// Exceptions present on the objects.
    pub exceptions: Vec<PolicyException>,
    /// Problems with policies or exceptions themselves (a policy failing at run time, an
    /// exception naming no known policy).
    #[serde(skip)]
    pub problems: Vec<Diagnostic>,
}

impl PolicyReport {
    /// Adds another report to this one.
    pub fn extend(&mut self, other: PolicyReport) {
        self.results.extend(other.results);
        self.exceptions.extend(other.exceptions);
        self.problems.extend(other.problems);
    }

    /// Sorts results and exceptions by file, line, environment and policy, for stable output;
    /// drops repeated problems.
    pub fn sort(&mut self) {
        crate::diagnostic::sort_and_dedup(&mut self.problems);
        self.results.sort_by(|a, b| {
            (
                &a.file,
                a.line,
                &a.environment,
                &a.policy,
                &a.field,
                &a.message,
            )
                .cmp(&(
                    &b.file,
                    b.line,
                    &b.environment,
                    &b.policy,
                    &b.field,
                    &b.message,
                ))
        });
        self.exceptions.sort_by(|a, b| {
            (&a.file, a.line, &a.environment, &a.policy).cmp(&(
                &b.file,
                b.line,
                &b.environment,
                &b.policy,
            ))
        });
    }

    /// Results and problems as diagnostics.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        self.results
            .iter()
            .map(PolicyResult::to_diagnostic)
            .chain(self.problems.iter().cloned())
            .collect()
    }

    /// Number of deny results.
    pub fn denied(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.severity == PolicySeverity::Deny)
            .count()
    }
}

/// What the policies see besides the object: the application in one environment.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The application.
    pub app: &'a Application,
    /// The environment.
    pub environment: &'a Environment,
    /// Name of the pipeline template the app runs, if any.
    pub pipeline_name: Option<&'a str>,
    /// Its stages instantiated for the app; `None` when the app has no pipeline.
    pub pipeline: Option<&'a [Stage]>,
}

impl PolicySet {
    /// The built-in policies only, with their combined rule and its bytecode (repository
    /// modules may follow).
    pub fn builtin() -> Result<PolicySet, PolicyError> {
        let mut set = PolicySet {
            engine: new_engine(),
            policies: Vec::new(),
            builtin_rule: None,
            repository_rule: None,
            program: None,
            repository_sources: Vec::new(),
            sandbox: None,
        };
        for source in builtin::sources() {
            set.add(&source, true)
                .map_err(|(_, _, message)| PolicyError::Builtin {
                    file: source.file.clone(),
                    message,
                })?;
        }
        set.prepare()
            .map_err(|(file, _, message)| PolicyError::Builtin {
                file: file.unwrap_or_default(),
                message,
            })?;
        set.builtin_rule = set.combine(BUILTIN_RESULTS_PACKAGE, true);
        set.program = set.builtin_rule.as_deref().and_then(|rule| {
            compile_bytecode(&set.engine, rule)
                .inspect_err(|message| {
                    tracing::warn!(
                        reason = %message,
                        "built-in policies run in the interpreter: they do not compile to bytecode"
                    );
                })
                .ok()
        });
        Ok(set)
    }

    /// Adds the generated rule over the repository policies, once they are all added.
    fn combine_repository(&mut self) {
        if self.policies.iter().any(|p| !p.builtin) {
            self.repository_rule = self.combine(REPOSITORY_RESULTS_PACKAGE, false);
        }
        if let Some(isolation) = sandbox::isolation() {
            self.isolate(isolation.clone());
        }
    }

    /// Evaluates the repository policies in worker processes bounded by `isolation`'s
    /// limits from now on.
    pub fn isolate(&mut self, isolation: sandbox::Isolation) {
        let policies: Vec<_> = self
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.builtin && !p.severities.is_empty())
            .map(|(index, p)| {
                (
                    index,
                    p.id.clone(),
                    p.file.clone(),
                    p.package.clone(),
                    p.severities.clone(),
                )
            })
            .collect();
        self.sandbox = (!policies.is_empty()).then(|| {
            Arc::new(sandbox::Sandbox::new(
                isolation,
                self.repository_sources.clone(),
                policies,
            ))
        });
    }

    /// True when repository policies run in bounded worker processes.
    pub fn is_isolated(&self) -> bool {
        self.sandbox.is_some()
    }

    /// The policies of the set, built-in ones first.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The policy with this id.
    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.id == id)
    }

    /// Parses `source` into the set. On failure returns the file and line named by the Rego
    /// parser and its message, and leaves the set unchanged.
    fn add(
        &mut self,
        source: &PolicySource,
        builtin: bool,
    ) -> Result<(), (Option<String>, usize, String)> {
        let mut engine = self.engine.clone();
        let package = engine
            .add_policy(source.file.clone(), source.text.clone())
            .map_err(|e| rego_error(&e))?;
        let reserved = RESERVED_PACKAGES
            .iter()
            .any(|r| package == *r || package.starts_with(&format!("{r}.")));
        if !builtin && reserved {
            return Err((
                Some(source.file.clone()),
                1,
                format!(
                    "package {} is reserved for bowline's built-in modules; choose another name",
                    package.strip_prefix("data.").unwrap_or(&package)
                ),
            ));
        }
        if let Some(name) = package.strip_prefix(POLICY_PACKAGE_PREFIX) {
            let plain = name
                .split('.')
                .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            if !plain {
                return Err((
                    Some(source.file.clone()),
                    1,
                    format!(
                        "policy package {name:?} must be dotted identifiers (letters, digits, _)"
                    ),
                ));
            }
            let severities: Vec<PolicySeverity> = [PolicySeverity::Deny, PolicySeverity::Warn]
                .into_iter()
                .filter(|s| {
                    engine
                        .has_declared_rule_rooted_at(&source.file, s.rule())
                        .unwrap_or(false)
                })
                .collect();
            match self.policies.iter_mut().find(|p| p.package == package) {
                Some(existing) if existing.builtin && !builtin => {
                    return Err((
                        Some(source.file.clone()),
                        1,
                        format!(
                            "package {} belongs to the built-in policy {:?}; choose another name",
                            package.strip_prefix("data.").unwrap_or(&package),
                            existing.id
                        ),
                    ));
                }
                Some(existing) => {
                    for s in severities {
                        if !existing.severities.contains(&s) {
                            existing.severities.push(s);
                        }
                    }
                    existing.severities.sort();
                }
                None => self.policies.push(Policy {
                    id: name.replace('_', "-"),
                    package: package.clone(),
                    file: source.file.clone(),
                    builtin,
                    severities,
                }),
            }
        }
        self.engine = engine;
        Ok(())
    }

    /// Adds a generated rule `data.<package>.results` returning the results of every
    /// built-in (or repository) policy at once: an object keyed
    /// `"<policy index>.<deny|warn>"`, null where a policy's rule is undefined. Returns the
    /// rule's path, or `None` (each rule is then evaluated on its own) should it not compile.
    fn combine(&mut self, package: &str, builtin: bool) -> Option<String> {
        let mut text = format!("package {package}\n");
        let mut entries = Vec::new();
        for (index, policy) in self.policies.iter().enumerate() {
            if policy.builtin != builtin {
                continue;
            }
            for severity in &policy.severities {
                let rule = severity.rule();
                let local = format!("policy_{index}_{rule}");
                text.push_str(&format!(
                    "\ndefault {local} := null\n\n{local} := {}.{rule}\n",
                    policy.package
                ));
                entries.push(format!("\"{index}.{rule}\": {local}"));
            }
        }
        text.push_str(&format!("\nresults := {{{}}}\n", entries.join(", ")));
        let mut engine = self.engine.clone();
        if engine.add_policy(format!("{package}.rego"), text).is_err() {
            tracing::warn!(
                package,
                "the combined policy rule does not parse; evaluating rule by rule"
            );
            return None;
        }
        let previous = std::mem::replace(&mut self.engine, engine);
        // Prepare once here, so clones handed to worker threads do not each analyze the
        // modules again. The modules compiled before, so this fails only on a defect.
        if self.prepare().is_err() {
            tracing::warn!(
                package,
                "the combined policy rule does not compile; evaluating rule by rule"
            );
            self.engine = previous;
            return None;
        }
        Some(format!("data.{package}.results"))
    }

    /// True when the built-in policies run as bytecode, false when they run in the
    /// interpreter. Repository policies always run in the interpreter.
    pub fn uses_bytecode(&self) -> bool {
        self.program.is_some()
    }

    /// The same policies evaluated by the tree-walking interpreter only; results are the same,
    /// only slower. For checking the bytecode against the interpreter.
    pub fn interpreted(&self) -> PolicySet {
        PolicySet {
            program: None,
            ..self.clone()
        }
    }

    /// Compiles the modules added so far (name resolution, unknown functions), so that errors
    /// surface when loading rather than on the first object.
    fn prepare(&mut self) -> Result<(), (Option<String>, usize, String)> {
        self.engine.set_input(regorus::Value::new_object());
        match self.engine.eval_query("true".to_string(), false) {
            Ok(_) => Ok(()),
            Err(e) => Err(rego_error(&e)),
        }
    }

    /// Evaluates every policy on every object of one target. Objects are evaluated in
    /// parallel; results come back sorted.
    #[tracing::instrument(level = "debug", skip_all, fields(app = %target.app.metadata.name, environment = %target.environment.name, objects = objects.len()))]
    pub fn evaluate(&self, target: &Target<'_>, objects: &[RenderedObject]) -> PolicyReport {
        let shared = input::Shared::new(target, objects);
        let (isolated, problems) = match &self.sandbox {
            Some(sandbox) => {
                let inputs: Vec<(String, regorus::Value)> = objects
                    .iter()
                    .map(|o| {
                        (
                            format!("{} in {}", describe(o), target.environment.name),
                            shared.input(o),
                        )
                    })
                    .collect();
                let (outcomes, problems) = sandbox.evaluate(&inputs);
                (Some(outcomes), problems)
            }
            None => (None, Vec::new()),
        };
        let mut report = objects
            .par_chunks(64)
            .enumerate()
            .map(|(chunk_index, chunk)| {
                let mut evaluator = Evaluator::new(self);
                let mut report = PolicyReport::default();
                for (i, object) in chunk.iter().enumerate() {
                    let outcomes = isolated
                        .as_ref()
                        .and_then(|o| o.get(chunk_index * 64 + i))
                        .map(Vec::as_slice);
                    report.extend(self.evaluate_object(
                        &mut evaluator,
                        &shared,
                        target,
                        object,
                        outcomes,
                    ));
                }
                report
            })
            .reduce(PolicyReport::default, |mut a, b| {
                a.extend(b);
                a
            });
        report.problems.extend(problems);
        report.sort();
        report
    }

    fn evaluate_object(
        &self,
        evaluator: &mut Evaluator<'_>,
        shared: &input::Shared,
        target: &Target<'_>,
        object: &RenderedObject,
        isolated: Option<&[sandbox::Outcome]>,
    ) -> PolicyReport {
        let app = target.app.metadata.name.as_str();
        let environment = target.environment.name.as_str();
        let described = describe(object);
        let mut report = PolicyReport::default();
        let input = shared.input(object);
        let exceptions = exceptions_of(object);
        let mut suppressed: BTreeMap<&str, usize> = BTreeMap::new();
        // One evaluation for all policies, as bytecode when it compiled; when that fails, the
        // interpreter evaluates each rule alone and says which failed, and where.
        let combined = evaluator.combined(&input);
        let mut fallback = match combined {
            Some(_) => None,
            None => {
                let engine = evaluator.engine();
                engine.set_input(input);
                Some(engine)
            }
        };
        for (index, policy) in self.policies.iter().enumerate() {
            // Repository policies evaluated by the worker: their values, or nothing when
            // they failed (the problem is reported by the sandbox).
            let from_worker = match (&self.sandbox, policy.builtin) {
                (Some(sandbox), false) => Some(
                    sandbox
                        .position(index)
                        .and_then(|p| isolated.and_then(|o| o.get(p))),
                ),
                _ => None,
            };
            for (k, severity) in policy.severities.iter().enumerate() {
                let value = match (&from_worker, &combined, fallback.as_deref_mut()) {
                    (Some(Some(sandbox::Outcome::Values(values))), _, _) => {
                        Ok(values.get(k).cloned().unwrap_or(regorus::Value::Undefined))
                    }
                    (Some(_), _, _) => continue,
                    (None, Some(parts), _) => {
                        let key = regorus::Value::from(format!("{index}.{}", severity.rule()));
                        Ok(parts
                            .iter()
                            .map(|part| &part[&key])
                            .find(|v| **v != regorus::Value::Undefined)
                            .cloned()
                            .unwrap_or(regorus::Value::Undefined))
                    }
                    (None, None, Some(engine)) => {
                        engine.eval_rule(format!("{}.{}", policy.package, severity.rule()))
                    }
                    // The fallback interpreter exists exactly when there is no combined value.
                    (None, None, None) => continue,
                };
                let value = match value {
                    Ok(v) => v,
                    Err(e) => {
                        // Reported where the policy failed, once however many objects hit it.
                        let (file, line, message) = rego_error(&e);
                        report.problems.push(match file {
                            Some(file) => Diagnostic::error(
                                file,
                                line,
                                1,
                                "",
                                format!("policy {:?} failed: {message}", policy.id),
                            ),
                            None => Diagnostic::error(
                                &object.source,
                                object.line,
                                1,
                                "",
                                format!(
                                    "{}: {described} in {environment}: the policy failed: {message}",
                                    policy.id
                                ),
                            ),
                        });
                        continue;
                    }
                };
                for (field, message) in findings(&value) {
                    let mut message = message;
                    match exceptions.get(policy.id.as_str()) {
                        Some(reason) if !reason.trim().is_empty() => {
                            *suppressed.entry(policy.id.as_str()).or_default() += 1;
                            continue;
                        }
                        Some(_) => message.push_str(&format!(
                            " (the annotation {EXCEPTION_ANNOTATION_PREFIX}{} gives no reason, so it does not apply)",
                            policy.id
                        )),
                        None => {}
                    }
                    report.results.push(PolicyResult {
                        policy: policy.id.clone(),
                        severity: *severity,
                        app: app.to_string(),
                        environment: environment.to_string(),
                        object: described.clone(),
                        file: object.source.clone(),
                        line: object.line,
                        field,
                        message,
                    });
                }
            }
        }
        for (id, reason) in &exceptions {
            if self.policy(id).is_none() {
                let known: Vec<&str> = self.policies.iter().map(|p| p.id.as_str()).collect();
                report.problems.push(
                    Diagnostic::error(
                        &object.source,
                        object.line,
                        1,
                        "",
                        format!(
                            "{described} in {environment}: annotation {EXCEPTION_ANNOTATION_PREFIX}{id} names no known policy{}",
                            did_you_mean(id, known.iter().copied())
                        ),
                    )
                    .into_warning(),
                );
                continue;
            }
            if reason.trim().is_empty() {
                continue;
            }
            report.exceptions.push(PolicyException {
                policy: (*id).to_string(),
                app: app.to_string(),
                environment: environment.to_string(),
                object: described.clone(),
                file: object.source.clone(),
                line: object.line,
                reason: reason.trim().to_string(),
                suppressed: suppressed.get(id).copied().unwrap_or(0),
            });
        }
        report
    }
}

/// Evaluates objects one after another on one thread: a virtual machine running the
/// bytecode, and an interpreter created only when needed.
struct Evaluator<'a> {
    set: &'a PolicySet,
    vm: Option<RegoVM>,
    engine: Option<regorus::Engine>,
}

impl<'a> Evaluator<'a> {
    fn new(set: &'a PolicySet) -> Evaluator<'a> {
        let vm = set.program.as_ref().map(|program| {
            let mut vm = RegoVM::new();
            vm.load_program(Arc::clone(program));
            vm.set_max_instructions(EVALUATION_INSTRUCTION_LIMIT);
            vm.set_execution_timer_config(Some(timer_config()));
            vm
        });
        Evaluator {
            set,
            vm,
            engine: None,
        }
    }

    /// The interpreter, cloned from the set on first use.
    fn engine(&mut self) -> &mut regorus::Engine {
        self.engine.get_or_insert_with(|| self.set.engine.clone())
    }

    /// Every policy's results on `input`: the built-in policies' object (from the bytecode,
    /// or the interpreter when the bytecode fails) and the repository policies' object, or
    /// `None` when an evaluation fails.
    fn combined(&mut self, input: &regorus::Value) -> Option<Vec<regorus::Value>> {
        let set = self.set;
        let builtin = set.builtin_rule.as_deref()?;
        let builtin = match self.bytecode(input) {
            Some(all) => all,
            None => self.interpret(builtin, input)?,
        };
        let mut parts = vec![builtin];
        if set.sandbox.is_some() {
            return Some(parts);
        }
        if let Some(rule) = set.repository_rule.as_deref() {
            parts.push(self.interpret(rule, input)?);
        }
        Some(parts)
    }

    /// The built-in rule's object from the bytecode, `None` without bytecode or when it fails.
    fn bytecode(&mut self, input: &regorus::Value) -> Option<regorus::Value> {
        let vm = self.vm.as_mut()?;
        vm.set_input(input.clone());
        match vm.execute() {
            Ok(all @ regorus::Value::Object(_)) => Some(all),
            Ok(other) => {
                tracing::debug!(result = ?other, "policy bytecode gave no object; evaluating in the interpreter");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "policy bytecode failed; evaluating in the interpreter");
                None
            }
        }
    }

    /// A generated rule's object from the interpreter, `None` when it fails.
    fn interpret(&mut self, rule: &str, input: &regorus::Value) -> Option<regorus::Value> {
        let engine = self.engine();
        engine.set_input(input.clone());
        match engine.eval_rule(rule.to_string()) {
            Ok(all @ regorus::Value::Object(_)) => Some(all),
            _ => None,
        }
    }
}

/// Compiles `rule` of `engine`'s modules to bytecode; the message says why not when the
/// compiler does not support them.
fn compile_bytecode(engine: &regorus::Engine, rule: &str) -> Result<Arc<Program>, String> {
    let mut engine = engine.clone();
    let policy = engine
        .compile_with_entrypoint(&rule.into())
        .map_err(|e| one_line(&format!("{e:#}")))?;
    Compiler::compile_from_policy(&policy, &[rule]).map_err(|e| one_line(&e.to_string()))
}

fn timer_config() -> regorus::utils::limits::ExecutionTimerConfig {
    regorus::utils::limits::ExecutionTimerConfig {
        limit: EVALUATION_TIME_LIMIT,
        check_interval: std::num::NonZeroU32::MIN.saturating_add(255),
    }
}

fn new_engine() -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_execution_timer_config(timer_config());
    engine
}

/// `Deployment shop/checkout-api`, or `ClusterRole reader` for cluster-scoped objects.
pub fn describe(object: &RenderedObject) -> String {
    match &object.namespace {
        Some(ns) => format!("{} {ns}/{}", object.kind, object.name),
        None => format!("{} {}", object.kind, object.name),
    }
}

/// The exception annotations of an object: policy id → reason.
fn exceptions_of(object: &RenderedObject) -> BTreeMap<&str, &str> {
    object
        .object
        .pointer("/metadata/annotations")
        .and_then(serde_json::Value::as_object)
        .map(|annotations| {
            annotations
                .iter()
                .filter_map(|(k, v)| {
                    let id = k.strip_prefix(EXCEPTION_ANNOTATION_PREFIX)?;
                    Some((id, v.as_str().unwrap_or("")))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The (field, message) pairs of a `deny` or `warn` value: a set or array of strings or of
/// `{"msg", "field"}` objects; a lone string or `true` also count as one result.
fn findings(value: &regorus::Value) -> Vec<(Option<String>, String)> {
    use regorus::Value as V;
    let one = |item: &V| -> (Option<String>, String) {
        match item {
            V::String(s) => (None, s.to_string()),
            V::Object(map) => {
                let get = |key: &str| map.get(&V::from(key));
                let text = |v: Option<&V>| match v {
                    Some(V::String(s)) => Some(s.to_string()),
                    Some(V::Undefined) | Some(V::Null) | None => None,
                    Some(other) => Some(render_value(other)),
                };
                let message = text(get("msg"))
                    .or_else(|| text(get("message")))
                    .unwrap_or_else(|| render_value(item));
                let field = text(get("field")).filter(|f| !f.is_empty());
                (field, message)
            }
            V::Bool(true) => (None, "denied".to_string()),
            other => (None, render_value(other)),
        }
    };
    let mut out: Vec<(Option<String>, String)> = match value {
        V::Set(items) => items.iter().map(one).collect(),
        V::Array(items) => items.iter().map(one).collect(),
        V::Undefined | V::Null | V::Bool(false) => Vec::new(),
        other => vec![one(other)],
    };
    out.sort();
    out.dedup();
    out
}

fn render_value(value: &regorus::Value) -> String {
    value
        .to_json_str()
        .map(|s| s.replace('\n', " "))
        .unwrap_or_else(|_| format!("{value:?}"))
}

/// The file, line and message of a regorus error. Its text reads
/// `\n--> file:line:col\n  |\n3 | source\n  |   ^\nerror: message` for errors with a position.
fn rego_error(e: &anyhow::Error) -> (Option<String>, usize, String) {
    let text = format!("{e:#}");
    let located = text.split_once("--> ").and_then(|(_, rest)| {
        let (location, after) = rest.split_once('\n').unwrap_or((rest, ""));
        let mut parts = location.rsplitn(3, ':');
        let _column = parts.next()?;
        let line: usize = parts.next()?.trim().parse().ok()?;
        let file = parts.next()?.to_string();
        // The message follows the source excerpt; it may span several lines.
        let lines: Vec<&str> = after.lines().collect();
        let start = lines
            .iter()
            .rposition(|l| l.trim_start().starts_with("error: "))
            .unwrap_or(lines.len().saturating_sub(1));
        let message = one_line(&lines[start.min(lines.len())..].join(" "));
        let message = message
            .strip_prefix("error: ")
            .unwrap_or(&message)
            .to_string();
        Some((Some(file), line, message))
    });
    located.unwrap_or_else(|| (None, 1, one_line(&text)))
}

/// Collapses runs of whitespace (newlines included) into single spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Evaluates `policies` on one render of `repo`: finds the app, environment and pipeline,
/// then calls [`PolicySet::evaluate`]. Unknown app or environment names give an empty report.
pub fn check_render(
    repo: &ConfigRepo,
    policies: &PolicySet,
    app: &str,
    environment: &str,
    objects: &[RenderedObject],
) -> PolicyReport {
    let (Some(app_doc), Some(environment)) = (repo.apps.get(app), repo.environment(environment))
    else {
        return PolicyReport::default();
    };
    let app = &app_doc.doc;
    let pipeline_name = repo.pipeline_of(app);
    // An app whose pipeline does not instantiate has errors reported elsewhere; its policies
    // see an empty pipeline rather than none, so no stage rule fires on top of them.
    let stages: Option<Vec<Stage>> = pipeline_name.map(|name| {
        repo.pipelines
            .get(name)
            .and_then(|t| instantiate(&t.doc, app).ok())
            .unwrap_or_default()
    });
    let target = Target {
        app,
        environment,
        pipeline_name,
        pipeline: stages.as_deref(),
    };
    let mut report = policies.evaluate(&target, objects);
    let settings = repo.repository.as_ref().map(|r| &r.doc.spec.policies);
    apply_settings(&mut report, settings, app_doc, &environment.name);
    report
}

/// Problems of `bowline.yaml`'s `spec.policies`: unknown policy ids and environments (errors),
/// excluded apps the repository does not have (warnings).
pub fn settings_problems(repo: &ConfigRepo, policies: &PolicySet) -> Vec<Diagnostic> {
    let Some(doc) = &repo.repository else {
        return Vec::new();
    };
    let ids: Vec<&str> = policies.policies().iter().map(|p| p.id.as_str()).collect();
    let environments = repo.environment_names();
    let mut out = Vec::new();
    for (id, setting) in &doc.doc.spec.policies {
        let pointer = crate::diagnostic::pointer_join("/spec/policies", id);
        if let Some(message) = unknown("policy", "policies", id, &ids) {
            out.push(doc.error(&pointer, message));
        }
        for env in setting.environments.keys() {
            if let Some(message) = unknown("environment", "environments", env, &environments) {
                out.push(doc.error(&format!("{pointer}/environments/{env}"), message));
            }
        }
        for (i, app) in setting.exclude_apps.iter().enumerate() {
            if !repo.apps.contains_key(app) && !repo.broken_apps.contains(app) {
                out.push(doc.warning(
                    &format!("{pointer}/excludeApps/{i}"),
                    format!("no application \"{app}\" in the repository"),
                ));
            }
        }
    }
    out
}

/// `unknown policy "x" (did you mean "y"?) (policies: …)` when `name` is not among `known`.
fn unknown(what: &str, plural: &str, name: &str, known: &[&str]) -> Option<String> {
    (!known.contains(&name)).then(|| {
        format!(
            "unknown {what} \"{name}\"{} ({plural}: {})",
            did_you_mean(name, known.iter().copied()),
            known.join(", ")
        )
    })
}

/// Problems of an app's `spec.policyExceptions`: unknown policy ids and environments.
pub fn exception_problems(
    repo: &ConfigRepo,
    app: &crate::config::Document<Application>,
    policies: &PolicySet,
) -> Vec<Diagnostic> {
    let ids: Vec<&str> = policies.policies().iter().map(|p| p.id.as_str()).collect();
    let environments = repo.environment_names();
    let mut out = Vec::new();
    for (i, exception) in app.doc.spec.policy_exceptions.iter().enumerate() {
        let pointer = format!("/spec/policyExceptions/{i}");
        if let Some(message) = unknown("policy", "policies", &exception.policy, &ids) {
            out.push(app.error(&format!("{pointer}/policy"), message));
        }
        for (j, env) in exception.environments.iter().enumerate() {
            if let Some(message) = unknown("environment", "environments", env, &environments) {
                out.push(app.error(&format!("{pointer}/environments/{j}"), message));
            }
        }
    }
    out
}

/// The repository's say over results: `bowline.yaml`'s severity per policy and environment
/// (`off` drops the results) and apps left out, then the app's own exceptions, each reported
/// with the results it suppressed (and its reason), like an exception annotated on an object.
fn apply_settings(
    report: &mut PolicyReport,
    settings: Option<&BTreeMap<String, crate::config::PolicySetting>>,
    app: &crate::config::Document<Application>,
    environment: &str,
) {
    let exceptions = &app.doc.spec.policy_exceptions;
    let mut suppressed = vec![0usize; exceptions.len()];
    report.results.retain_mut(|result| {
        if let Some(setting) = settings.and_then(|s| s.get(&result.policy)) {
            if setting.exclude_apps.contains(&app.doc.metadata.name) {
                return false;
            }
            match setting.level_in(environment) {
                Some(PolicyLevel::Off) => return false,
                Some(PolicyLevel::Deny) => result.severity = PolicySeverity::Deny,
                Some(PolicyLevel::Warn) => result.severity = PolicySeverity::Warn,
                None => {}
            }
        }
        match exceptions.iter().position(|e| {
            e.policy == result.policy
                && (e.environments.is_empty() || e.environments.iter().any(|n| n == environment))
        }) {
            Some(i) => {
                suppressed[i] += 1;
                false
            }
            None => true,
        }
    });
    for (i, (exception, count)) in exceptions.iter().zip(suppressed).enumerate() {
        if count > 0 {
            report.exceptions.push(PolicyException {
                policy: exception.policy.clone(),
                app: app.doc.metadata.name.clone(),
                environment: environment.to_string(),
                object: "every object of the app".to_string(),
                file: app.file.clone(),
                line: app.position(&format!("/spec/policyExceptions/{i}")).0,
                reason: exception.reason.clone(),
                suppressed: count,
            });
        }
    }
}

/// Renders the selected apps and environments (all when `None`) and evaluates the policies on
/// each successful render, keeping only a summary of each render next to its policy report.
#[tracing::instrument(level = "info", skip(repo, policies))]
pub fn render_and_check(
    repo: &ConfigRepo,
    policies: &PolicySet,
    app_filter: Option<&str>,
    env_filter: Option<&str>,
) -> Vec<(RenderSummary, PolicyReport)> {
    render::render_repo_with(repo, app_filter, env_filter, |r| {
        let report = match &r.result {
            Ok(objects) => check_render(repo, policies, &r.app, &r.environment, objects),
            Err(_) => PolicyReport::default(),
        };
        (RenderSummary::from(r), report)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytecode_runs_a_large_workload_without_falling_back() {
        let set = PolicySet::builtin().expect("built-in policies compile");
        let containers: Vec<serde_json::Value> = (0..200)
            .map(|i| serde_json::json!({"name": format!("c{i}"), "image": "nginx:latest"}))
            .collect();
        let app: Application = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop"},
            "spec": {"image": {"repository": "nginx", "tag": "1"}, "environments": {"production": null}},
        }))
        .expect("application");
        let environment: Environment = serde_json::from_value(serde_json::json!({
            "name": "production", "namespace": "shop", "clusters": [{"name": "eu", "context": "eu"}],
        }))
        .expect("environment");
        let target = Target {
            app: &app,
            environment: &environment,
            pipeline_name: None,
            pipeline: None,
        };
        let object = RenderedObject {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "big".into(),
            source: "apps/shop/manifests/big.yaml".into(),
            line: 1,
            object: serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "big", "namespace": "shop"},
                "spec": {"replicas": 1, "template": {"spec": {"containers": containers}}},
            }),
        };
        let shared = input::Shared::new(&target, std::slice::from_ref(&object));
        let mut evaluator = Evaluator::new(&set);
        let vm = evaluator.vm.as_mut().expect("bytecode");
        vm.set_input(shared.input(&object));
        let all = vm.execute().expect("the bytecode runs within its limits");
        let report = set.evaluate(&target, std::slice::from_ref(&object));
        // Per container: image-tag, resources, and the two probes; plus replicas and the
        // missing pipeline.
        assert_eq!(report.results.len(), 200 * 4 + 2, "{all:?}");
    }

    #[test]
    fn rego_errors_give_file_line_and_message() {
        let mut engine = regorus::Engine::new();
        let err = engine
            .add_policy(
                "policies/broken.rego".to_string(),
                "package bowline.policies.broken\n\ndeny contains msg if {\n  msg := \n}\n"
                    .to_string(),
            )
            .expect_err("syntax error");
        let (file, line, message) = rego_error(&err);
        assert_eq!(file.as_deref(), Some("policies/broken.rego"));
        assert_eq!(line, 4);
        assert!(!message.is_empty());
    }

    #[test]
    fn findings_accept_strings_and_objects() {
        let value = regorus::Value::from(serde_json::json!([
            "plain",
            {"msg": "with field", "field": "spec.replicas"},
        ]));
        assert_eq!(
            findings(&value),
            vec![
                (None, "plain".to_string()),
                (Some("spec.replicas".to_string()), "with field".to_string()),
            ]
        );
        assert!(findings(&regorus::Value::Undefined).is_empty());
    }
}
