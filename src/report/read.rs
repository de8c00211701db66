//! Reading a report back (`report.json`), as `evaluate` and `summarize` do: parsed once into
//! [`Report`], so a missing or mistyped field is refused with the file and the field's path
//! (`blobs[2].mean_logit: invalid type: ...`) instead of read as 0.
//!
//! A report is refused when it is not JSON, not a stochseg report (no object with
//! `tool.name: stochseg` and an integer `schema_version`), of a version this build does not read
//! (newer than [`SCHEMA_VERSION`]), or when a field the version requires is missing or of the
//! wrong type. Fields this build does not know are ignored.
//!
//! Version 1 reports (one tumor logit, before the regions) are read with the version 2 fields
//! they lack set to what a version 1 run did: `region` is `{name: WT, labels: null, models:
//! <every model>}` (every model's one logit fed the whole tumor, any non-zero label), each
//! `models[].outputs` is `{logit: {name: WT}}`, `models[].precision` is `f32` except on
//! TensorRT (whose fp16 setting version 1 did not record: left absent), and `pipeline.source` is `file` when a config
//! was named, else `command-line`; `regions`, `label_map` and `seg.levels` stay
//! absent. `schema_version` keeps the value read.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::types::{Report, SCHEMA_VERSION};
use crate::regions::DEFAULT_REGION;

/// The provider name ONNX Runtime gives TensorRT, as reports record it.
const TENSORRT_PROVIDER: &str = "TensorrtExecutionProvider";

/// Why a report was refused (input rejected, exit code 3). Causes are kept typed and shown in
/// the message.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path}: cannot read: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: not a stochseg report: {reason}")]
    Foreign { path: PathBuf, reason: String },
    #[error(
        "{path}: report schema_version {found}; this stochseg reads versions 1 to {SCHEMA_VERSION}"
    )]
    Version { path: PathBuf, found: u64 },
    #[error("{path}: {field}{cause}", field = field_prefix(.field))]
    Field {
        path: PathBuf,
        /// Path of the field in the report (`blobs[2].mean_logit`), empty for the top level.
        field: String,
        cause: serde_json::Error,
    },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// Reads and checks `path` (a `report.json`).
pub fn read(path: &Path) -> Result<Report, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ReadError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    parse(path, &text)
}

/// A report from its JSON text; `path` names it in messages.
pub fn parse(path: &Path, text: &str) -> Result<Report, ReadError> {
    let foreign = |reason: String| ReadError::Foreign {
        path: path.to_path_buf(),
        reason,
    };
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| foreign(format!("not JSON ({e})")))?;
    let version = check_identity(&value).map_err(foreign)?;
    match version {
        1 => upgrade_v1(&mut value),
        v if v == u64::from(SCHEMA_VERSION) => {}
        found => {
            return Err(ReadError::Version {
                path: path.to_path_buf(),
                found,
            })
        }
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        ReadError::Field {
            path: path.to_path_buf(),
            field: if field == "." { String::new() } else { field },
            cause: e.into_inner(),
        }
    })
}

/// The report's `schema_version`, when the value is a stochseg report at all.
fn check_identity(value: &Value) -> Result<u64, String> {
    let object = value.as_object().ok_or("not a JSON object")?;
    match object.get("tool").and_then(|t| t.get("name")) {
        Some(Value::String(name)) if name == "stochseg" => {}
        Some(other) => return Err(format!("tool.name is {other}, not \"stochseg\"")),
        None => return Err("no tool.name".into()),
    }
    match object.get("schema_version") {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| format!("schema_version is {v}, not a whole number")),
        None => Err("no schema_version".into()),
    }
}

/// Fills the version 2 fields a version 1 report lacks with what a version 1 run did (see the
/// module's documentation). Leaves malformed parts alone for the typed reading to refuse.
fn upgrade_v1(value: &mut Value) {
    let names: Vec<Value> = value["models"]
        .as_array()
        .map(|models| models.iter().map(|m| m["name"].clone()).collect())
        .unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object
            .entry("region")
            .or_insert_with(|| json!({"name": DEFAULT_REGION, "labels": null, "models": names}));
    }
    if let Some(pipeline) = value["pipeline"].as_object_mut() {
        let source = match pipeline.get("config") {
            Some(Value::Null) | None => "command-line",
            Some(_) => "file",
        };
        pipeline.entry("source").or_insert_with(|| json!(source));
    }
    if let Some(models) = value["models"].as_array_mut() {
        for model in models.iter_mut().filter_map(Value::as_object_mut) {
            model
                .entry("outputs")
                .or_insert_with(|| json!({"logit": {"name": DEFAULT_REGION}}));
            let tensorrt = model.get("execution_provider") == Some(&json!(TENSORRT_PROVIDER));
            if !tensorrt {
                model.entry("precision").or_insert_with(|| json!("f32"));
            }
        }
    }
}

/// A complete version 2 report of one region and one blob, as JSON: the unit tests' sample.
#[cfg(test)]
pub(crate) fn sample() -> Value {
    let stats = json!({
        "count": 10, "mean": -1.0, "std": 2.0, "skewness": 0.0, "excess_kurtosis": 0.0,
        "histogram": {"edges": [-5.0, 0.0, 5.0], "counts": [8, 2]}
    });
    let seg_file = json!({
        "file": "seg.dcm", "sop_instance_uid": "1.2.3", "series_instance_uid": "1.2.4",
        "segmentation_type": "BINARY", "frames": 1,
        "segments": [{"number": 1, "label": "tumor", "voxels": 4}]
    });
    json!({
        "schema_version": 2,
        "tool": {"name": "stochseg", "version": "0.1.0"},
        "case": {
            "id": "CASE-1",
            "inputs": [{"channel": "t1n", "path": "case/CASE-1-t1n.nii.gz"}],
            "geometry": {
                "shape_ijk": [4, 4, 4], "spacing_mm": [1.0, 1.0, 1.0], "axis_codes": "LPS",
                "coordinate_system": "LPS",
                "affine_lps": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
                               [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
            }
        },
        "pipeline": {"name": "default", "config": null, "source": "command-line"},
        "runtime": {
            "onnxruntime_version": "1.31.1", "onnxruntime_library": "libonnxruntime.so",
            "providers_requested": ["cpu"], "allow_fallback": false, "threads": 1
        },
        "models": [{
            "name": "m", "path": "m.onnx", "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "patch_size": [16, 32, 32],
            "batch_size": 1, "execution_provider": "CPUExecutionProvider", "precision": "f32", "metadata": {},
            "outputs": {"logit": {"name": "WT"}}
        }],
        "ensemble": {
            "mode": "stochastic", "patches_run": 2, "patches_reused": 0, "passes_per_model": 2,
            "total_passes": 2, "sigma": 0.1, "seed": 0, "noise_region": "volume",
            "noise_on": "host", "aggregation": "mean_logit", "overlap": 0.5,
            "weighting": "gaussian"
        },
        "preprocess": {
            "model_orientation": "RAS", "normalization": "zscore_nonzero", "crop_to_nonzero": true,
            "crop_canonical_zyx": {"start_zyx": [0, 0, 0], "end_zyx": [4, 4, 4]},
            "outside_logit": -20.0, "channel_stats": {"t1n": {"mean": 1.0, "std": 2.0}}
        },
        "thresholds": {"logit": 0.0, "connectivity": 26, "min_voxels": 1},
        "region": {"name": "WT", "labels": null, "models": ["m"]},
        "statistics": {
            "brain_voxels": 10, "positive_voxels": 2, "brain": stats.clone(),
            "positive": stats.clone()
        },
        "uncertainty": {
            "entropy": stats.clone(), "expected_entropy": stats.clone(),
            "mutual_information": stats.clone(), "logit_variance_between": stats.clone(),
            "logit_variance_within": stats
        },
        "blobs": [{
            "id": 1, "voxels": 2, "volume_mm3": 2.0, "centroid_voxel": [1.0, 1.0, 1.0],
            "centroid_mm": [1.0, 1.0, 1.0],
            "bbox": {"min_voxel": [1, 1, 1], "max_voxel": [1, 1, 2]},
            "mean_logit": 3.0, "mean_probability": 0.9, "max_logit": 4.0, "mean_spread": 0.5,
            "mean_entropy": 0.2, "mean_mutual_information": 0.05,
            "mean_logit_variance_between": 1.5, "mean_logit_variance_within": 0.3,
            "model_mean_logits": {"m": 3.0}, "pass_agreement": 1.0, "pass_logit_std": 0.1
        }],
        "outputs": ["labels.nii.gz"],
        "seg": {
            "study_instance_uid": "1.2", "frame_of_reference_uid": "1.3",
            "study_origin": "new", "binary": seg_file, "referenced_series": []
        },
        "timings_s": {"total": 2.5, "ensemble": 2.0},
        "peak_rss_mib": null
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_value(v: &Value) -> Result<Report, ReadError> {
        parse(Path::new("r/report.json"), &v.to_string())
    }

    #[test]
    fn the_sample_is_a_report_that_conforms_to_the_schema() {
        let report = parse_value(&sample()).unwrap();
        assert_eq!(report.blobs[0].mean_logit, 3.0);
        // what it reads is what the schema describes: serialized again, it validates
        let again = serde_json::to_value(&report).unwrap();
        crate::schema::validate(crate::schema::SchemaKind::Report, &again).unwrap();
    }

    #[test]
    fn a_missing_field_is_named_with_its_path() {
        let mut v = sample();
        v["blobs"][0].as_object_mut().unwrap().remove("mean_logit");
        let e = parse_value(&v).unwrap_err().to_string();
        assert_eq!(e, "r/report.json: blobs[0]: missing field `mean_logit`");
        let mut v = sample();
        v.as_object_mut().unwrap().remove("region");
        let e = parse_value(&v).unwrap_err().to_string();
        assert_eq!(e, "r/report.json: missing field `region`");
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_with_its_path() {
        let mut v = sample();
        v["blobs"][0]["voxels"] = json!("two");
        let e = parse_value(&v).unwrap_err().to_string();
        assert!(
            e.starts_with("r/report.json: blobs[0].voxels: invalid type: string \"two\""),
            "{e}"
        );
        let mut v = sample();
        v["ensemble"]["mode"] = json!("sometimes");
        let e = parse_value(&v).unwrap_err().to_string();
        assert!(
            e.starts_with("r/report.json: ensemble.mode: unknown variant"),
            "{e}"
        );
    }

    #[test]
    fn foreign_and_newer_reports_are_refused() {
        let cases = [
            (json!([1, 2]), "not a stochseg report: not a JSON object"),
            (json!({"blobs": []}), "not a stochseg report: no tool.name"),
            (
                json!({"tool": {"name": "other"}, "schema_version": 2}),
                "not a stochseg report: tool.name is \"other\", not \"stochseg\"",
            ),
            (
                json!({"tool": {"name": "stochseg"}}),
                "not a stochseg report: no schema_version",
            ),
        ];
        for (v, message) in cases {
            let e = parse_value(&v).unwrap_err().to_string();
            assert_eq!(e, format!("r/report.json: {message}"));
        }
        let e = parse(Path::new("r.json"), "{oops").unwrap_err().to_string();
        assert!(
            e.starts_with("r.json: not a stochseg report: not JSON"),
            "{e}"
        );
        let mut v = sample();
        v["schema_version"] = json!(3);
        let e = parse_value(&v).unwrap_err().to_string();
        assert_eq!(
            e,
            "r/report.json: report schema_version 3; this stochseg reads versions 1 to 2"
        );
    }

    #[test]
    fn a_version_1_report_reads_as_one_whole_tumor_region() {
        let mut v = sample();
        v["schema_version"] = json!(1);
        let object = v.as_object_mut().unwrap();
        object.remove("region");
        object["models"][0]
            .as_object_mut()
            .unwrap()
            .remove("outputs");
        object["ensemble"]
            .as_object_mut()
            .unwrap()
            .remove("noise_on");
        object["ensemble"]
            .as_object_mut()
            .unwrap()
            .remove("patches_reused");
        let report = parse_value(&v).unwrap();
        assert_eq!(report.schema_version, 1);
        assert_eq!(report.region.name, "WT");
        assert_eq!(report.region.labels, None);
        assert_eq!(report.region.models, ["m"]);
        assert_eq!(
            report.models[0].outputs,
            crate::pipeline::OutputDecl::Logit(crate::pipeline::RegionDecl {
                name: "WT".into(),
                labels: None
            })
        );
        assert_eq!(report.ensemble.noise_on, crate::pipeline::NoiseOn::Host);
        assert!(report.regions.is_none() && report.label_map.is_none());
        // a version 2 report must have them
        let mut v = sample();
        v["models"][0].as_object_mut().unwrap().remove("outputs");
        let e = parse_value(&v).unwrap_err().to_string();
        assert_eq!(e, "r/report.json: models[0]: missing field `outputs`");
    }
}
