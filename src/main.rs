//! The `stochseg` binary: parses flags into library types, sets up logging on stderr, calls the
//! library, and turns the outcome into a documented exit code. No domain logic lives here.

use std::path::PathBuf;
use std::process::ExitCode as ProcessExit;

use clap::{Args, Parser, Subcommand, ValueEnum};
use stochseg::error::{Error, ExitCode};
use stochseg::install::{self, PipelineChoice};
use stochseg::io::case::CaseSpec;
use stochseg::pipeline::{self, ConfigError, Overrides, Pipeline};
use stochseg::run::{self, Event, RunRequest};
use stochseg::schema::SchemaKind;

#[derive(Parser)]
#[command(
    name = "stochseg",
    version,
    disable_version_flag = true,
    about = "Uncertainty-aware brain-tumor segmentation with a stochastic ONNX U-Net ensemble"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Print the version; with -v also the ONNX Runtime library found, its version and
    /// execution providers, and the data folder.
    #[arg(short = 'V', long)]
    version: bool,
    /// Less output on stderr (errors only).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More output on stderr (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// ONNX Runtime library (libonnxruntime.so.*); see docs/models.md for the search order.
    #[arg(long, global = true, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Segment one case.
    Run(RunArgs),
    /// Check a pipeline config and its models without running them; with a case, also print
    /// the run's expected peak memory and output size (from the case's headers).
    Validate(ValidateArgs),
    /// Collect every OUT_DIR/<case>/report.json (and `make batch` failure markers) into
    /// OUT_DIR/cohort-summary.csv and cohort-summary.yaml.
    Summarize {
        /// Folder holding one output folder per case.
        out_dir: PathBuf,
    },
    /// Evaluate a cohort of finished runs against ground truth, per region: Dice, the BraTS
    /// 2023/2024 lesion-wise rule (GT dilation, small lesions left out), blob confidence as a
    /// detector (ROC AUC, AP, bootstrap CIs, calibration, Youden threshold), the label map's
    /// per-label Dice, and from uncertainty and probability maps the QU-BraTS score, the
    /// retention curve and the voxels' calibration; writes evaluation.yaml, CSVs and plots.
    Evaluate(EvaluateArgs),
    /// Print a model's inputs, outputs and metadata.
    Inspect {
        /// ONNX model file.
        model: PathBuf,
    },
    /// Print a JSON Schema (YAML).
    Schema {
        #[arg(value_enum)]
        which: SchemaChoice,
    },
    /// List the shipped pipelines (names for --pipeline NAME) with their descriptions.
    Pipelines,
    /// Check the installation end to end: ONNX Runtime loads, every shipped pipeline and model
    /// opens, a small synthetic case runs through the default pipeline (one pass per model).
    Doctor,
    /// Print a shell completion script (bash, zsh, fish, ...) on stdout.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (stochseg.1, stochseg-<command>.1) into a folder.
    #[command(hide = true)]
    Man {
        /// Folder for the pages (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct EvaluateArgs {
    /// Folder holding one finished run output per case (<folder>/report.json, labels.nii.gz).
    cohort: PathBuf,
    /// Ground-truth folder.
    #[arg(long, value_name = "DIR")]
    gt: PathBuf,
    /// Path of a case's ground truth under --gt; {case} = report case id, {folder} = run folder.
    #[arg(long, default_value = "{case}/{case}-seg.nii.gz")]
    gt_pattern: String,
    /// Where evaluation.yaml and the CSVs go (default: the cohort folder).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Bootstrap resamples for the 95% intervals.
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Lesion-wise rule: dilations of the GT (18-neighbourhood) that group nearby GT components
    /// into one lesion and decide matches (BraTS: 3 glioma/SSA/paediatric, 1 meningioma/metastases).
    #[arg(long, default_value_t = 3, value_name = "N")]
    gt_dilation: usize,
    /// Lesion-wise rule: GT lesions of at most this volume leave the score (BraTS: 50, 2 for
    /// metastases).
    #[arg(long, default_value_t = 50.0, value_name = "MM3")]
    lesion_min_volume_mm3: f64,
}

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionChoice {
    F32,
    Bf16,
}

impl From<PrecisionChoice> for pipeline::Precision {
    fn from(p: PrecisionChoice) -> Self {
        match p {
            PrecisionChoice::F32 => pipeline::Precision::F32,
            PrecisionChoice::Bf16 => pipeline::Precision::Bf16,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SchemaChoice {
    Pipeline,
    Report,
}

#[derive(Args)]
struct ConfigArgs {
    /// Pipeline config: a YAML file, or a shipped pipeline's name (`stochseg pipelines`).
    /// Without it and without --model: the shipped brats-goat-stochastic.
    #[arg(long, value_name = "YAML|NAME")]
    pipeline: Option<PathBuf>,
    /// Model to use, replacing the config's models (repeatable); PATH or PATH:DxHxW.
    #[arg(long = "model", value_name = "PATH[:DxHxW]")]
    models: Vec<String>,
    /// Passes per model (stochastic mode).
    #[arg(long)]
    passes: Option<usize>,
    /// Noise standard deviation in z-score units.
    #[arg(long, allow_negative_numbers = true)]
    sigma: Option<f32>,
    /// Seed for every random draw.
    #[arg(long)]
    seed: Option<u64>,
    /// Deterministic ensemble: no noise, one pass per model.
    #[arg(long)]
    deterministic: bool,
    /// Also run the deterministic ensemble (same models, no noise, one pass each) and report
    /// it beside the stochastic one (report `comparison`).
    #[arg(long, conflicts_with = "deterministic")]
    compare_deterministic: bool,
    /// Threshold on the aggregated logit.
    #[arg(long, allow_negative_numbers = true)]
    threshold: Option<f32>,
    /// cpu (ONNX Runtime's own provider), openvino, cuda[:N] or tensorrt[:N] (replaces the
    /// config's provider list).
    #[arg(long)]
    device: Option<String>,
    /// OpenVINO's precision: f32 (matches the CPU provider) or bf16 (CPUs with AVX512_BF16 or
    /// AMX).
    #[arg(long, value_enum)]
    precision: Option<PrecisionChoice>,
    /// Fall back to the next configured provider when one cannot be had.
    #[arg(long)]
    allow_fallback: bool,
    /// Threads (default: the CPU quota).
    #[arg(long)]
    threads: Option<usize>,
    /// Patches per model call.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Window overlap in [0, 1).
    #[arg(long)]
    overlap: Option<f64>,
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Case folder whose headers size the estimate (no voxel is read).
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    case: Option<PathBuf>,
    /// One channel: NAME=PATH (repeatable), as for `run`.
    #[arg(long = "input", value_name = "NAME=PATH")]
    inputs: Vec<String>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value = "text")]
    format: ValidateFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ValidateFormat {
    Text,
    Yaml,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Case folder with BraTS 2024 names (<case>-t1n.nii.gz, -t1c, -t2w, -t2f).
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    case: Option<PathBuf>,
    /// One channel: NAME=PATH (repeatable), e.g. --input t1n=a.nii.gz.
    #[arg(long = "input", value_name = "NAME=PATH")]
    inputs: Vec<String>,
    /// Output folder (created atomically).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    overwrite: bool,
    /// Write PNG figures into OUT/figures/ (outputs.figures).
    #[arg(long, conflicts_with = "no_figures")]
    figures: bool,
    /// No figures, whatever the pipeline config says.
    #[arg(long)]
    no_figures: bool,
    /// Also write the input channels as DICOM MR series (OUT/source-dicom/) that the DICOM SEG
    /// references (NIfTI input only).
    #[arg(long)]
    write_source_dicom: bool,
}

/// One glibc malloc arena for the whole process. By default every thread that allocates gets
/// its own arena, and each keeps the freed blocks of the per-pass maps (tens of MB) for itself:
/// with the pipelined ensemble's helper threads, peak RSS on the demo case grew by about 200 MB
/// (1.16 GB instead of 0.97 GB for two passes; `make bench` measures it). Allocation is rare
/// and coarse here, so one arena costs no time.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; called once before other threads
        // exist. M_ARENA_MAX is -8 in glibc's malloc.h.
        unsafe {
            libc::mallopt(-8, 1);
        }
    }
}

fn main() -> ProcessExit {
    limit_malloc_arenas();
    stochseg::guard::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            eprintln!("{}", usage_line(&e));
            return ProcessExit::from(ExitCode::Usage as u8);
        }
        Err(e) => {
            // --help
            let _ = e.print();
            return ProcessExit::SUCCESS;
        }
    };
    init_logging(&cli);
    if cli.version {
        print_version(&cli);
        return ProcessExit::SUCCESS;
    }
    let Some(command) = &cli.command else {
        eprintln!("{}", usage_line(&missing_command()));
        return ProcessExit::from(ExitCode::Usage as u8);
    };
    if let Err(e) = ctrlc::set_handler(stochseg::cancel::request) {
        tracing::warn!("cannot install the interrupt handler: {e}");
    }
    match dispatch(&cli, command) {
        Ok(()) => ProcessExit::SUCCESS,
        Err(e) => {
            // the contract is one line, whatever a third-party message holds
            let message = e.to_string();
            eprintln!(
                "stochseg: error: {}",
                message.split_whitespace().collect::<Vec<_>>().join(" ")
            );
            ProcessExit::from(e.exit_code() as u8)
        }
    }
}

/// `stochseg --version`: the version; with -v, what `doctor::about` finds.
fn print_version(cli: &Cli) {
    if cli.verbose > 0 {
        print!("{}", stochseg::doctor::about(cli.ort_lib.as_deref()).text());
    } else {
        println!("stochseg {}", env!("CARGO_PKG_VERSION"));
    }
}

/// The usage error of a command line without a command, naming the commands.
fn missing_command() -> clap::Error {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let names: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect();
    cmd.error(
        clap::error::ErrorKind::MissingSubcommand,
        format!("a command is required: {}", names.join(", ")),
    )
}

/// clap's usage error on one line, like every other error: its message and tips, without the
/// usage block.
fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut line = String::new();
    for part in text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
    {
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    format!("stochseg: error: {line} (see --help)")
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOCHSEG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},ort=warn")));
    // colours only on a terminal: log files and engines' captured stderr stay plain text
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_target(false).init(),
    }
}

/// The files a command wrote, one per line on stdout (the only thing it prints there).
fn print_paths(files: &[PathBuf]) {
    for f in files {
        println!("{}", f.display());
    }
}

fn dispatch(cli: &Cli, command: &Command) -> Result<(), Error> {
    match command {
        Command::Run(args) => run_case(cli, args),
        Command::Validate(args) => validate(cli, args),
        Command::Summarize { out_dir } => {
            let (summary, files) = stochseg::summarize::summarize(out_dir)?;
            let t = &summary.totals;
            tracing::info!(
                cases = t.cases,
                ok = t.ok,
                failed = t.failed,
                blobs = t.blobs,
                "cohort summarized"
            );
            print_paths(&files);
            Ok(())
        }
        Command::Evaluate(args) => {
            let v = args.lesion_min_volume_mm3;
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::LesionMinVolume { volume_mm3: v }.into());
            }
            let mut opts =
                stochseg::evaluate::EvaluateOptions::new(args.cohort.clone(), args.gt.clone());
            opts.gt_pattern = args.gt_pattern.clone();
            opts.bootstrap = args.bootstrap;
            opts.seed = args.seed;
            opts.lesion_rule = stochseg::lesionwise::LesionRule {
                gt_dilation: args.gt_dilation,
                min_volume_mm3: args.lesion_min_volume_mm3,
            };
            if let Some(out) = &args.out {
                opts.out = out.clone();
            }
            let (evaluation, files) = stochseg::evaluate::evaluate(&opts)?;
            let t = &evaluation.totals;
            tracing::info!(
                cases = t.cases,
                blobs = t.blobs,
                true_blobs = t.true_blobs,
                mean_dice = t.mean_dice,
                mean_lesion_dice = t.mean_lesion_dice,
                "cohort evaluated"
            );
            print_paths(&files);
            Ok(())
        }
        Command::Inspect { model } => {
            let backend = stochseg::infer::onnx_runtime(stochseg::infer::SessionOptions {
                library: cli.ort_lib.clone(),
                plan: stochseg::infer::ProviderPlan::cpu_only(),
                threads: stochseg::infer::Threads::ONE,
                batch_size: 1,
                max_batch_voxels: 1,
            })?;
            let info = backend.describe(model)?;
            print!(
                "{}",
                stochseg::yaml::to_string(&info).map_err(|reason| ConfigError::Print { reason })?
            );
            Ok(())
        }
        Command::Schema { which } => {
            let kind = match which {
                SchemaChoice::Pipeline => SchemaKind::Pipeline,
                SchemaChoice::Report => SchemaKind::Report,
            };
            print!("{}", kind.text());
            Ok(())
        }
        Command::Pipelines => {
            let list = stochseg::install::installed_pipelines()?;
            let width = list.iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in &list {
                let default = if p.default { " (default)" } else { "" };
                println!("{:<width$}  {}{default}", p.name, p.description);
            }
            Ok(())
        }
        Command::Doctor => {
            stochseg::doctor::doctor(cli.ort_lib.clone(), &mut |check| {
                println!("ok  {}: {}", check.name, check.detail)
            })?;
            tracing::info!("every check passed");
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "stochseg", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out } => write_man_pages(out),
    }
}

/// One page per visible command, generated from the flags' definitions.
fn write_man_pages(out: &std::path::Path) -> Result<(), Error> {
    let failed = |e: std::io::Error| stochseg::output::OutputError::Io {
        path: out.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(out).map_err(failed)?;
    clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), out).map_err(failed)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(failed)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    print_paths(&pages);
    Ok(())
}

/// The pipeline config the flags ask for (a file, a shipped name, the default, or the command
/// line's models), with the flags applied, and where it came from.
fn load_pipeline(
    args: &ConfigArgs,
    write_source_dicom: bool,
    figures: Option<bool>,
) -> Result<(Pipeline, PipelineChoice), Error> {
    let models = args
        .models
        .iter()
        .map(|m| pipeline::parse_model_arg(m))
        .collect::<Result<Vec<_>, _>>()?;
    let device = args
        .device
        .as_deref()
        .map(|d| d.parse::<pipeline::Device>().map_err(ConfigError::Device))
        .transpose()?;
    let choice = install::choose_pipeline(args.pipeline.as_deref(), !models.is_empty())?;
    let base = match &choice.path {
        Some(path) => Pipeline::load(path)?,
        None => Pipeline::from_models(Vec::new()),
    };
    let overrides = Overrides {
        models,
        passes: args.passes,
        sigma: args.sigma,
        seed: args.seed,
        deterministic: args.deterministic,
        compare_deterministic: args.compare_deterministic,
        figures,
        threshold: args.threshold,
        device,
        precision: args.precision.map(Into::into),
        allow_fallback: args.allow_fallback,
        threads: args.threads,
        batch_size: args.batch_size,
        overlap: args.overlap,
        write_source_dicom,
    };
    Ok((base.apply(overrides)?, choice))
}

fn case_spec(
    case: Option<&PathBuf>,
    inputs: &[String],
    channels: &[String],
) -> Result<CaseSpec, ConfigError> {
    if let Some(dir) = case {
        return Ok(CaseSpec::Folder(dir.clone()));
    }
    if inputs.is_empty() {
        return Err(ConfigError::NoCase);
    }
    let mut files = Vec::new();
    for item in inputs {
        let (name, path) = item
            .split_once('=')
            .ok_or_else(|| ConfigError::InputNotNamed { item: item.clone() })?;
        if path.is_empty() {
            return Err(ConfigError::InputWithoutPath { item: item.clone() });
        }
        if !channels.iter().any(|c| c == name) {
            return Err(ConfigError::InputUnknownChannel {
                item: item.clone(),
                name: name.to_string(),
                channels: channels.to_vec(),
            });
        }
        if files.iter().any(|(n, _): &(String, PathBuf)| n == name) {
            return Err(ConfigError::InputTwice {
                name: name.to_string(),
            });
        }
        files.push((name.to_string(), PathBuf::from(path)));
    }
    let ordered = channels
        .iter()
        .map(|c| {
            files
                .iter()
                .find(|(n, _)| n == c)
                .cloned()
                .ok_or_else(|| ConfigError::InputMissing { channel: c.clone() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CaseSpec::Files(ordered))
}

fn run_case(cli: &Cli, args: &RunArgs) -> Result<(), Error> {
    let figures = match (args.figures, args.no_figures) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    let (pipeline, choice) = load_pipeline(&args.config, args.write_source_dicom, figures)?;
    let case = case_spec(args.case.as_ref(), &args.inputs, &pipeline.channels)?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(stochseg::resources::thread_count(
            pipeline.execution.threads,
        ))
        .build_global()
        .ok();
    let request = RunRequest {
        pipeline,
        pipeline_path: choice.path,
        pipeline_source: choice.source,
        case,
        out: args.out.clone(),
        overwrite: args.overwrite,
        ort_lib: cli.ort_lib.clone(),
    };
    let bar = progress_bar(cli);
    let summary = run::run(&request, &mut |event| report_progress(bar.as_ref(), event));
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let summary = summary?;
    tracing::info!(blobs = summary.blobs, out = %summary.out.display(), "finished");
    println!("{}", summary.out.join("report.yaml").display());
    Ok(())
}

/// A progress bar (passes, ETA) on a terminal; none when stderr is not one, with `-q`, or with
/// JSON logs (engines read the log events instead).
fn progress_bar(cli: &Cli) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    let wanted =
        !cli.quiet && matches!(cli.log_format, LogFormat::Text) && std::io::stderr().is_terminal();
    wanted.then(|| {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} passes {pos}/{len} [{wide_bar}] {elapsed} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    })
}

fn report_progress(bar: Option<&indicatif::ProgressBar>, event: Event) {
    match (event, bar) {
        (Event::Pass { done: p, ensemble }, Some(bar)) => {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
            bar.set_message(format!(
                "{ensemble} model {} pass {}",
                p.model + 1,
                p.pass + 1
            ));
        }
        (Event::Pass { done: p, ensemble }, None) => tracing::info!(
            ensemble,
            model = p.model,
            pass = p.pass,
            done = p.done,
            total = p.total,
            seconds = p.noise_seconds + p.inference_seconds,
            "pass done"
        ),
        (Event::StageStart { name }, bar) => {
            log_beside(bar, || tracing::info!(stage = name, "stage start"))
        }
        (Event::StageDone { name, seconds }, bar) => {
            log_beside(bar, || tracing::info!(stage = name, seconds, "stage done"))
        }
    }
}

/// Logs above the progress bar (which is drawn again below the line), or plainly without one.
fn log_beside(bar: Option<&indicatif::ProgressBar>, log: impl FnOnce()) {
    match bar {
        Some(bar) => bar.suspend(log),
        None => log(),
    }
}

fn validate(cli: &Cli, args: &ValidateArgs) -> Result<(), Error> {
    let (pipeline, choice) = load_pipeline(&args.config, false, None)?;
    let case = (args.case.is_some() || !args.inputs.is_empty())
        .then(|| case_spec(args.case.as_ref(), &args.inputs, &pipeline.channels))
        .transpose()?;
    let validation =
        stochseg::validate::validate(&pipeline, &choice, case.as_ref(), cli.ort_lib.clone())?;
    match args.format {
        ValidateFormat::Yaml => print!(
            "{}",
            stochseg::yaml::to_string(&validation)
                .map_err(|reason| ConfigError::Print { reason })?
        ),
        ValidateFormat::Text => print!("{}", validation.text()),
    }
    Ok(())
}
