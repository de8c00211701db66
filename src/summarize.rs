//! The cohort summary: one row per case folder of an output tree (`OUT/<case>/report.json`, as
//! `make batch`, Snakemake or CWL leave it), written as `OUT/cohort-summary.csv` and
//! `OUT/cohort-summary.yaml` (with cohort totals). Failed cases come from the markers `make batch`
//! writes beside the case folders, `OUT/.logs/<case>.failed` (lines `exit_code: N` and
//! `error: <the run's error line>`); a marker wins over a stale report of an earlier run.
//!
//! Per case: case id, status (`ok` / `failed`), blob count, total blob volume (mm^3), the
//! confidence distribution (min / median / max of the blobs' mean logit; blobs with a positive
//! mean logit; blobs with pass agreement >= 0.5), the execution providers that ran, the run's total
//! and ensemble seconds. Reports are read as [`crate::report::Report`]s (`report::read`): one that is
//! not a stochseg report, or lacks a field its version requires, is refused (exit 3) with the file
//! and the field; fields this build does not know are ignored, and version 1 reports are read.
//! Both files are written atomically (a temporary file in `OUT`, renamed).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::io::InputError;
use crate::output::OutputError;
use crate::stats;

pub const CSV_NAME: &str = "cohort-summary.csv";
pub const YAML_NAME: &str = "cohort-summary.yaml";
/// Folder of `make batch`'s per-case logs and failure markers.
pub const LOG_DIR: &str = ".logs";

/// One case of the cohort.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaseRow {
    /// The case id of the report (the output folder's name for a failed case).
    pub case_id: String,
    /// The output folder's name.
    pub folder: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<CaseResult>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
}

/// What a successful run found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaseResult {
    pub blobs: usize,
    pub volume_mm3: f64,
    pub confidence: Confidence,
    pub execution_providers: Vec<String>,
    /// The run's `timings_s.total` and `timings_s.ensemble` (absent when the report has none).
    pub total_s: Option<f64>,
    pub ensemble_s: Option<f64>,
}

/// The distribution of blob confidences (mean logits).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Confidence {
    pub mean_logit_min: Option<f64>,
    pub mean_logit_median: Option<f64>,
    pub mean_logit_max: Option<f64>,
    /// Blobs with mean logit > 0.
    pub positive_mean_logit: usize,
    /// Blobs found by at least half the passes (pass agreement >= 0.5).
    pub pass_agreement_at_least_half: usize,
}

/// The whole cohort.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub cases: Vec<CaseRow>,
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Totals {
    pub cases: usize,
    pub ok: usize,
    pub failed: usize,
    pub blobs: usize,
    pub volume_mm3: f64,
    /// Over every blob of the cohort.
    pub confidence: Confidence,
    pub execution_providers: Vec<String>,
    pub total_s: f64,
    pub ensemble_s: f64,
}

/// One blob's figures, as read from a report.
#[derive(Debug, Clone, Copy)]
struct BlobFigures {
    volume_mm3: f64,
    mean_logit: f64,
    pass_agreement: f64,
}

/// Collects the cohort under `out_dir`, writes both files and returns their paths.
pub fn summarize(out_dir: &Path) -> Result<(Summary, [PathBuf; 2]), Error> {
    let summary = collect(out_dir)?;
    let csv = write_atomic(out_dir, CSV_NAME, &to_csv(&summary))?;
    let yaml_text = crate::yaml::to_string(&summary).map_err(|reason| OutputError::Io {
        path: out_dir.join(YAML_NAME),
        reason,
    })?;
    let yaml = write_atomic(out_dir, YAML_NAME, yaml_text.as_bytes())?;
    Ok((summary, [csv, yaml]))
}

/// Reads every `<case>/report.json` and failure marker under `out_dir`.
pub fn collect(out_dir: &Path) -> Result<Summary, Error> {
    let entries = std::fs::read_dir(out_dir).map_err(|_| InputError::NotFound {
        path: out_dir.to_path_buf(),
    })?;
    let mut rows: BTreeMap<String, CaseRow> = BTreeMap::new();
    let mut blobs_of: BTreeMap<String, Vec<BlobFigures>> = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let report = entry.path().join("report.json");
        if name.starts_with('.') || !report.is_file() {
            continue;
        }
        let (row, blobs) = read_report(&report, &name)?;
        rows.insert(name.clone(), row);
        blobs_of.insert(name, blobs);
    }
    for (folder, (exit_code, error)) in read_markers(&out_dir.join(LOG_DIR))? {
        let case_id = rows
            .get(&folder)
            .map(|r| r.case_id.clone())
            .unwrap_or_else(|| folder.clone());
        blobs_of.remove(&folder);
        rows.insert(
            folder.clone(),
            CaseRow {
                case_id,
                folder,
                status: Status::Failed,
                exit_code,
                error,
                result: None,
            },
        );
    }
    if rows.is_empty() {
        return Err(InputError::Format {
            path: out_dir.to_path_buf(),
            reason: "no <case>/report.json and no failure marker found".into(),
        }
        .into());
    }
    let all_blobs: Vec<BlobFigures> = blobs_of.into_values().flatten().collect();
    let cases: Vec<CaseRow> = rows.into_values().collect();
    let totals = totals(&cases, &all_blobs);
    Ok(Summary { cases, totals })
}

fn format_error(path: &Path, reason: impl Into<String>) -> InputError {
    InputError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_report(path: &Path, folder: &str) -> Result<(CaseRow, Vec<BlobFigures>), Error> {
    let report = crate::report::read(path)?;
    let blobs: Vec<BlobFigures> = report
        .blobs
        .iter()
        .map(|b| BlobFigures {
            volume_mm3: b.volume_mm3,
            mean_logit: b.mean_logit,
            pass_agreement: b.pass_agreement,
        })
        .collect();
    let providers: BTreeSet<String> = report
        .models
        .iter()
        .map(|m| m.execution_provider.clone())
        .collect();
    let result = CaseResult {
        blobs: blobs.len(),
        volume_mm3: blobs.iter().map(|b| b.volume_mm3).sum(),
        confidence: confidence(&blobs),
        execution_providers: providers.into_iter().collect(),
        total_s: report.timings_s.get("total").copied(),
        ensemble_s: report.timings_s.get("ensemble").copied(),
    };
    let row = CaseRow {
        case_id: report.case.id,
        folder: folder.to_string(),
        status: Status::Ok,
        exit_code: None,
        error: None,
        result: Some(result),
    };
    Ok((row, blobs))
}

/// What a failure marker says: the exit code and the error line.
type Marker = (Option<i32>, Option<String>);

/// `OUT/.logs/<case>.failed` markers: folder name to what it says.
fn read_markers(dir: &Path) -> Result<Vec<(String, Marker)>, InputError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(folder) = name.strip_suffix(".failed") else {
            continue;
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| format_error(&path, e.to_string()))?;
        out.push((folder.to_string(), parse_marker(&text)));
    }
    Ok(out)
}

/// `exit_code: N` and `error: TEXT` lines of a failure marker (either may be missing).
fn parse_marker(text: &str) -> Marker {
    let mut code = None;
    let mut error = None;
    for line in text.lines() {
        match line.split_once(':') {
            Some(("exit_code", v)) => code = v.trim().parse().ok(),
            Some(("error", v)) if !v.trim().is_empty() => error = Some(v.trim().to_string()),
            _ => {}
        }
    }
    (code, error)
}

fn confidence(blobs: &[BlobFigures]) -> Confidence {
    let mut logits: Vec<f64> = blobs.iter().map(|b| b.mean_logit).collect();
    logits.sort_by(f64::total_cmp);
    Confidence {
        mean_logit_min: logits.first().copied(),
        mean_logit_median: stats::median(&logits),
        mean_logit_max: logits.last().copied(),
        positive_mean_logit: blobs.iter().filter(|b| b.mean_logit > 0.0).count(),
        pass_agreement_at_least_half: blobs.iter().filter(|b| b.pass_agreement >= 0.5).count(),
    }
}

fn totals(cases: &[CaseRow], blobs: &[BlobFigures]) -> Totals {
    let results: Vec<&CaseResult> = cases.iter().filter_map(|c| c.result.as_ref()).collect();
    let providers: BTreeSet<String> = results
        .iter()
        .flat_map(|r| r.execution_providers.iter().cloned())
        .collect();
    Totals {
        cases: cases.len(),
        ok: cases.iter().filter(|c| c.status == Status::Ok).count(),
        failed: cases.iter().filter(|c| c.status == Status::Failed).count(),
        blobs: results.iter().map(|r| r.blobs).sum(),
        volume_mm3: results.iter().map(|r| r.volume_mm3).sum(),
        confidence: confidence(blobs),
        execution_providers: providers.into_iter().collect(),
        total_s: results.iter().filter_map(|r| r.total_s).sum(),
        ensemble_s: results.iter().filter_map(|r| r.ensemble_s).sum(),
    }
}

/// The CSV columns, one row per case (totals are in the YAML).
pub const CSV_COLUMNS: [&str; 15] = [
    "case_id",
    "folder",
    "status",
    "exit_code",
    "error",
    "blobs",
    "volume_mm3",
    "mean_logit_min",
    "mean_logit_median",
    "mean_logit_max",
    "blobs_mean_logit_gt_0",
    "blobs_pass_agreement_ge_0_5",
    "execution_providers",
    "total_s",
    "ensemble_s",
];

/// The summary as CSV (RFC 4180; empty fields where a value does not apply).
pub fn to_csv(summary: &Summary) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    // writing into a Vec cannot fail
    let _ = w.write_record(CSV_COLUMNS);
    for c in &summary.cases {
        let r = c.result.as_ref();
        let record = [
            c.case_id.clone(),
            c.folder.clone(),
            match c.status {
                Status::Ok => "ok".into(),
                Status::Failed => "failed".into(),
            },
            c.exit_code.map(|x| x.to_string()).unwrap_or_default(),
            c.error.clone().unwrap_or_default(),
            r.map(|r| r.blobs.to_string()).unwrap_or_default(),
            opt(r.map(|r| r.volume_mm3)),
            opt(r.and_then(|r| r.confidence.mean_logit_min)),
            opt(r.and_then(|r| r.confidence.mean_logit_median)),
            opt(r.and_then(|r| r.confidence.mean_logit_max)),
            r.map(|r| r.confidence.positive_mean_logit.to_string())
                .unwrap_or_default(),
            r.map(|r| r.confidence.pass_agreement_at_least_half.to_string())
                .unwrap_or_default(),
            r.map(|r| r.execution_providers.join(";"))
                .unwrap_or_default(),
            opt(r.and_then(|r| r.total_s)),
            opt(r.and_then(|r| r.ensemble_s)),
        ];
        let _ = w.write_record(&record);
    }
    w.into_inner().unwrap_or_default()
}

/// Writes `dir/name` through a temporary file in `dir` and a rename.
fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<PathBuf, OutputError> {
    let path = dir.join(name);
    let io = |e: std::io::Error| OutputError::Io {
        path: path.clone(),
        reason: e.to_string(),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(contents).map_err(io)?;
    // readable like the rest of the output tree (a temporary file starts as 0600)
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o644);
        tmp.as_file().set_permissions(mode).map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(&path).map_err(|e| io(e.error))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, blobs: &[(f64, f64, f64)], provider: &str) -> String {
        let mut v = crate::report::sample();
        let blob = v["blobs"][0].clone();
        v["blobs"] = blobs
            .iter()
            .enumerate()
            .map(|(i, &(volume, logit, agreement))| {
                let mut b = blob.clone();
                b["id"] = serde_json::json!(i + 1);
                b["volume_mm3"] = serde_json::json!(volume);
                b["mean_logit"] = serde_json::json!(logit);
                b["pass_agreement"] = serde_json::json!(agreement);
                b
            })
            .collect();
        v["case"]["id"] = serde_json::json!(id);
        let model = v["models"][0].clone();
        v["models"] = serde_json::json!([model.clone(), model]);
        v["models"][0]["execution_provider"] = serde_json::json!(provider);
        v["models"][1]["execution_provider"] = serde_json::json!("CPUExecutionProvider");
        v.to_string()
    }

    fn case(dir: &Path, folder: &str, text: &str) {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        std::fs::write(dir.join(folder).join("report.json"), text).unwrap();
    }

    #[test]
    fn collects_cases_failures_and_totals() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        case(
            d,
            "a",
            &report(
                "A-1",
                &[(10.0, 3.0, 1.0), (2.0, -0.5, 0.4), (1.0, 1.0, 0.5)],
                "CUDAExecutionProvider",
            ),
        );
        case(d, "b", &report("B-1", &[], "CPUExecutionProvider"));
        // a stale report of an earlier run, then a failed re-run: the marker wins
        case(
            d,
            "c",
            &report("C-1", &[(5.0, 2.0, 1.0)], "CPUExecutionProvider"),
        );
        std::fs::create_dir(d.join(LOG_DIR)).unwrap();
        std::fs::write(
            d.join(LOG_DIR).join("c.failed"),
            "exit_code: 3\nerror: stochseg: error: x.nii.gz: file is truncated\n",
        )
        .unwrap();
        std::fs::write(d.join(LOG_DIR).join("e.failed"), "exit_code: 4\n").unwrap();
        std::fs::write(d.join(LOG_DIR).join("a.log"), "ok\n").unwrap();
        // staging folders and loose files are not cases
        case(d, ".a.partial-1", &report("X", &[], "x"));

        let s = collect(d).unwrap();
        let folders: Vec<&str> = s.cases.iter().map(|c| c.folder.as_str()).collect();
        assert_eq!(folders, ["a", "b", "c", "e"]);
        let a = s.cases[0].result.as_ref().unwrap();
        assert_eq!((a.blobs, a.volume_mm3), (3, 13.0));
        assert_eq!(a.confidence.mean_logit_median, Some(1.0));
        assert_eq!(a.confidence.positive_mean_logit, 2);
        assert_eq!(a.confidence.pass_agreement_at_least_half, 2);
        assert_eq!(
            a.execution_providers,
            ["CPUExecutionProvider", "CUDAExecutionProvider"]
        );
        assert_eq!(
            s.cases[1].result.as_ref().unwrap().confidence,
            Confidence::default()
        );
        let c = &s.cases[2];
        assert_eq!(
            (c.case_id.as_str(), c.status, c.exit_code),
            ("C-1", Status::Failed, Some(3))
        );
        assert!(c.error.as_deref().unwrap().contains("truncated") && c.result.is_none());
        assert_eq!(
            (s.cases[3].case_id.as_str(), s.cases[3].error.as_ref()),
            ("e", None)
        );
        let t = &s.totals;
        assert_eq!((t.cases, t.ok, t.failed, t.blobs), (4, 2, 2, 3));
        assert_eq!((t.total_s, t.ensemble_s), (5.0, 4.0));
        assert_eq!((a.total_s, a.ensemble_s), (Some(2.5), Some(2.0)));
        assert_eq!(t.confidence.mean_logit_max, Some(3.0));
    }

    #[test]
    fn writes_both_files_atomically_and_quotes_csv() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        case(
            d,
            "a",
            &report(
                "A,\"1\"",
                &[(1.0, 2.0, 1.0), (1.0, 4.0, 1.0)],
                "CPUExecutionProvider",
            ),
        );
        let (s, [csv, yaml]) = summarize(d).unwrap();
        assert_eq!(
            s.cases[0]
                .result
                .as_ref()
                .unwrap()
                .confidence
                .mean_logit_median,
            Some(3.0)
        );
        let text = std::fs::read_to_string(csv).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next().unwrap(), CSV_COLUMNS.join(","));
        assert!(lines
            .next()
            .unwrap()
            .starts_with("\"A,\"\"1\"\"\",a,ok,,,2,2,2,3,4,2,2,"));
        let parsed = crate::yaml::parse(&std::fs::read_to_string(yaml).unwrap()).unwrap();
        assert_eq!(parsed["totals"]["blobs"], 2);
        // no temporary file is left
        let names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn empty_or_missing_folder_and_bad_report_are_input_errors() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            collect(tmp.path()),
            Err(Error::Input(InputError::Format { .. }))
        ));
        assert!(matches!(
            collect(&tmp.path().join("nope")),
            Err(Error::Input(InputError::NotFound { .. }))
        ));
        case(tmp.path(), "a", "{not json");
        let e = collect(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains("report.json") && e.contains("not a stochseg report"),
            "{e}"
        );
        // a report without a field the summary reads: refused, never read as 0
        let mut v: serde_json::Value =
            serde_json::from_str(&report("A", &[(1.0, 2.0, 1.0)], "x")).unwrap();
        v["blobs"][0]
            .as_object_mut()
            .unwrap()
            .remove("pass_agreement");
        case(tmp.path(), "a", &v.to_string());
        let e = collect(tmp.path()).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::ExitCode::Input);
        assert!(
            e.to_string()
                .ends_with("a/report.json: blobs[0]: missing field `pass_agreement`"),
            "{e}"
        );
    }
}
