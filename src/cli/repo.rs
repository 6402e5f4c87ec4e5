//! `validate`, `render` and `plan`: the commands that read a config repository.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bowline::check;
use bowline::config::ConfigRepo;
use bowline::diagnostic::{self, Diagnostic};
use bowline::policy::PolicyReport;
use bowline::render::{self, RenderSummary};
use bowline::source::{Limits, Snapshot};

use super::{OutputFormat, UsageError, exit_for};

/// Where the config repository is and how much of it may be read.
#[derive(clap::Args)]
pub struct RepoArgs {
    /// Path of the config repository (the directory holding bowline.yaml).
    pub repo: PathBuf,
    /// Largest file read from the repository, in bytes.
    #[arg(long, default_value_t = Limits::default().max_file_bytes)]
    pub max_file_size: u64,
}

/// Everything `validate`, `render` and `plan` share: the loaded repository, its diagnostics
/// (including render errors and policy results) and a summary of each render.
pub struct Loaded {
    pub repo: ConfigRepo,
    pub diagnostics: Vec<Diagnostic>,
    pub rendered: Vec<RenderSummary>,
    /// Policy results and exceptions (the results are also in `diagnostics`).
    pub policy: PolicyReport,
    /// Which app declares which object, across the whole repository.
    pub declarations: RepoDeclarations,
}

/// Which app of the repository declares which object, computed at first use when the command
/// selected one app (only a question of ownership needs the other apps' renders).
#[derive(Debug)]
pub struct RepoDeclarations {
    snapshot: Snapshot,
    all: std::sync::OnceLock<Option<check::Declarations>>,
}

impl RepoDeclarations {
    fn get(&self) -> Option<&check::Declarations> {
        self.all
            .get_or_init(|| {
                check::check_snapshot(&self.snapshot, None, None)
                    .ok()
                    .map(|c| c.declarations)
            })
            .as_ref()
    }
}

impl bowline::cluster::prune::Declarations for RepoDeclarations {
    fn declares(&self, app: &str, context: &str, key: &bowline::object::ObjectKey) -> Option<bool> {
        self.get()?.declares(app, context, key)
    }

    fn others_declaring(
        &self,
        app: &str,
        context: &str,
        key: &bowline::object::ObjectKey,
    ) -> Vec<String> {
        self.get()
            .map(|d| d.others_declaring(app, context, key))
            .unwrap_or_default()
    }
}

pub fn load(args: &RepoArgs, app: Option<&str>, env: Option<&str>) -> anyhow::Result<Loaded> {
    let limits = Limits {
        max_file_bytes: args.max_file_size,
        ..Limits::default()
    };
    let (snapshot, mut diagnostics) = Snapshot::from_dir(&args.repo, &limits)?;
    let checked = check::check_snapshot(&snapshot, app, env)?;
    diagnostics.extend(checked.diagnostics);
    diagnostic::sort_and_dedup(&mut diagnostics);
    let all = std::sync::OnceLock::new();
    if app.is_none() {
        let _ = all.set(Some(checked.declarations));
    }
    Ok(Loaded {
        repo: checked.repo,
        diagnostics,
        rendered: checked.rendered,
        policy: checked.policy,
        declarations: RepoDeclarations { snapshot, all },
    })
}

/// `bowline validate`.
pub fn validate(repo: RepoArgs, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    let loaded = load(&repo, None, None)?;
    let errors = diagnostic::error_count(&loaded.diagnostics);
    let warnings = loaded.diagnostics.len() - errors;
    match format {
        OutputFormat::Json => {
            let report = serde_json::json!({
                "valid": errors == 0,
                "errors": errors,
                "warnings": warnings,
                "diagnostics": loaded.diagnostics,
                "policy": loaded.policy,
            });
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            writeln!(stdout)?;
        }
        OutputFormat::Text => {
            for d in &loaded.diagnostics {
                writeln!(stdout, "{d}")?;
            }
            for e in &loaded.policy.exceptions {
                writeln!(stdout, "{e}")?;
            }
            writeln!(stdout, "{}", summary(&repo.repo, &loaded, errors, warnings))?;
        }
    }
    Ok(exit_for(errors))
}

/// `bowline render`.
pub fn render(
    repo: RepoArgs,
    app: Option<String>,
    env: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    let loaded = load(&repo, app.as_deref(), env.as_deref())?;
    check_selection(&loaded.repo, app.as_deref(), env.as_deref())?;
    let errors = diagnostic::error_count(&loaded.diagnostics);
    let mut stderr = std::io::stderr().lock();
    for d in &loaded.diagnostics {
        writeln!(stderr, "{d}")?;
    }
    if errors > 0 {
        writeln!(
            stderr,
            "render failed: {} in the config repository",
            diagnostic::count(errors, "error")
        )?;
        return Ok(exit_for(errors));
    }
    // Validated: render again keeping only the text, so objects do not pile up.
    let streams = render::render_repo_with(&loaded.repo, app.as_deref(), env.as_deref(), |r| {
        r.result.map(|objects| render::to_yaml_stream(&objects))
    });
    for text in streams.iter().flatten() {
        stdout.write_all(text.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn check_selection(
    repo: &ConfigRepo,
    app: Option<&str>,
    env: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(app) = app
        && !repo.apps.contains_key(app)
    {
        return Err(UsageError(format!(
            "unknown application \"{app}\" (known: {})",
            repo.apps.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    if let Some(env) = env {
        let known = repo.environment_names();
        if !known.contains(&env) {
            return Err(UsageError(format!(
                "unknown environment \"{env}\" (known: {})",
                known.join(", ")
            ))
            .into());
        }
    }
    Ok(())
}

fn summary(path: &Path, loaded: &Loaded, errors: usize, warnings: usize) -> String {
    let repo = &loaded.repo;
    let renders = loaded.rendered.len();
    let objects: usize = loaded
        .rendered
        .iter()
        .filter_map(|r| r.result.as_ref().ok())
        .sum();
    let verdict = if errors == 0 { "valid" } else { "invalid" };
    format!(
        "{}: {verdict}: {}, {} ({}, {}, {}; {}, {})",
        path.display(),
        diagnostic::count(errors, "error"),
        diagnostic::count(warnings, "warning"),
        diagnostic::count(repo.apps.len(), "app"),
        diagnostic::count(repo.pipelines.len(), "pipeline template"),
        diagnostic::count(repo.canaries.len(), "canary config"),
        diagnostic::count(renders, "app/environment render"),
        diagnostic::count(objects, "object"),
    )
}
