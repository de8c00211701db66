//! The command line's definitions (clap): the global flags, the commands and their flags, and
//! how the flags become the library's plain values (`cli_config::ConfigFlags`, `Overrides`,
//! `EvaluateOptions`). Nothing here checks a value; `stochseg::cli_config` does.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use stochseg::cli_config::{self, ConfigFlags};
use stochseg::evaluate::EvaluateOptions;
use stochseg::pipeline::{self, ConfigError, Overrides};
use stochseg::schema::SchemaKind;

#[derive(Parser)]
#[command(
    name = "stochseg",
    version,
    disable_version_flag = true,
    about = "Uncertainty-aware brain-tumor segmentation with a stochastic ONNX U-Net ensemble"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Print the version; with -v also the ONNX Runtime library found, its version and
    /// execution providers, and the data folder.
    #[arg(short = 'V', long)]
    pub version: bool,
    /// Less output on stderr (errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More output on stderr (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// ONNX Runtime library (libonnxruntime.so.*); see docs/models.md for the search order.
    #[arg(long, global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
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
pub struct EvaluateArgs {
    /// Folder holding one finished run output per case (<folder>/report.json, labels.nii.gz).
    pub cohort: PathBuf,
    /// Ground-truth folder.
    #[arg(long, value_name = "DIR")]
    pub gt: PathBuf,
    /// Path of a case's ground truth under --gt; {case} = report case id, {folder} = run folder.
    #[arg(long, default_value = "{case}/{case}-seg.nii.gz")]
    pub gt_pattern: String,
    /// Where evaluation.yaml and the CSVs go (default: the cohort folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Bootstrap resamples for the 95% intervals.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Lesion-wise rule: dilations of the GT (18-neighbourhood) that group nearby GT components
    /// into one lesion and decide matches (BraTS: 3 glioma/SSA/paediatric, 1 meningioma/metastases).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub gt_dilation: usize,
    /// Lesion-wise rule: GT lesions of at most this volume leave the score (BraTS: 50, 2 for
    /// metastases).
    #[arg(long, default_value_t = 50.0, value_name = "MM3")]
    lesion_min_volume_mm3: f64,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PrecisionChoice {
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
pub enum SchemaChoice {
    Pipeline,
    Report,
}

#[derive(Args)]
pub struct ConfigArgs {
    /// Pipeline config: a YAML file, or a shipped pipeline's name (`stochseg pipelines`).
    /// Without it and without --model: the shipped brats-goat-stochastic.
    #[arg(long, value_name = "YAML|NAME")]
    pub pipeline: Option<PathBuf>,
    /// Model to use, replacing the config's models (repeatable); PATH or PATH:DxHxW.
    #[arg(long = "model", value_name = "PATH[:DxHxW]")]
    pub models: Vec<String>,
    /// Passes per model (stochastic mode).
    #[arg(long)]
    pub passes: Option<usize>,
    /// Noise standard deviation in z-score units.
    #[arg(long, allow_negative_numbers = true)]
    pub sigma: Option<f32>,
    /// Seed for every random draw.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Deterministic ensemble: no noise, one pass per model.
    #[arg(long)]
    pub deterministic: bool,
    /// Also run the deterministic ensemble (same models, no noise, one pass each) and report
    /// it beside the stochastic one (report `comparison`).
    #[arg(long, conflicts_with = "deterministic")]
    pub compare_deterministic: bool,
    /// Threshold on the aggregated logit.
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f32>,
    /// cpu (ONNX Runtime's own provider), openvino, cuda[:N] or tensorrt[:N] (replaces the
    /// config's provider list).
    #[arg(long)]
    pub device: Option<String>,
    /// OpenVINO's precision: f32 (matches the CPU provider) or bf16 (CPUs with AVX512_BF16 or
    /// AMX).
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionChoice>,
    /// Fall back to the next configured provider when one cannot be had.
    #[arg(long)]
    pub allow_fallback: bool,
    /// Threads (default: the CPU quota).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Patches per model call.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Window overlap in [0, 1).
    #[arg(long)]
    pub overlap: Option<f64>,
}

#[derive(Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Case folder whose headers size the estimate (no voxel is read).
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    pub case: Option<PathBuf>,
    /// One channel: NAME=PATH (repeatable), as for `run`.
    #[arg(long = "input", value_name = "NAME=PATH")]
    pub inputs: Vec<String>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ValidateFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    Text,
    Yaml,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Case folder with BraTS 2024 names (<case>-t1n.nii.gz, -t1c, -t2w, -t2f).
    #[arg(long, value_name = "DIR", conflicts_with = "inputs")]
    pub case: Option<PathBuf>,
    /// One channel: NAME=PATH (repeatable), e.g. --input t1n=a.nii.gz.
    #[arg(long = "input", value_name = "NAME=PATH")]
    pub inputs: Vec<String>,
    /// Output folder (created atomically).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace an existing output folder.
    #[arg(long)]
    pub overwrite: bool,
    /// Write PNG figures into OUT/figures/ (outputs.figures).
    #[arg(long, conflicts_with = "no_figures")]
    pub figures: bool,
    /// No figures, whatever the pipeline config says.
    #[arg(long)]
    pub no_figures: bool,
    /// Also write the input channels as DICOM MR series (OUT/source-dicom/) that the DICOM SEG
    /// references (NIfTI input only).
    #[arg(long)]
    pub write_source_dicom: bool,
}

impl From<SchemaChoice> for SchemaKind {
    fn from(c: SchemaChoice) -> Self {
        match c {
            SchemaChoice::Pipeline => SchemaKind::Pipeline,
            SchemaChoice::Report => SchemaKind::Report,
        }
    }
}

impl ConfigArgs {
    /// The flags that pick the pipeline config.
    pub fn flags(&self) -> ConfigFlags<'_> {
        ConfigFlags {
            pipeline: self.pipeline.as_deref(),
            models: &self.models,
            device: self.device.as_deref(),
        }
    }

    /// The values that replace the config's (the models and the device come with
    /// [`ConfigArgs::flags`]).
    pub fn overrides(&self, write_source_dicom: bool, figures: Option<bool>) -> Overrides {
        Overrides {
            passes: self.passes,
            sigma: self.sigma,
            seed: self.seed,
            deterministic: self.deterministic,
            compare_deterministic: self.compare_deterministic,
            figures,
            threshold: self.threshold,
            precision: self.precision.map(Into::into),
            allow_fallback: self.allow_fallback,
            threads: self.threads,
            batch_size: self.batch_size,
            overlap: self.overlap,
            write_source_dicom,
            ..Overrides::default()
        }
    }
}

impl RunArgs {
    /// `--figures` (Some(true)) or `--no-figures` (Some(false)); None keeps the config's.
    pub fn figures(&self) -> Option<bool> {
        match (self.figures, self.no_figures) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

impl EvaluateArgs {
    /// The options of `stochseg::evaluate::evaluate`.
    pub fn options(&self) -> Result<EvaluateOptions, ConfigError> {
        let lesion_rule = cli_config::lesion_rule(self.gt_dilation, self.lesion_min_volume_mm3)?;
        let mut opts = EvaluateOptions::new(self.cohort.clone(), self.gt.clone());
        opts.gt_pattern = self.gt_pattern.clone();
        opts.bootstrap = self.bootstrap;
        opts.seed = self.seed;
        opts.lesion_rule = lesion_rule;
        if let Some(out) = &self.out {
            opts.out = out.clone();
        }
        Ok(opts)
    }
}
