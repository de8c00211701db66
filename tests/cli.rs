//! Integration tests of the binary's contract with workflow engines: exit codes, one-line
//! errors, the schemas it prints, and the execution-provider policy on a machine without a GPU.
//! Runs the real binary in temporary folders. Tests that run models need ONNX Runtime: `make
//! setup` installs it into the checkout's `.venv`, where the binary finds it (and `make test`
//! also exports ORT_DYLIB_PATH).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stochseg"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn error_line(o: &Output) -> String {
    let text = stderr(o);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("stochseg: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {text}");
    lines[0].to_string()
}

fn run_small(out: &Path, extra: &[&str]) -> Output {
    let root = root();
    bin()
        .args(["-q", "run", "--model"])
        .arg(root.join("onnx/unet-p32.onnx"))
        .arg("--case")
        .arg(root.join("tests/fixtures/case-small"))
        .arg("--out")
        .arg(out)
        .args(["--passes", "1"])
        .args(extra)
        .output()
        .expect("binary runs")
}

fn assert_no_output(dir: &Path, name: &str) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(name))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// What `stochseg schema WHICH` prints, parsed as YAML (here, with the YAML crate directly).
fn printed_schema(which: &str) -> serde_json::Value {
    let o = bin().args(["schema", which]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).expect("the schema is UTF-8");
    serde_norway::from_str(&text).expect("the printed schema parses as YAML")
}

/// A YAML file of the checkout as a JSON value.
fn yaml_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The printed schemas are the shipped files, and each compiles as a draft 2020-12 JSON Schema
/// that says what the binary does: the printed pipeline schema accepts the shipped pipelines,
/// which `stochseg validate` accepts, and rejects the configs the binary rejects (exit 2, the
/// key path named); a report the binary writes validates against the printed report schema,
/// and a corrupted copy does not.
#[test]
fn schemas_print_and_parse() {
    let root = root();
    for which in ["pipeline", "report"] {
        let printed = printed_schema(which);
        let shipped = yaml_file(&root.join(format!("schemas/{which}.schema.yaml")));
        assert_eq!(
            printed, shipped,
            "`stochseg schema {which}` differs from the file"
        );
        assert_eq!(
            printed["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{which}"
        );
    }
    let pipeline = jsonschema::validator_for(&printed_schema("pipeline")).expect("compiles");
    for entry in std::fs::read_dir(root.join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let errors: Vec<String> = pipeline
                .iter_errors(&yaml_file(&path))
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            let o = bin().arg("validate").arg("--pipeline").arg(&path).output();
            let o = o.unwrap();
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = root.join("onnx/unet-p32.onnx");
    let bad = [
        ("ensemble: {sigma: -1}", "/ensemble/sigma"),
        ("blobs: {conectivity: 6}", "conectivity"),
        ("orientation: LPX", "/orientation"),
        ("execution: {providers: [gpu]}", "/execution/providers/0"),
        ("inference: {overlap: 1.0}", "/inference/overlap"),
    ];
    for (i, (section, key)) in bad.iter().enumerate() {
        let text = format!("models: [{{path: {}}}]\n{section}\n", model.display());
        let config: serde_json::Value = serde_norway::from_str(&text).unwrap();
        assert!(
            !pipeline.is_valid(&config),
            "the printed schema accepts {section}"
        );
        let path = tmp.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&path, &text).unwrap();
        let o = bin().arg("validate").arg("--pipeline").arg(&path).output();
        let o = o.unwrap();
        assert_eq!(o.status.code(), Some(2), "{section}: {}", stderr(&o));
        assert!(
            error_line(&o).contains(key),
            "{section}: {}",
            error_line(&o)
        );
    }
    let report = jsonschema::validator_for(&printed_schema("report")).expect("compiles");
    let out = tmp.path().join("out");
    let o = run_small(&out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let mut written: serde_json::Value = serde_json::from_str(&text).unwrap();
    let errors: Vec<String> = report
        .iter_errors(&written)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "the written report: {errors:?}");
    written["ensemble"]["sigma"] = serde_json::json!(-0.5);
    assert!(
        !report.is_valid(&written),
        "a negative sigma passes the report schema"
    );
}

#[test]
fn usage_errors_exit_2() {
    // the default pipeline needs a case
    let o = bin().args(["run", "--out", "x"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(error_line(&o).contains("--case"));
    let o = bin().args(["frobnicate"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = bin().output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        error_line(&o).contains("a command is required: run, validate"),
        "{}",
        stderr(&o)
    );
    let o = bin()
        .args(["validate", "--pipeline", "no-such-pipeline"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let line = error_line(&o);
    assert!(
        line.contains("no shipped pipeline of that name")
            && line.contains("brats-goat-deterministic, brats-goat-regions, brats-goat-stochastic"),
        "{line}"
    );
}

/// `--version` prints the package version; with -v also the library, providers and data folder
/// of this checkout.
#[test]
fn version_short_and_verbose() {
    let o = bin().arg("--version").output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("stochseg {}\n", env!("CARGO_PKG_VERSION"))
    );
    let o = bin().args(["-v", "--version"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let data = format!("data: {}\n", root().canonicalize().unwrap().display());
    assert!(text.contains(&data), "{text}");
    assert!(text.contains("(checkout)"), "{text}");
    assert!(
        text.contains("onnxruntime: 1.") && text.contains("CPUExecutionProvider"),
        "{text}"
    );
}

#[test]
fn config_errors_name_the_key_path() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("p.yaml");
    let validate = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        bin()
            .arg("validate")
            .arg("--pipeline")
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let o = validate("models: [{path: m.onnx}]\nensemble: {sigma: -1}\n");
    assert_eq!(o.status.code(), Some(2));
    let line = error_line(&o);
    assert!(
        line.contains("p.yaml") && line.contains("/ensemble/sigma"),
        "{line}"
    );
    let o = validate("models: [{path: m.onnx}]\nblobs: {conectivity: 6}\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(error_line(&o).contains("conectivity"));
}

#[test]
fn missing_onnx_runtime_names_what_was_tried() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run_small(
        &out,
        &["--ort-lib", "/nonexistent/libonnxruntime.so.1.31.1"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let line = error_line(&o);
    assert!(
        line.contains("/nonexistent/libonnxruntime.so.1.31.1") && line.contains("make setup"),
        "{line}"
    );
    assert!(!out.exists());
    assert_no_output(tmp.path(), "out");
}

#[test]
fn cuda_without_a_gpu_build_fails_with_exit_4() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run_small(&out, &["--device", "cuda:0"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let line = error_line(&o);
    assert!(
        line.contains("CUDAExecutionProvider cannot be used"),
        "{line}"
    );
    assert!(!out.exists());
    assert_no_output(tmp.path(), "out");
}

#[test]
fn allowed_fallback_runs_on_cpu_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run_small(
        &out,
        &[
            "--device",
            "tensorrt",
            "--allow-fallback",
            "--deterministic",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(
        report["models"][0]["execution_provider"],
        "CPUExecutionProvider"
    );
    assert_eq!(
        report["runtime"]["providers_requested"],
        serde_json::json!(["tensorrt", "cpu"])
    );
}

#[test]
fn existing_output_is_refused_then_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let o = run_small(&out, &["--deterministic"]);
    assert_eq!(o.status.code(), Some(5));
    assert!(error_line(&o).contains("--overwrite"));
    assert!(out.join("keep.txt").exists());
    let o = run_small(&out, &["--deterministic", "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("keep.txt").exists() && out.join("report.yaml").exists());
}
