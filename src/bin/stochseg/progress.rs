//! Progress of a run on stderr: a bar (passes, ETA) on a terminal, else one log event per pass
//! and per stage, for workflow engines to read.

use stochseg::run::Event;

use crate::args::{Cli, LogFormat};

/// A progress bar (passes, ETA) on a terminal; none when stderr is not one, with `-q`, or with
/// JSON logs (engines read the log events instead).
pub fn progress_bar(cli: &Cli) -> Option<indicatif::ProgressBar> {
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

pub fn report_progress(bar: Option<&indicatif::ProgressBar>, event: Event) {
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
