//! Repository policies evaluated in a child process bounded in memory and time.
//!
//! A repository's Rego is untrusted, and regorus's own limits are cooperative: a builtin
//! such as `numbers.range` allocates and runs to its end before any check. Once the program
//! is set up with [`isolate`], each [`PolicySet`](super::PolicySet) holding repository
//! policies hands them to a worker process (`<program> policy-worker`). The worker caps its
//! own address space (`RLIMIT_AS`, its size at start plus the memory limit) and is killed
//! when one evaluation of one policy on one object outlasts the time limit. A policy that
//! exceeds a limit is reported as an error naming its file and is not applied for the rest of
//! the check: it never passes silently. The other policies go on, in a fresh worker.
//!
//! The protocol is one JSON document a line: the parent sends the modules, the worker
//! answers a line per module loaded and `ready`; then per object the parent sends the input
//! and the policies to evaluate, and the worker answers a line per policy.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;

use super::{PolicySeverity, PolicySource};

/// The hidden subcommand running a worker.
pub const WORKER_COMMAND: &str = "policy-worker";
/// Default memory a worker may use beyond its size at start.
pub const DEFAULT_MEMORY_LIMIT: u64 = 256 * 1024 * 1024;
/// Default longest evaluation of one policy on one object.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(5);
/// Least time given to a worker to start and load each module.
const LOAD_TIME: Duration = Duration::from_secs(10);
/// Longest line read from a worker: a policy's results on one object.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// How much of the start and of the end of a worker's standard error is kept, for the
/// message when it dies.
const STDERR_TAIL: usize = 4096;

/// Bounds on the evaluation of repository policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes a worker may allocate beyond its size at start.
    pub memory_bytes: u64,
    /// Longest evaluation of one policy on one object.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: DEFAULT_MEMORY_LIMIT,
            time: DEFAULT_TIME_LIMIT,
        }
    }
}

/// Where the worker program is and the limits it runs under.
#[derive(Debug, Clone)]
pub struct Isolation {
    /// The bowline executable, run as `<program> policy-worker`.
    pub program: PathBuf,
    /// The limits.
    pub limits: Limits,
}

static ISOLATION: OnceLock<Isolation> = OnceLock::new();

/// Makes the policy sets loaded from now on evaluate repository policies in worker processes
/// of `program`. Set once, by the `bowline` executable at start; without it (a library
/// user, the unit tests) repository policies run in this process under regorus's timer only.
/// Returns false when isolation was already set up.
pub fn isolate(program: PathBuf, limits: Limits) -> bool {
    ISOLATION.set(Isolation { program, limits }).is_ok()
}

/// The isolation set up by [`isolate`], if any.
pub fn isolation() -> Option<&'static Isolation> {
    ISOLATION.get()
}

/// `256 MiB`, or a byte count when not a whole number of MiB.
pub fn describe_bytes(bytes: u64) -> String {
    if bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{bytes} bytes")
    }
}

/// The modules and rules sent to a worker when it starts.
#[derive(Serialize, Deserialize)]
struct Init {
    /// The repository's modules (the built-in ones are in the worker already).
    modules: Vec<Module>,
    /// Per policy, the rule paths to evaluate (`data.bowline.policies.x.deny`, ...).
    rules: Vec<Vec<String>>,
    /// regorus's own timer, per evaluation, in milliseconds.
    time_limit_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Module {
    file: String,
    text: String,
}

/// One line of a worker's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Reply {
    /// Module `module` of the init is loaded.
    Loaded { module: usize },
    /// Every module is loaded and compiled.
    Ready,
    /// A module does not load.
    LoadError {
        file: Option<String>,
        line: usize,
        message: String,
    },
    /// One policy's values on one object, per rule.
    Values { values: Vec<serde_json::Value> },
    /// One policy failed on one object.
    Failed {
        file: Option<String>,
        line: usize,
        message: String,
    },
    /// regorus's timer stopped one policy on one object.
    TimeLimit,
}

/// An evaluation request: the input and the indices of the policies to evaluate.
#[derive(Serialize, Deserialize)]
struct Request {
    policies: Vec<usize>,
    input: serde_json::Value,
}

/// Why a worker stopped answering.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Breach {
    Time,
    /// Loading the modules outlasted its (longer) limit.
    LoadTime,
    Memory,
    /// It died otherwise (or spoke nonsense); the text says how.
    Crashed(String),
}

impl Breach {
    fn describe(&self, limits: &Limits) -> String {
        match self {
            Breach::Time => format!(
                "exceeded the time limit of {}",
                humantime::format_duration(limits.time)
            ),
            Breach::LoadTime => format!(
                "took longer than {}",
                humantime::format_duration(limits.time.max(LOAD_TIME))
            ),
            Breach::Memory => format!(
                "exceeded the memory limit of {}",
                describe_bytes(limits.memory_bytes)
            ),
            Breach::Crashed(how) => format!("stopped the policy evaluator ({how})"),
        }
    }
}

/// A repository policy as the worker knows it.
#[derive(Debug, Clone)]
pub(super) struct SandboxPolicy {
    /// Its index among the set's policies.
    pub index: usize,
    /// Policy id.
    pub id: String,
    /// The file defining it.
    pub file: String,
    /// `data.<package>.<deny|warn>` per severity, in the order of the values returned.
    rules: Vec<String>,
}

/// What a policy gave on one object.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// The value of each of its rules, in the order of its severities.
    Values(Vec<regorus::Value>),
    /// It failed or is not applied; the reason is among the problems.
    Failed,
}

/// The repository policies of one policy set and the worker evaluating them.
pub(super) struct Sandbox {
    isolation: Isolation,
    modules: Vec<PolicySource>,
    policies: Vec<SandboxPolicy>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    worker: Option<Worker>,
    /// Policies (by position) not applied any more, with the error saying why.
    disabled: BTreeMap<usize, Diagnostic>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("isolation", &self.isolation)
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// A sandbox for the repository `modules` and `policies`, the worker started on first use.
    pub(super) fn new(
        isolation: Isolation,
        modules: Vec<PolicySource>,
        policies: Vec<(usize, String, String, String, Vec<PolicySeverity>)>,
    ) -> Sandbox {
        let policies = policies
            .into_iter()
            .map(|(index, id, file, package, severities)| SandboxPolicy {
                rules: severities
                    .iter()
                    .map(|s| format!("{package}.{}", s.rule()))
                    .collect(),
                index,
                id,
                file,
            })
            .collect();
        Sandbox {
            isolation,
            modules,
            policies,
            state: Mutex::new(State::default()),
        }
    }

    /// The position of the set's policy `index` among the sandbox's policies.
    pub(super) fn position(&self, index: usize) -> Option<usize> {
        self.policies.iter().position(|p| p.index == index)
    }

    /// Evaluates every policy on each input (`described` names the object in messages):
    /// per input, an outcome per policy, and the problems met.
    #[tracing::instrument(level = "debug", skip_all, fields(objects = inputs.len(), policies = self.policies.len()))]
    pub(super) fn evaluate(
        &self,
        inputs: &[(String, regorus::Value)],
    ) -> (Vec<Vec<Outcome>>, Vec<Diagnostic>) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut problems = Vec::new();
        let mut outcomes = Vec::with_capacity(inputs.len());
        for (described, input) in inputs {
            let mut row = vec![Outcome::Failed; self.policies.len()];
            let mut remaining: Vec<usize> = (0..self.policies.len())
                .filter(|p| !state.disabled.contains_key(p))
                .collect();
            let input = plain_json(input);
            while !remaining.is_empty() {
                let mut worker = match state.worker.take() {
                    Some(worker) => worker,
                    None => match self.start() {
                        Ok(worker) => worker,
                        Err((module, breach)) => {
                            self.disable_all(&mut state, module, &breach);
                            remaining.clear();
                            break;
                        }
                    },
                };
                let (answers, breach) = self.request(&mut worker, &input, &remaining);
                let answered = answers.len();
                for (p, answer) in remaining.iter().copied().zip(answers) {
                    match answer {
                        Answer::Values(values) => row[p] = Outcome::Values(values),
                        Answer::Failed(d) => problems.push(d),
                        Answer::TimeLimit => {
                            let d = self.breach_diagnostic(p, &Breach::Time, described);
                            state.disabled.insert(p, d);
                        }
                    }
                }
                match breach {
                    None => state.worker = Some(worker),
                    Some(breach) => {
                        // The worker is gone (killed or dead); the policy it was evaluating
                        // is not applied any more, the others go on in a fresh one.
                        drop(worker);
                        if let Some(&p) = remaining.get(answered) {
                            let d = self.breach_diagnostic(p, &breach, described);
                            state.disabled.insert(p, d);
                        }
                    }
                }
                remaining = remaining
                    .iter()
                    .copied()
                    .skip(answered + 1)
                    .filter(|p| !state.disabled.contains_key(p))
                    .collect();
            }
            outcomes.push(row);
        }
        problems.extend(state.disabled.values().cloned());
        (outcomes, problems)
    }

    /// The error for a policy stopped by a limit. It does not name the object, so that it
    /// reads the same whichever object was evaluated first; the log does.
    fn breach_diagnostic(&self, p: usize, breach: &Breach, described: &str) -> Diagnostic {
        let policy = &self.policies[p];
        let reason = breach.describe(&self.isolation.limits);
        tracing::warn!(policy = %policy.id, file = %policy.file, object = %described, %reason, "repository policy stopped");
        Diagnostic::file_error(
            &policy.file,
            format!(
                "policy {:?}: evaluation {reason}; the policy is not applied",
                policy.id
            ),
        )
    }

    /// Loading the modules failed in `module` (by index, when known): no repository policy
    /// is applied.
    fn disable_all(&self, state: &mut State, module: Option<usize>, breach: &Breach) {
        let file = module
            .and_then(|m| self.modules.get(m))
            .map(|m| m.file.clone());
        for (p, policy) in self.policies.iter().enumerate() {
            let d = Diagnostic::file_error(
                file.as_deref().unwrap_or(&policy.file),
                format!(
                    "loading the repository policies {}; policy {:?} is not applied",
                    breach.describe(&self.isolation.limits),
                    policy.id
                ),
            );
            state.disabled.entry(p).or_insert(d);
        }
    }

    /// Starts a worker and loads the modules; on failure, the module being loaded (if any)
    /// and why.
    fn start(&self) -> Result<Worker, (Option<usize>, Breach)> {
        let limits = self.isolation.limits;
        // Starting the process and compiling the built-in modules take their time on a busy
        // machine: loading gets at least LOAD_TIME, so a tight evaluation limit does not
        // fail it.
        let load_time = limits.time.max(LOAD_TIME);
        let mut worker = Worker::spawn(&self.isolation).map_err(|e| (None, e))?;
        let init = Init {
            modules: self
                .modules
                .iter()
                .map(|m| Module {
                    file: m.file.clone(),
                    text: m.text.clone(),
                })
                .collect(),
            rules: self.policies.iter().map(|p| p.rules.clone()).collect(),
            time_limit_ms: u64::try_from(limits.time.as_millis()).unwrap_or(u64::MAX),
        };
        let mut loading = 0;
        if let Err(e) = worker.send(&init) {
            return Err((Some(loading), worker.breach(e)));
        }
        loop {
            match worker.reply(load_time) {
                Ok(Reply::Loaded { module }) => loading = module + 1,
                Ok(Reply::Ready) => return Ok(worker),
                Ok(Reply::LoadError { message, .. }) => {
                    return Err((Some(loading), Breach::Crashed(message)));
                }
                Ok(other) => {
                    return Err((
                        Some(loading),
                        Breach::Crashed(format!("unexpected answer {other:?}")),
                    ));
                }
                Err(Breach::Time) => return Err((Some(loading), Breach::LoadTime)),
                Err(breach) => return Err((Some(loading), breach)),
            }
        }
    }

    /// Sends one input and reads an answer per policy; stops at the first breach, after
    /// which the worker is unusable.
    fn request(
        &self,
        worker: &mut Worker,
        input: &serde_json::Value,
        policies: &[usize],
    ) -> (Vec<Answer>, Option<Breach>) {
        let request = Request {
            policies: policies.to_vec(),
            input: input.clone(),
        };
        if let Err(e) = worker.send(&request) {
            return (Vec::new(), Some(worker.breach(e)));
        }
        let mut answers = Vec::with_capacity(policies.len());
        for &p in policies {
            let policy = &self.policies[p];
            match worker.reply(self.isolation.limits.time) {
                Ok(Reply::Values { values }) if values.len() == policy.rules.len() => {
                    answers.push(Answer::Values(
                        values.into_iter().map(regorus::Value::from).collect(),
                    ));
                }
                Ok(Reply::Failed {
                    file,
                    line,
                    message,
                }) => {
                    let (file, line) = match file {
                        Some(file) if !file.starts_with(super::builtin::BUILTIN_PREFIX) => {
                            (file, line)
                        }
                        _ => (policy.file.clone(), 1),
                    };
                    answers.push(Answer::Failed(Diagnostic::error(
                        file,
                        line,
                        1,
                        "",
                        format!("policy {:?} failed: {message}", policy.id),
                    )));
                }
                Ok(Reply::TimeLimit) => answers.push(Answer::TimeLimit),
                Ok(other) => {
                    return (
                        answers,
                        Some(Breach::Crashed(format!("unexpected answer {other:?}"))),
                    );
                }
                Err(breach) => return (answers, Some(breach)),
            }
        }
        (answers, None)
    }
}

/// A worker's answer about one policy on one object.
enum Answer {
    Values(Vec<regorus::Value>),
    Failed(Diagnostic),
    TimeLimit,
}

/// A running worker process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Result<Vec<u8>, String>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    fn spawn(isolation: &Isolation) -> Result<Worker, Breach> {
        let mut child = Command::new(&isolation.program)
            .arg(WORKER_COMMAND)
            .arg("--memory-limit")
            .arg(isolation.limits.memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // The allocation failure message comes first, a backtrace would bury it.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .spawn()
            .map_err(|e| {
                Breach::Crashed(format!("cannot start {}: {e}", isolation.program.display()))
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Breach::Crashed("no pipes to the worker".to_string()));
        };
        let (sender, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("policy-worker-out".to_string())
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                loop {
                    match read_line_capped(&mut reader, MAX_REPLY_BYTES) {
                        Ok(Some(line)) => {
                            if sender.send(Ok(line)).is_err() {
                                return;
                            }
                        }
                        Ok(None) => return,
                        Err(e) => {
                            let _ = sender.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Breach::Crashed(format!("cannot start a reader thread: {e}")))?;
        let tail = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&tail);
        std::thread::Builder::new()
            .name("policy-worker-err".to_string())
            .spawn(move || {
                let mut stderr = stderr;
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buffer) {
                    if n == 0 {
                        return;
                    }
                    let mut kept = sink
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    kept.extend_from_slice(&buffer[..n]);
                    // Keeps the first and the last STDERR_TAIL bytes.
                    if kept.len() > 3 * STDERR_TAIL {
                        let end = kept.len() - STDERR_TAIL;
                        kept.drain(STDERR_TAIL..end);
                    }
                }
            })
            .map_err(|e| Breach::Crashed(format!("cannot start a reader thread: {e}")))?;
        Ok(Worker {
            child,
            stdin,
            lines,
            stderr: tail,
        })
    }

    fn send<T: Serialize>(&mut self, message: &T) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.stdin.write_all(&line)?;
        self.stdin.flush()
    }

    /// The next line, within `time`.
    fn reply(&mut self, time: Duration) -> Result<Reply, Breach> {
        match self.lines.recv_timeout(time) {
            Ok(Ok(line)) => serde_json::from_slice(&line)
                .map_err(|e| Breach::Crashed(format!("unreadable answer: {e}"))),
            Ok(Err(e)) => Err(Breach::Crashed(e)),
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                Err(Breach::Time)
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.death()),
        }
    }

    /// Why a write to the worker failed: it died.
    fn breach(&mut self, error: std::io::Error) -> Breach {
        match self.death() {
            Breach::Crashed(how) => Breach::Crashed(format!("{how}; {error}")),
            other => other,
        }
    }

    /// Waits for the worker that closed its output and says how it ended.
    fn death(&mut self) -> Breach {
        let status = self.child.wait();
        // The reader thread may still be draining standard error.
        std::thread::sleep(Duration::from_millis(20));
        let tail = self
            .stderr
            .lock()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .unwrap_or_default();
        let out_of_memory = ["memory allocation of", "out of memory", "Cannot allocate"]
            .iter()
            .any(|sign| tail.contains(sign));
        if out_of_memory {
            return Breach::Memory;
        }
        let last = tail
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let status = match status {
            Ok(status) => status.to_string(),
            Err(e) => e.to_string(),
        };
        Breach::Crashed(if last.is_empty() {
            status
        } else {
            format!("{status}: {}", one_line(last, 300))
        })
    }
}

fn one_line(text: &str, max: usize) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Reads one line (without its `\n`) of at most `cap` bytes; `None` at the end.
fn read_line_capped(reader: &mut impl BufRead, cap: usize) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    loop {
        let buffer = reader.fill_buf().map_err(|e| e.to_string())?;
        if buffer.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buffer[..i]);
                reader.consume(i + 1);
                return Ok(Some(line));
            }
            None => {
                let n = buffer.len();
                line.extend_from_slice(buffer);
                reader.consume(n);
            }
        }
        if line.len() > cap {
            return Err(format!(
                "a policy's results exceed {}",
                describe_bytes(cap as u64)
            ));
        }
    }
}

/// A regorus value as JSON: sets become arrays, undefined becomes null.
fn plain_json(value: &regorus::Value) -> serde_json::Value {
    match value {
        regorus::Value::Undefined => serde_json::Value::Null,
        other => other
            .to_json_str()
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(serde_json::Value::Null),
    }
}

/// The worker: caps its address space at its size now plus `memory_limit` bytes, loads the
/// modules, then evaluates requests until its input ends. Returns the process exit code.
pub fn worker_main(memory_limit: u64) -> u8 {
    if let Err(e) = limit_address_space(memory_limit) {
        tracing::error!(error = %e, "cannot limit the policy worker's memory");
        return 2;
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut output = stdout.lock();
    match serve(&mut input, &mut output) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "policy worker stopped");
            2
        }
    }
}

/// The worker's loop over any reader and writer.
fn serve(input: &mut impl BufRead, output: &mut impl Write) -> std::io::Result<()> {
    let mut write = |reply: &Reply| -> std::io::Result<()> {
        let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
        line.push(b'\n');
        output.write_all(&line)?;
        output.flush()
    };
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(());
    }
    let init: Init = serde_json::from_str(&line).map_err(std::io::Error::other)?;
    let mut engine = regorus::Engine::new();
    engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
        limit: Duration::from_millis(init.time_limit_ms),
        check_interval: std::num::NonZeroU32::MIN.saturating_add(255),
    });
    for source in super::builtin::sources() {
        if let Err(e) = engine.add_policy(source.file, source.text) {
            let (file, line, message) = super::rego_error(&e);
            return write(&Reply::LoadError {
                file,
                line,
                message,
            });
        }
    }
    for (module, source) in init.modules.into_iter().enumerate() {
        if let Err(e) = engine.add_policy(source.file, source.text) {
            let (file, line, message) = super::rego_error(&e);
            return write(&Reply::LoadError {
                file,
                line,
                message,
            });
        }
        write(&Reply::Loaded { module })?;
    }
    engine.set_input(regorus::Value::new_object());
    if let Err(e) = engine.eval_query("true".to_string(), false) {
        let (file, line, message) = super::rego_error(&e);
        return write(&Reply::LoadError {
            file,
            line,
            message,
        });
    }
    write(&Reply::Ready)?;
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let request: Request = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        engine.set_input(regorus::Value::from(request.input));
        for p in request.policies {
            let Some(rules) = init.rules.get(p) else {
                write(&Reply::Failed {
                    file: None,
                    line: 1,
                    message: format!("no policy {p}"),
                })?;
                continue;
            };
            let mut values = Vec::with_capacity(rules.len());
            let mut failure = None;
            for rule in rules {
                match engine.eval_rule(rule.clone()) {
                    Ok(value) => values.push(plain_json(&value)),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let reply = match failure {
                None => Reply::Values { values },
                Some(e) => match e.downcast_ref::<regorus::LimitError>() {
                    Some(regorus::LimitError::TimeLimitExceeded { .. }) => Reply::TimeLimit,
                    _ => {
                        let (file, line, message) = super::rego_error(&e);
                        Reply::Failed {
                            file,
                            line,
                            message,
                        }
                    }
                },
            };
            write(&reply)?;
        }
    }
}

/// Caps the address space at its current size plus `extra` bytes, so that the limit counts
/// what evaluation allocates, not the program's own mappings.
#[cfg(target_os = "linux")]
fn limit_address_space(extra: u64) -> std::io::Result<()> {
    let current = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    let limit = current.saturating_add(extra);
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads the struct passed by reference and changes only this process.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere only the time limit holds.
#[cfg(not(target_os = "linux"))]
fn limit_address_space(_extra: u64) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(modules: Vec<(&str, &str)>, rules: Vec<Vec<&str>>) -> String {
        let init = Init {
            modules: modules
                .into_iter()
                .map(|(file, text)| Module {
                    file: file.to_string(),
                    text: text.to_string(),
                })
                .collect(),
            rules: rules
                .into_iter()
                .map(|r| r.into_iter().map(str::to_string).collect())
                .collect(),
            time_limit_ms: 5_000,
        };
        serde_json::to_string(&init).expect("json")
    }

    fn run(lines: &[String]) -> Vec<Reply> {
        let text = lines.join("\n") + "\n";
        let mut output = Vec::new();
        serve(&mut text.as_bytes(), &mut output).expect("serve");
        output
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("reply"))
            .collect()
    }

    #[test]
    fn the_worker_loads_modules_and_answers_a_line_per_policy() {
        let replies = run(&[
            init(
                vec![(
                    "policies/a.rego",
                    "package bowline.policies.a\ndeny contains \"no\" if input.object.bad\n",
                )],
                vec![vec!["data.bowline.policies.a.deny"]],
            ),
            r#"{"policies":[0],"input":{"object":{"bad":true}}}"#.to_string(),
            r#"{"policies":[0],"input":{"object":{}}}"#.to_string(),
        ]);
        assert!(
            matches!(replies[0], Reply::Loaded { module: 0 }),
            "{replies:?}"
        );
        assert!(matches!(replies[1], Reply::Ready), "{replies:?}");
        match &replies[2] {
            Reply::Values { values } => assert_eq!(values[0], serde_json::json!(["no"])),
            other => panic!("{other:?}"),
        }
        match &replies[3] {
            Reply::Values { values } => assert_eq!(values[0], serde_json::json!([])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failing_policy_is_reported_with_its_file() {
        let replies = run(&[
            init(
                vec![(
                    "policies/b.rego",
                    "package bowline.policies.b\ndeny contains x if {\n  x := 1 / 0\n}\n",
                )],
                vec![vec!["data.bowline.policies.b.deny"]],
            ),
            r#"{"policies":[0],"input":{}}"#.to_string(),
        ]);
        assert!(
            matches!(&replies[2], Reply::Failed { .. } | Reply::Values { .. }),
            "{replies:?}"
        );
    }

    #[test]
    fn lines_are_read_within_a_cap() {
        let text = format!("{}\nshort\n", "x".repeat(100));
        let mut reader = BufReader::with_capacity(8, text.as_bytes());
        assert!(read_line_capped(&mut reader, 50).is_err());
        let mut reader = BufReader::with_capacity(8, "a\nbc".as_bytes());
        assert_eq!(read_line_capped(&mut reader, 50), Ok(Some(b"a".to_vec())));
        assert_eq!(read_line_capped(&mut reader, 50), Ok(Some(b"bc".to_vec())));
        assert_eq!(read_line_capped(&mut reader, 50), Ok(None));
    }

    #[test]
    fn sizes_are_described_in_mib() {
        assert_eq!(describe_bytes(256 * 1024 * 1024), "256 MiB");
        assert_eq!(describe_bytes(1000), "1000 bytes");
    }
}
