//! `bowline canary …`: judge a request file, import a Kayenta config, run a live analysis.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use bowline::canary::analysis::{self, Plan, Request, Status};
use bowline::canary::report::{self, markdown, svg};
use bowline::canary::retrieval::{PrometheusSource, Scope};
use bowline::canary::{input, judge, kayenta};
use bowline::config::model::CanaryConfig;

/// Canary subcommands.
#[derive(Subcommand)]
pub enum CanaryCommand {
    /// Judge metric data offline: FILE is JSON {config, thresholds?, data}; prints the result
    /// JSON and exits 0 whatever the verdict (2 on a configuration error).
    Judge {
        /// The request file.
        file: PathBuf,
        /// Print the Markdown report instead of the result JSON.
        #[arg(long)]
        markdown: bool,
    },
    /// Convert a Kayenta canary config (JSON) to a bowline CanaryConfig (YAML on stdout);
    /// what could not be converted is listed on stderr and makes the exit status 1.
    ImportKayenta {
        /// The Kayenta config file.
        file: PathBuf,
    },
    /// Run a live analysis against Prometheus and print the Markdown report (--json: the result
    /// JSON). Exit status: 0 Pass, 1 Marginal or Fail, 3 analysis error (metrics unavailable).
    Run(Box<RunArgs>),
}

/// Arguments of `bowline canary run`.
#[derive(Args)]
pub struct RunArgs {
    /// The CanaryConfig (YAML, canary/<name>.yaml).
    #[arg(long)]
    config: PathBuf,
    /// Prometheus base URL.
    #[arg(long, env = "BOWLINE_PROMETHEUS_URL")]
    prometheus: String,
    /// Baseline scope (its Deployment / app name).
    #[arg(long)]
    baseline: String,
    /// Canary scope; the baseline's for a before/after analysis.
    #[arg(long)]
    canary: Option<String>,
    /// Location (namespace) of both scopes.
    #[arg(long, default_value = "")]
    location: String,
    /// Location of the baseline when it differs.
    #[arg(long)]
    baseline_location: Option<String>,
    /// Location of the canary when it differs.
    #[arg(long)]
    canary_location: Option<String>,
    /// Extra label for the queries (NAME=VALUE, repeatable): {{ labels.NAME }}, {{ label_filter }}.
    #[arg(long = "label", value_name = "NAME=VALUE")]
    labels: Vec<String>,
    /// Analysis start: RFC 3339, unix seconds, or "now".
    #[arg(long)]
    start: String,
    /// Analysis end (default: start + delay + lifetime of the config).
    #[arg(long)]
    end: Option<String>,
    /// Before/after release: the baseline windows are the canary windows moved back by this
    /// much (e.g. 1h for the hour before the deploy).
    #[arg(long, value_parser = humantime::parse_duration)]
    baseline_offset: Option<Duration>,
    /// Timeout of each Prometheus request.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Print the result JSON instead of Markdown.
    #[arg(long)]
    json: bool,
    /// Also write result.json, report.md and one SVG chart per metric into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs a canary subcommand.
pub fn run(command: CanaryCommand) -> anyhow::Result<ExitCode> {
    match command {
        CanaryCommand::Judge { file, markdown } => Ok(judge_file(&file, markdown)),
        CanaryCommand::ImportKayenta { file } => import_kayenta(&file),
        CanaryCommand::Run(args) => run_analysis(*args),
    }
}

fn error_json(message: &str) -> ExitCode {
    println!("{}", serde_json::json!({ "error": message }));
    ExitCode::from(2)
}

fn judge_file(file: &PathBuf, markdown: bool) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return error_json(&format!("cannot read {}: {e}", file.display())),
    };
    let request = match input::parse_request(&text) {
        Ok(r) => r,
        Err(e) => return error_json(&e.to_string()),
    };
    match judge::judge(&request.config, request.thresholds, &request.pairs) {
        Ok(result) if markdown => {
            print!("{}", markdown::judge_result(&result));
            ExitCode::SUCCESS
        }
        Ok(result) => match serde_json::to_string_pretty(&result) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => error_json(&e.to_string()),
        },
        Err(e) => error_json(&e.to_string()),
    }
}

fn import_kayenta(file: &PathBuf) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let value: serde_json::Value = serde_json::from_str(&input::relax_json(&text))
        .with_context(|| format!("{} is not JSON", file.display()))?;
    let imported = kayenta::import(&value)?;
    print!("{}", imported.yaml);
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    Ok(if imported.warnings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if text == "now" {
        return Ok(Utc::now());
    }
    if let Ok(seconds) = text.parse::<i64>() {
        return DateTime::from_timestamp(seconds, 0).context("timestamp out of range");
    }
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("\"{text}\" is not RFC 3339, unix seconds or \"now\""))?
        .with_timezone(&Utc))
}

/// Loads and validates a CanaryConfig YAML file.
fn load_config(path: &Path) -> anyhow::Result<CanaryConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value =
        serde_yaml::from_str(&text).with_context(|| format!("{} is not YAML", path.display()))?;
    input::bowline_config(&value).with_context(|| format!("{}", path.display()))
}

fn run_analysis(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--label {l}: expected NAME=VALUE");
        };
        labels.insert(k.to_string(), v.to_string());
    }
    let baseline = Scope {
        scope: args.baseline.clone(),
        location: args
            .baseline_location
            .clone()
            .unwrap_or_else(|| args.location.clone()),
        labels: labels.clone(),
    };
    let canary = Scope {
        scope: args.canary.clone().unwrap_or_else(|| args.baseline.clone()),
        location: args
            .canary_location
            .clone()
            .unwrap_or(args.location.clone()),
        labels,
    };
    if baseline == canary && args.baseline_offset.is_none() {
        bail!(
            "baseline and canary are the same scope: give --canary, or --baseline-offset for a before/after analysis"
        );
    }
    let start = parse_time(&args.start)?;
    let end = args.end.as_deref().map(parse_time).transpose()?;
    if let Some(end) = end
        && end <= start
    {
        bail!("--end must be after --start");
    }
    let plan = Plan::from_config(&config, start, end, args.baseline_offset);
    let request = Request {
        config,
        baseline,
        canary,
        plan,
    };
    let source = PrometheusSource::new(&args.prometheus, args.timeout)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(analysis::run(&source, &request));
    let json = serde_json::to_string_pretty(&report::json::analysis(&report))?;
    let md = markdown::analysis(&report);
    if let Some(dir) = &args.out {
        write_outputs(dir, &report, &json, &md)?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{md}");
    }
    Ok(match report.status {
        Status::Pass => ExitCode::SUCCESS,
        Status::Marginal | Status::Fail => ExitCode::from(1),
        Status::Error => ExitCode::from(3),
    })
}

fn write_outputs(
    dir: &Path,
    report: &analysis::AnalysisReport,
    json: &str,
    md: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("result.json", &format!("{json}\n"))?;
    write("report.md", md)?;
    let result = report.last_result();
    let mut used = std::collections::HashSet::new();
    for series in &report.series {
        let classification = result
            .and_then(|r| {
                r.results
                    .iter()
                    .find(|m| m.name == series.name && m.tags == series.tags)
            })
            .map(|m| m.classification.as_str())
            .unwrap_or("");
        let mut name = report::slug(&series.name);
        if !series.tags.is_empty() {
            let tags: Vec<&str> = series.tags.values().map(String::as_str).collect();
            name = format!("{name}-{}", report::slug(&tags.join("-")));
        }
        while !used.insert(name.clone()) {
            name.push('_');
        }
        let title = if classification.is_empty() {
            series.name.clone()
        } else {
            format!("{}: {classification}", series.name)
        };
        write(&format!("{name}.svg"), &svg::chart(series, &title))?;
    }
    Ok(())
}
