//! The `stochseg` binary: parses flags (`args`) into library values, sets up logging on
//! stderr, calls the library, and turns the outcome into a documented exit code. No domain logic
//! lives here: `stochseg::cli_config` checks the flags' values.

mod args;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode as ProcessExit;

use args::{Cli, Command, EvaluateArgs, LogFormat, RunArgs, ValidateArgs, ValidateFormat};
use clap::{CommandFactory, Parser};
use stochseg::cli_config;
use stochseg::error::{Error, ExitCode};
use stochseg::pipeline::ConfigError;
use stochseg::run::{self, RunRequest};
use stochseg::schema::SchemaKind;

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
    let mut cmd = Cli::command();
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
        Command::Summarize { out_dir } => summarize(out_dir),
        Command::Evaluate(args) => evaluate(args),
        Command::Inspect { model } => {
            let info = stochseg::infer::inspect(cli.ort_lib.clone(), model)?;
            print!("{}", yaml(&info)?);
            Ok(())
        }
        Command::Schema { which } => {
            print!("{}", SchemaKind::from(*which).text());
            Ok(())
        }
        Command::Pipelines => pipelines(),
        Command::Doctor => {
            stochseg::doctor::doctor(cli.ort_lib.clone(), &mut |check| {
                println!("ok  {}: {}", check.name, check.detail)
            })?;
            tracing::info!("every check passed");
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "stochseg",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man { out } => write_man_pages(out),
    }
}

/// A value as YAML text, for stdout.
fn yaml<T: serde::Serialize>(value: &T) -> Result<String, ConfigError> {
    stochseg::yaml::to_string(value).map_err(|reason| ConfigError::Print { reason })
}

fn summarize(out_dir: &Path) -> Result<(), Error> {
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

fn evaluate(args: &EvaluateArgs) -> Result<(), Error> {
    let (evaluation, files) = stochseg::evaluate::evaluate(&args.options()?)?;
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

/// The shipped pipelines, one per line: name, description, and which is the default.
fn pipelines() -> Result<(), Error> {
    let list = stochseg::install::installed_pipelines()?;
    let width = list.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in &list {
        let default = if p.default { " (default)" } else { "" };
        println!("{:<width$}  {}{default}", p.name, p.description);
    }
    Ok(())
}

/// One page per visible command, generated from the flags' definitions.
fn write_man_pages(out: &Path) -> Result<(), Error> {
    let failed = |e: std::io::Error| stochseg::output::OutputError::Io {
        path: out.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(out).map_err(failed)?;
    clap_mangen::generate_to(Cli::command(), out).map_err(failed)?;
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

fn run_case(cli: &Cli, args: &RunArgs) -> Result<(), Error> {
    let overrides = args
        .config
        .overrides(args.write_source_dicom, args.figures());
    let (pipeline, choice) = cli_config::load_pipeline(args.config.flags(), overrides)?;
    let case = cli_config::case_spec(args.case.as_deref(), &args.inputs, &pipeline.channels)?;
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
    let bar = progress::progress_bar(cli);
    let summary = run::run(&request, &mut |event| {
        progress::report_progress(bar.as_ref(), event)
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let summary = summary?;
    tracing::info!(blobs = summary.blobs, out = %summary.out.display(), "finished");
    println!("{}", summary.out.join("report.yaml").display());
    Ok(())
}

fn validate(cli: &Cli, args: &ValidateArgs) -> Result<(), Error> {
    let overrides = args.config.overrides(false, None);
    let (pipeline, choice) = cli_config::load_pipeline(args.config.flags(), overrides)?;
    let case =
        cli_config::case_spec_if_given(args.case.as_deref(), &args.inputs, &pipeline.channels)?;
    let validation =
        stochseg::validate::validate(&pipeline, &choice, case.as_ref(), cli.ort_lib.clone())?;
    match args.format {
        ValidateFormat::Yaml => print!("{}", yaml(&validation)?),
        ValidateFormat::Text => print!("{}", validation.text()),
    }
    Ok(())
}
