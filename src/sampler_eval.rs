//! `tracelake sampler-eval`: replays a deterministic loadgen workload with known ground truth
//! through the tail sampler (a [`TailCore`](tracelake_ingest::sampling::TailCore) on a virtual
//! clock) and through uniform trace-id sampling at the same storage, and compares them.
//!
//! ```text
//!  loadgen traces + injected incidents ─┬─> ground truth per trace
//!  (error bursts, stalls, rare routes)  └─> on time / late parts ─> TailCore (virtual clock)
//!                                                                      │ kept spans
//!  uniform: keep iff trace_random(id) < q, q such that it stores as many spans
//!  report: 1. recall  2. weighted estimates  3. completeness  4. budget after a 10x step
//! ```
//!
//! [`evaluate`] computes an [`EvalReport`]; printing is separate ([`EvalReport::print`]).

mod metrics;
mod replay;
mod traffic;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tracelake_ingest::sampling::tail::Stats;
use tracelake_ingest::sampling::{Band, SamplingConfig};

use metrics::{Accuracy, AccuracySummary, Completeness, Outcome, Recall};
use replay::{Schedule, TailRun};
use traffic::{Traffic, RARE_ROUTES};

/// The built-in eval config (`examples/sampling.toml`).
pub(crate) const EXAMPLE_CONFIG: &str = include_str!("../examples/sampling.toml");
/// Length of each phase of the budget run, in virtual seconds.
const STEP_PHASE_SECS: f64 = 60.0;
/// Traffic multiplier of the budget run's second phase.
const STEP_FACTOR: f64 = 10.0;
/// Each phase is judged on its last this many seconds.
const STEP_WINDOW_SECS: f64 = 30.0;

/// Compare the tail sampler with uniform sampling on a synthetic workload with known truth.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct SamplerEvalArgs {
    /// A TOML file with a `[sampling]` section (other sections are ignored). Default: the
    /// built-in examples/sampling.toml. `enabled` is forced on
    #[arg(long, env = "TRACELAKE_SAMPLER_EVAL_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Traces to replay in the main run
    #[arg(long, default_value_t = 50_000)]
    pub(crate) traces: u64,
    /// Seed of the workload and of the injected incidents
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Share of traces that send one service's spans after the decision wait
    #[arg(long, default_value_t = 0.05)]
    pub(crate) late_fraction: f64,
    /// Virtual arrival rate of the main run, traces per second
    #[arg(long, default_value_t = 500.0)]
    pub(crate) rate: f64,
    /// Base rate R of the budget run (R for 60 s, then 10R for 60 s), traces per second.
    /// Default: --traces / 660, so that it replays about as many traces as the main run
    #[arg(long)]
    pub(crate) step_rate: Option<f64>,
    /// Budget of the budget run, as a share of its base span rate. The default, 2, is 20% of
    /// the rate after the step: the force-keep and high bands alone (about 11% of this
    /// workload's spans) are above a smaller budget after a 10x step, and they are never cut
    #[arg(long, default_value_t = 2.0)]
    pub(crate) budget_share: f64,
    /// Scales loadgen's failure probabilities (timeouts, DB errors, external 5xx). 1 is
    /// loadgen's own mix, where about 6% of traces hold an error; production systems are
    /// usually well under 1%
    #[arg(long, default_value_t = 1.0)]
    pub(crate) failure_scale: f64,
    /// Share of the traces inside each of the three injected error bursts
    #[arg(long, default_value_t = 0.01)]
    pub(crate) burst_share: f64,
    /// Skip the budget run
    #[arg(long)]
    pub(crate) no_step: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub(crate) json: bool,
}

/// Validated eval parameters.
#[derive(Debug, Clone)]
pub(crate) struct EvalOptions {
    /// The sampling config (enabled).
    pub(crate) config: SamplingConfig,
    /// Where the config came from, for the report.
    pub(crate) config_source: String,
    /// Traces in the main run.
    pub(crate) traces: u64,
    /// Workload seed.
    pub(crate) seed: u64,
    /// Share of traces with late spans.
    pub(crate) late_fraction: f64,
    /// Main run arrival rate, traces per second.
    pub(crate) rate: f64,
    /// Scale of loadgen's failure probabilities.
    pub(crate) failure_scale: f64,
    /// Share of traces in each error burst.
    pub(crate) burst_share: f64,
    /// The budget run: base rate R (traces/s) and budget share; None to skip it.
    pub(crate) step: Option<(f64, f64)>,
    /// Progress lines on stderr.
    pub(crate) progress: bool,
}

#[derive(Deserialize)]
struct ConfigFile {
    sampling: Option<SamplingConfig>,
}

/// Parses the `[sampling]` section of a TOML document and turns sampling on.
pub(crate) fn parse_config(text: &str, source: &str) -> anyhow::Result<SamplingConfig> {
    let file: ConfigFile =
        toml::from_str(text).with_context(|| format!("{source} is not a valid config"))?;
    let mut config = file
        .sampling
        .with_context(|| format!("{source} has no [sampling] section; add one"))?;
    config.enabled = true;
    Ok(config)
}

impl EvalOptions {
    /// Validates the command-line arguments.
    pub(crate) fn from_args(args: &SamplerEvalArgs) -> anyhow::Result<Self> {
        let (config, config_source) = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let source = path.display().to_string();
                (parse_config(&text, &source)?, source)
            }
            None => (
                parse_config(EXAMPLE_CONFIG, "examples/sampling.toml")?,
                "examples/sampling.toml (built in)".to_owned(),
            ),
        };
        if args.traces < 100 {
            bail!("--traces must be at least 100, got {}", args.traces);
        }
        if !(0.0..=1.0).contains(&args.late_fraction) {
            bail!(
                "--late-fraction must be between 0 and 1, got {}",
                args.late_fraction
            );
        }
        if !(args.rate.is_finite() && args.rate > 0.0) {
            bail!("--rate must be above 0, got {}", args.rate);
        }
        if !(args.failure_scale.is_finite() && (0.0..=50.0).contains(&args.failure_scale)) {
            bail!(
                "--failure-scale must be between 0 and 50, got {}",
                args.failure_scale
            );
        }
        if !(0.0..=0.3).contains(&args.burst_share) {
            bail!(
                "--burst-share must be between 0 and 0.3, got {}",
                args.burst_share
            );
        }
        if !(args.budget_share.is_finite() && args.budget_share > 0.0) {
            bail!("--budget-share must be above 0, got {}", args.budget_share);
        }
        let step_rate = args
            .step_rate
            .unwrap_or((args.traces as f64 / (2.0 * STEP_PHASE_SECS * 5.5)).max(5.0));
        if !(step_rate.is_finite() && step_rate > 0.0) {
            bail!("--step-rate must be above 0, got {step_rate}");
        }
        Ok(Self {
            config,
            config_source,
            traces: args.traces,
            seed: args.seed,
            late_fraction: args.late_fraction,
            rate: args.rate,
            failure_scale: args.failure_scale,
            burst_share: args.burst_share,
            step: (!args.no_step).then_some((step_rate, args.budget_share)),
            progress: true,
        })
    }
}

/// Everything the eval measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EvalReport {
    /// Where the config came from.
    pub(crate) config_source: String,
    /// Traces replayed in the main run.
    pub(crate) traces: u64,
    /// Spans in them.
    pub(crate) spans: u64,
    /// Workload seed.
    pub(crate) seed: u64,
    /// Virtual arrival rate, traces per second.
    pub(crate) rate: f64,
    /// Share of traces asked to send spans late.
    pub(crate) late_fraction: f64,
    /// The workload's p99 root duration, milliseconds ("slow" traces are above it).
    pub(crate) p99_root_ms: f64,
    /// Share of all spans that are in critical traces. A sampler that keeps every critical
    /// trace stores at least this much, so uniform sampling at equal storage keeps at least
    /// this share of them, and the critical recall ratio is at most its inverse.
    pub(crate) critical_span_share: f64,
    /// Share of all spans that are in error traces.
    pub(crate) error_span_share: f64,
    /// Injected error bursts: service, first and last+1 trace index.
    pub(crate) bursts: Vec<(String, u64, u64)>,
    /// Traces dropped by a force-drop rule (health probes): left out of recall and estimates.
    pub(crate) force_dropped_traces: u64,
    /// Tail sampler: traces and spans kept.
    pub(crate) tail: Storage,
    /// Uniform sampling: traces and spans kept.
    pub(crate) uniform: Storage,
    /// The uniform sampling rate.
    pub(crate) uniform_q: f64,
    /// Section 1.
    pub(crate) recall: Vec<Recall>,
    /// Section 2, by root service.
    pub(crate) accuracy: Vec<Accuracy>,
    /// Section 2 summary.
    pub(crate) accuracy_summary: AccuracySummary,
    /// Section 2 by root route (extra detail).
    pub(crate) accuracy_by_route: Vec<Accuracy>,
    /// Section 3.
    pub(crate) completeness: Completeness,
    /// Section 4 (None with `--no-step`).
    pub(crate) budget: Option<BudgetReport>,
    /// The sampler's counters in the main run.
    pub(crate) bands: Stats,
    /// The issue's targets.
    pub(crate) targets: Vec<TargetCheck>,
    /// Wall time of the eval, seconds.
    pub(crate) elapsed_secs: f64,
}

/// Traces and spans a sampler stored.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Storage {
    /// Traces kept.
    pub(crate) traces: u64,
    /// Spans kept.
    pub(crate) spans: u64,
    /// Spans kept over spans offered.
    pub(crate) span_share: f64,
}

/// The budget run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BudgetReport {
    /// Base rate R, traces per second.
    pub(crate) base_rate: f64,
    /// The budget, spans per second.
    pub(crate) budget_spans_per_sec: f64,
    /// The budget as a share of the base phase's offered span rate.
    pub(crate) budget_share: f64,
    /// The two phases, judged on their last 30 s.
    pub(crate) phases: Vec<PhaseReport>,
    /// Force-keep or high-band traces not kept (the budget must never cut them).
    pub(crate) forced_not_kept: u64,
    /// Error recall in this run.
    pub(crate) error_recall: Option<f64>,
}

/// One phase of the budget run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseReport {
    /// "base" or "10x".
    pub(crate) name: String,
    /// The window judged, virtual seconds.
    pub(crate) window: (f64, f64),
    /// Spans offered per second.
    pub(crate) offered_spans_per_sec: f64,
    /// Spans kept per second.
    pub(crate) kept_spans_per_sec: f64,
    /// Of which kept by force-keep rules or the high band.
    pub(crate) forced_spans_per_sec: f64,
    /// Middle-band spans kept over middle-band spans decided.
    pub(crate) mid_keep_share: Option<f64>,
    /// `kept / budget`.
    pub(crate) kept_over_budget: f64,
}

/// One of the issue's targets.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TargetCheck {
    /// What is measured.
    pub(crate) name: String,
    /// The target.
    pub(crate) target: String,
    /// The measured value.
    pub(crate) value: String,
    /// Met or not.
    pub(crate) met: bool,
}

fn progress(on: bool, message: &str) {
    if on {
        eprintln!("sampler-eval: {message}");
    }
}

/// Runs the eval.
pub(crate) fn evaluate(opts: &EvalOptions) -> anyhow::Result<EvalReport> {
    let started = Instant::now();
    let rules = Arc::new(
        opts.config
            .compile()
            .map_err(|e| anyhow::anyhow!("invalid [sampling] config: {e}"))?,
    );

    progress(
        opts.progress,
        &format!(
            "main run: {} traces at {}/s (virtual)",
            opts.traces, opts.rate
        ),
    );
    let traffic = Traffic::new(opts.seed, opts.traces, opts.late_fraction)
        .with_failures(opts.failure_scale, opts.burst_share);
    let schedule = Schedule::Constant {
        rate: opts.rate,
        traces: opts.traces,
    };
    let total = opts.traces;
    let show = opts.progress;
    let run = replay::run_tail(Arc::clone(&rules), traffic, schedule, &mut |n| {
        progress(show, &format!("  {n}/{total} traces"));
    })?;
    let truths = &run.truths;
    let spans: u64 = truths.iter().map(|t| u64::from(t.spans)).sum();
    let tail = Outcome {
        kept_spans: run.kept_spans.clone(),
        root_weight: run.root_weight.clone(),
    };
    let (q, _) = replay::uniform_rate(truths, tail.kept_span_total());
    let uniform = uniform_outcome(truths, q);

    let p99_root = metrics::quantile(
        truths.iter().map(|t| (t.root_duration, 1.0)).collect(),
        0.99,
    )
    .unwrap_or(0.0);
    let slow = |t: &traffic::Truth| t.root_duration as f64 > p99_root;
    let classes: [Class<'_>; 8] = [
        ("error", "error traces".into(), &|t| t.error),
        (
            "error_on_time",
            "error seen before the decision".into(),
            &|t| t.error_on_time,
        ),
        ("error_late_only", "error only in late spans".into(), &|t| {
            t.error && !t.error_on_time
        }),
        (
            "critical_tier_root",
            "critical-tier root service".into(),
            &|t| t.critical_tier_root,
        ),
        (
            "critical_tier_any",
            "critical-tier service in trace".into(),
            &|t| t.critical_tier_any,
        ),
        (
            "critical",
            "critical (error|slow|rare route)".into(),
            &|t| t.error || slow(t) || t.rare_route,
        ),
        (
            "slow_root",
            format!("slow root (> p99 {:.0} ms)", p99_root * 1e-6),
            &slow,
        ),
        ("rare_route", "rare route".into(), &|t| t.rare_route),
    ];
    let recall = classes
        .iter()
        .map(|(key, name, member)| metrics::recall(key, name, truths, &tail, &uniform, member))
        .collect();
    let accuracy = metrics::accuracy(
        truths,
        &run.names.services,
        |t| t.root_service,
        &tail,
        &uniform,
    );
    let accuracy_summary = metrics::summarize(&accuracy);
    let accuracy_by_route =
        metrics::accuracy(truths, &run.names.routes, |t| t.root_route, &tail, &uniform);
    let completeness = metrics::completeness(truths, &tail, run.stats.late_spans_kept);

    let storage = |o: &Outcome| Storage {
        traces: o.kept_traces(),
        spans: o.kept_span_total(),
        span_share: o.kept_span_total() as f64 / spans.max(1) as f64,
    };
    let mean_spans = spans as f64 / truths.len().max(1) as f64;
    let span_share = |member: &dyn Fn(&traffic::Truth) -> bool| {
        let n: u64 = truths
            .iter()
            .filter(|t| !t.force_dropped && member(t))
            .map(|t| u64::from(t.spans))
            .sum();
        n as f64 / spans.max(1) as f64
    };
    let critical_span_share = span_share(&|t| t.error || slow(t) || t.rare_route);
    let error_span_share = span_share(&|t| t.error);
    let budget = match opts.step {
        Some((rate, share)) => Some(budget_run(opts, &rules, rate, share, mean_spans)?),
        None => None,
    };
    let mut report = EvalReport {
        config_source: opts.config_source.clone(),
        traces: truths.len() as u64,
        spans,
        seed: opts.seed,
        rate: opts.rate,
        late_fraction: opts.late_fraction,
        p99_root_ms: p99_root * 1e-6,
        critical_span_share,
        error_span_share,
        bursts: run.bursts.clone(),
        force_dropped_traces: truths.iter().filter(|t| t.force_dropped).count() as u64,
        tail: storage(&tail),
        uniform: storage(&uniform),
        uniform_q: q,
        recall,
        accuracy,
        accuracy_summary,
        accuracy_by_route,
        completeness,
        budget,
        bands: run.stats.clone(),
        targets: Vec::new(),
        elapsed_secs: 0.0,
    };
    report.targets = targets(&report);
    report.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A class of traces for recall: key, name, membership.
type Class<'a> = (&'static str, String, &'a dyn Fn(&traffic::Truth) -> bool);

/// Uniform trace-id sampling at rate `q`.
fn uniform_outcome(truths: &[traffic::Truth], q: f64) -> Outcome {
    let kept: Vec<bool> = truths
        .iter()
        .map(|t| tracelake_ingest::sampling::trace_random(t.id) < q)
        .collect();
    Outcome {
        kept_spans: truths
            .iter()
            .zip(&kept)
            .map(|(t, &k)| if k { t.spans } else { 0 })
            .collect(),
        root_weight: kept
            .iter()
            .map(|&k| if k { 1.0 / q } else { 0.0 })
            .collect(),
    }
}

/// Section 4: R traces/s for 60 s, then 10R for 60 s, with a budget.
fn budget_run(
    opts: &EvalOptions,
    rules: &tracelake_ingest::sampling::Rules,
    rate: f64,
    share: f64,
    mean_spans: f64,
) -> anyhow::Result<BudgetReport> {
    let budget = share * rate * mean_spans;
    let mut config = rules.config.clone();
    config.budget_spans_per_sec = Some(budget);
    let rules = Arc::new(
        config
            .compile()
            .map_err(|e| anyhow::anyhow!("invalid [sampling] config: {e}"))?,
    );
    let schedule = Schedule::Step {
        rate,
        secs: STEP_PHASE_SECS,
        factor: STEP_FACTOR,
    };
    let total = schedule.traces();
    progress(
        opts.progress,
        &format!(
            "budget run: {total} traces, {rate:.1}/s then {:.1}/s (virtual), budget {budget:.0} spans/s",
            rate * STEP_FACTOR
        ),
    );
    let show = opts.progress;
    let traffic = Traffic::new(opts.seed.wrapping_add(1), total, opts.late_fraction)
        .with_failures(opts.failure_scale, opts.burst_share);
    let run = replay::run_tail(rules, traffic, schedule, &mut |n| {
        progress(show, &format!("  {n}/{total} traces"));
    })?;
    let phases = [("base", STEP_PHASE_SECS), ("10x", 2.0 * STEP_PHASE_SECS)]
        .into_iter()
        .map(|(name, end)| phase(&run, name, end - STEP_WINDOW_SECS, end, budget))
        .collect();
    let tail = Outcome {
        kept_spans: run.kept_spans.clone(),
        root_weight: run.root_weight.clone(),
    };
    let error_recall =
        metrics::recall("error", "errors", &run.truths, &tail, &tail, |t| t.error).tail;
    Ok(BudgetReport {
        base_rate: rate,
        budget_spans_per_sec: budget,
        budget_share: share,
        phases,
        forced_not_kept: run.forced_not_kept,
        error_recall,
    })
}

fn phase(run: &TailRun, name: &str, from: f64, to: f64, budget: f64) -> PhaseReport {
    let (a, b) = (from as usize, to as usize);
    let secs = (b - a) as f64;
    let sum = |v: &[u64]| -> f64 { v.iter().skip(a).take(b - a).sum::<u64>() as f64 / secs };
    let (mid, mid_kept) = run
        .mid_by_sec
        .iter()
        .skip(a)
        .take(b - a)
        .fold((0, 0), |acc, m| (acc.0 + m.0, acc.1 + m.1));
    let kept = sum(&run.kept_by_sec);
    PhaseReport {
        name: name.to_owned(),
        window: (from, to),
        offered_spans_per_sec: sum(&run.offered_by_sec),
        kept_spans_per_sec: kept,
        forced_spans_per_sec: sum(&run.forced_by_sec),
        mid_keep_share: (mid > 0).then(|| mid_kept as f64 / mid as f64),
        kept_over_budget: kept / budget,
    }
}

/// Recall rows printed as details of the row above.
fn detail(key: &str) -> bool {
    matches!(
        key,
        "error_on_time" | "error_late_only" | "slow_root" | "rare_route"
    )
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), pct)
}

/// The issue's targets, checked against the report.
fn targets(r: &EvalReport) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let mut check = |name: &str, target: &str, value: String, met: bool| {
        out.push(TargetCheck {
            name: name.to_owned(),
            target: target.to_owned(),
            value,
            met,
        });
    };
    let row = |key: &str| r.recall.iter().find(|x| x.key == key);
    if let (Some(e), Some(seen)) = (row("error"), row("error_on_time")) {
        check(
            "error-trace recall (tail)",
            "100%",
            format!(
                "{} ({} of the {} whose error arrived before the decision)",
                opt_pct(e.tail),
                opt_pct(seen.tail),
                seen.traces
            ),
            e.tail.is_none_or(|t| t >= 1.0),
        );
    }
    if let Some(c) = row("critical") {
        check(
            "critical-trace recall, tail / uniform at equal storage",
            ">= 10x",
            format!(
                "{} (at most {:.1}x here: critical traces hold {} of the spans)",
                c.ratio
                    .map_or_else(|| "-".to_owned(), |x| format!("{x:.1}x")),
                1.0 / r.critical_span_share.max(1e-9),
                pct(r.critical_span_share)
            ),
            c.ratio.is_some_and(|x| x >= 10.0),
        );
    }
    let s = &r.accuracy_summary;
    check(
        "weighted request counts per root service (tail, max |rel err|)",
        "within 3%",
        format!(
            "{} at {} of spans stored",
            pct(s.count.tail_max),
            pct(r.tail.span_share)
        ),
        s.count.tail_max <= 0.03,
    );
    check(
        "p99 root latency per root service (tail, max |rel err|)",
        "within 5%",
        pct(s.p99.tail_max),
        s.p99.tail_max <= 0.05,
    );
    check(
        "completeness of kept traces",
        ">= 99.9%",
        pct(r.completeness.fraction),
        r.completeness.fraction >= 0.999,
    );
    if let Some(b) = &r.budget {
        if let Some(p) = b.phases.last() {
            check(
                "kept spans/s over budget, last 30 s after the 10x step",
                "within 25%",
                format!("{:.2}x", p.kept_over_budget),
                (p.kept_over_budget - 1.0).abs() <= 0.25,
            );
        }
        check(
            "force-keep/high traces cut by the budget",
            "0",
            b.forced_not_kept.to_string(),
            b.forced_not_kept == 0,
        );
    }
    out
}

impl EvalReport {
    /// Prints the report: a table, or JSON.
    pub(crate) fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
        } else {
            print!("{}", self.table());
        }
        Ok(())
    }

    /// The report as text tables.
    pub(crate) fn table(&self) -> String {
        let mut o = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_table(&mut o);
        o
    }

    fn write_table(&self, o: &mut String) -> std::fmt::Result {
        writeln!(
            o,
            "tracelake sampler-eval: {} traces, {} spans, seed {}, {} traces/s virtual, {} of traces with late spans",
            self.traces,
            self.spans,
            self.seed,
            self.rate,
            pct(self.late_fraction)
        )?;
        writeln!(o, "config: {}", self.config_source)?;
        let bursts: Vec<String> = self
            .bursts
            .iter()
            .map(|(s, a, b)| format!("{s} (traces {a}..{b})"))
            .collect();
        writeln!(
            o,
            "injected: error bursts in {}; stalls of 0.5-3 s; rare routes {}",
            bursts.join(", "),
            RARE_ROUTES.join(", ")
        )?;
        writeln!(
            o,
            "left out of recall and estimates: {} traces dropped by a force-drop rule (health probes)",
            self.force_dropped_traces
        )?;
        writeln!(o)?;
        writeln!(
            o,
            "{:<34} {:>10} {:>10} {:>9}",
            "storage", "traces", "spans", "of spans"
        )?;
        for (name, s) in [
            ("tail sampler".to_owned(), &self.tail),
            (format!("uniform, q = {:.4}", self.uniform_q), &self.uniform),
        ] {
            writeln!(
                o,
                "{:<34} {:>10} {:>10} {:>9}",
                name,
                s.traces,
                s.spans,
                pct(s.span_share)
            )?;
        }
        let b = &self.bands.bands;
        let band = |x: Band| &b[Band::ALL.iter().position(|y| *y == x).unwrap_or(0)];
        let mut line = String::from("tail bands (traces kept/decided):");
        for x in Band::ALL {
            let s = band(x);
            let _ = write!(
                line,
                " {} {}/{}",
                x.as_str(),
                s.kept_traces,
                s.kept_traces + s.dropped_traces
            );
        }
        writeln!(o, "{line}")?;
        writeln!(
            o,
            "spans in error traces: {}; in critical traces: {} (so at equal storage the critical recall ratio is at most {:.1}x)",
            pct(self.error_span_share),
            pct(self.critical_span_share),
            1.0 / self.critical_span_share.max(1e-9)
        )?;

        writeln!(o)?;
        writeln!(o, "1. recall")?;
        writeln!(
            o,
            "{:<36} {:>7} {:>9} {:>9} {:>9}",
            "traces", "count", "tail", "uniform", "ratio"
        )?;
        for r in &self.recall {
            let ratio = r
                .ratio
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.1}x"));
            writeln!(
                o,
                "{:<36} {:>7} {:>9} {:>9} {:>9}",
                format!("{}{}", if detail(&r.key) { "  " } else { "" }, r.name),
                r.traces,
                opt_pct(r.tail),
                opt_pct(r.uniform),
                ratio
            )?;
        }

        if self
            .recall
            .iter()
            .any(|r| r.key == "critical_tier_root" && r.traces == 0)
        {
            writeln!(
                o,
                "  (no root is in a critical tier: loadgen roots are frontend and api-gateway, and \
                 health probes are dropped by rule; the next row counts traces that reach one)"
            )?;
        }
        writeln!(o)?;
        writeln!(
            o,
            "2. weighted estimates by root service (relative error: tail / uniform)"
        )?;
        self.write_accuracy(o, &self.accuracy)?;
        let s = &self.accuracy_summary;
        for (name, e) in [
            ("count", s.count),
            ("error rate", s.error_rate),
            ("p99", s.p99),
        ] {
            writeln!(
                o,
                "  |rel err| of {name:<10}: tail mean {} max {}; uniform mean {} max {} (mean weighted by traffic)",
                pct(e.tail_mean),
                pct(e.tail_max),
                pct(e.uniform_mean),
                pct(e.uniform_max)
            )?;
        }
        writeln!(o, "   by root route:")?;
        self.write_accuracy(o, &self.accuracy_by_route)?;

        writeln!(o)?;
        let c = &self.completeness;
        writeln!(o, "3. completeness")?;
        writeln!(
            o,
            "kept traces with every span kept: {} ({} of {}); traces with late spans: {} kept, {} of them complete; late spans kept via the decision cache: {}",
            pct(c.fraction),
            c.complete_traces,
            c.kept_traces,
            c.late_kept,
            c.late_complete,
            c.late_spans_kept
        )?;

        writeln!(o)?;
        match &self.budget {
            None => writeln!(o, "4. budget after a 10x step: skipped (--no-step)")?,
            Some(b) => {
                writeln!(
                    o,
                    "4. budget after a 10x step: R = {:.1} traces/s for 60 s, then 10R for 60 s; budget {:.0} spans/s ({} of the base span rate)",
                    b.base_rate,
                    b.budget_spans_per_sec,
                    pct(b.budget_share)
                )?;
                writeln!(
                    o,
                    "{:<6} {:>10} {:>11} {:>9} {:>15} {:>9} {:>12}",
                    "phase",
                    "window",
                    "offered/s",
                    "kept/s",
                    "forced+high/s",
                    "mid p",
                    "kept/budget"
                )?;
                for p in &b.phases {
                    writeln!(
                        o,
                        "{:<6} {:>10} {:>11.0} {:>9.0} {:>15.0} {:>9} {:>12.2}",
                        p.name,
                        format!("{:.0}-{:.0} s", p.window.0, p.window.1),
                        p.offered_spans_per_sec,
                        p.kept_spans_per_sec,
                        p.forced_spans_per_sec,
                        p.mid_keep_share
                            .map_or_else(|| "-".to_owned(), |x| format!("{x:.4}")),
                        p.kept_over_budget
                    )?;
                }
                writeln!(
                    o,
                    "force-keep/high traces not kept: {}; error recall in this run: {}",
                    b.forced_not_kept,
                    opt_pct(b.error_recall)
                )?;
            }
        }

        writeln!(o)?;
        writeln!(o, "targets")?;
        for t in &self.targets {
            writeln!(
                o,
                "  [{}] {}: {} (target {})",
                if t.met { "met " } else { "MISS" },
                t.name,
                t.value,
                t.target
            )?;
        }
        writeln!(o, "({:.1} s)", self.elapsed_secs)
    }

    fn write_accuracy(&self, o: &mut String, rows: &[Accuracy]) -> std::fmt::Result {
        let rel =
            |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{:+.1}%", 100.0 * x));
        writeln!(
            o,
            "  {:<28} {:>7} {:>8} {:>8} {:>7} {:>8} {:>8} {:>9} {:>8} {:>8}",
            "", "roots", "count t", "count u", "err", "err t", "err u", "p99 ms", "p99 t", "p99 u"
        )?;
        for a in rows {
            writeln!(
                o,
                "  {:<28} {:>7} {:>8} {:>8} {:>7} {:>8} {:>8} {:>9.1} {:>8} {:>8}",
                a.name,
                a.traces,
                rel(a.count.tail_rel_err),
                rel(a.count.uniform_rel_err),
                pct(a.error_rate.truth),
                rel(a.error_rate.tail_rel_err),
                rel(a.error_rate.uniform_rel_err),
                a.p99_ms.truth,
                rel(a.p99_ms.tail_rel_err),
                rel(a.p99_ms.uniform_rel_err)
            )?;
        }
        Ok(())
    }
}

/// `tracelake sampler-eval`.
pub(crate) fn run(args: &SamplerEvalArgs) -> anyhow::Result<()> {
    let opts = EvalOptions::from_args(args)?;
    let report = evaluate(&opts)?;
    report.print(args.json)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SamplerEvalArgs,
    }

    fn options(extra: &[&str]) -> EvalOptions {
        let argv = ["sampler-eval"].iter().chain(extra);
        let mut opts = EvalOptions::from_args(&Cli::parse_from(argv).args).unwrap();
        opts.progress = false;
        opts
    }

    #[test]
    fn the_example_config_parses_and_compiles() {
        let c = parse_config(EXAMPLE_CONFIG, "examples/sampling.toml").unwrap();
        assert!(c.enabled);
        assert_eq!(c.decision_wait, std::time::Duration::from_secs(5));
        let rules = c.compile().unwrap();
        assert_eq!(rules.config.routes.len(), 4);
    }

    #[test]
    fn bad_configs_and_flags_are_refused() {
        let err = parse_config("[server]\nx = 1\n", "x.toml").unwrap_err();
        assert!(err.to_string().contains("no [sampling] section"), "{err}");
        let err = parse_config("[sampling]\nbogus = 1\n", "x.toml").unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `bogus`"),
            "{err:#}"
        );
        let args = Cli::parse_from(["sampler-eval", "--late-fraction", "2"]).args;
        assert!(EvalOptions::from_args(&args).is_err());
    }

    /// The robust targets on a small workload. At 4000 traces the estimates are too noisy to
    /// test (about 150 middle-band traces per service), and the critical recall ratio cannot
    /// reach 10x with loadgen's own failure mix at any size: critical traces hold about 9% of
    /// the spans, so the tail sampler stores at least that and uniform sampling at equal
    /// storage keeps as large a share of them. With mid_probability 0.05 the ratio is about
    /// 7x; 5x is asserted. `critical_recall_is_ten_times_uniform_at_low_error_rates` checks
    /// the 10x target where it can hold.
    /// The 10x target at production-like error rates (loadgen's failures scaled to 5%): every
    /// critical trace is kept while at most 10% of the spans are stored. Uniform sampling at
    /// equal storage keeps each trace with probability equal to the storage share, so its
    /// expected critical recall is at most 10%: the expected ratio is at least 10x. The
    /// sampled uniform recall is too noisy at this size (about 300 critical traces) to assert
    /// the measured ratio; BENCHMARKS.md has it at 200,000 traces.
    #[test]
    fn critical_recall_is_ten_times_uniform_at_low_error_rates() {
        let r = evaluate(&options(&[
            "--traces",
            "20000",
            "--failure-scale",
            "0.05",
            "--burst-share",
            "0.001",
            "--no-step",
        ]))
        .unwrap();
        eprintln!("{}", r.table());
        let critical = r.recall.iter().find(|x| x.key == "critical").unwrap();
        assert!(critical.traces >= 200, "{critical:?}");
        assert_eq!(critical.tail, Some(1.0), "{critical:?}");
        assert!(r.tail.span_share <= 0.10, "{:?}", r.tail);
    }

    #[test]
    fn small_workload_meets_the_robust_targets() {
        let r = evaluate(&options(&["--traces", "4000"])).unwrap();
        eprintln!("{}", r.table());
        let row = |key: &str| r.recall.iter().find(|x| x.key == key).unwrap();
        assert_eq!(row("error_on_time").tail, Some(1.0));
        assert!(row("error").tail.unwrap() >= 0.99);
        assert!(r.completeness.fraction >= 0.999, "{:?}", r.completeness);
        assert!(r.completeness.late_kept > 0, "{:?}", r.completeness);
        let critical = row("critical");
        assert!(critical.tail.unwrap() >= 0.99, "{critical:?}");
        assert!(critical.ratio.unwrap() >= 5.0, "{critical:?}");
        assert!(
            (r.uniform.spans as f64 / r.tail.spans as f64 - 1.0).abs() <= 0.01,
            "uniform stores as many spans: {:?} {:?}",
            r.uniform,
            r.tail
        );
        let b = r.budget.as_ref().unwrap();
        assert_eq!(b.forced_not_kept, 0);
        assert_eq!(b.error_recall, Some(1.0));
        let after = b.phases.last().unwrap().kept_over_budget;
        assert!(
            (after - 1.0).abs() <= 0.25,
            "kept/budget after the step: {after}"
        );
        // Deterministic: the same seed gives the same report.
        let again = evaluate(&options(&["--traces", "4000", "--no-step"])).unwrap();
        assert_eq!(again.tail.spans, r.tail.spans);
        assert_eq!(again.uniform_q, r.uniform_q);
    }
}
