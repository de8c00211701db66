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

#[test]
fn schemas_print_and_parse() {
    for which in ["pipeline", "report"] {
        let o = bin().args(["schema", which]).output().unwrap();
        assert!(o.status.success());
        let text = String::from_utf8(o.stdout).unwrap();
        let on_disk =
            std::fs::read_to_string(root().join(format!("schemas/{which}.schema.yaml"))).unwrap();
        assert_eq!(text, on_disk);
    }
}

#[test]
fn usage_errors_exit_2() {
    let o = bin().args(["run", "--out", "x"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(error_line(&o).contains("--pipeline"));
    let o = bin().args(["frobnicate"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
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
