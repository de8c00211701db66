//! The project's JSON Schemas (written in YAML, shipped in `schemas/`, embedded in the binary)
//! and validation of JSON values against them, with errors that name the offending key path.

use std::sync::OnceLock;

use jsonschema::Validator;

pub const PIPELINE_SCHEMA: &str = include_str!("../schemas/pipeline.schema.yaml");
pub const REPORT_SCHEMA: &str = include_str!("../schemas/report.schema.yaml");

/// Which schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    Pipeline,
    Report,
}

impl SchemaKind {
    pub fn text(self) -> &'static str {
        match self {
            SchemaKind::Pipeline => PIPELINE_SCHEMA,
            SchemaKind::Report => REPORT_SCHEMA,
        }
    }

    fn validator(self) -> &'static Validator {
        static PIPELINE: OnceLock<Validator> = OnceLock::new();
        static REPORT: OnceLock<Validator> = OnceLock::new();
        let cell = match self {
            SchemaKind::Pipeline => &PIPELINE,
            SchemaKind::Report => &REPORT,
        };
        cell.get_or_init(|| {
            // the embedded schemas are tested to compile (see tests below): a proven invariant
            let value = crate::yaml::parse(self.text()).expect("embedded schema is valid YAML");
            jsonschema::validator_for(&value).expect("embedded schema compiles")
        })
    }
}

/// Validates `instance`; on failure returns one line per problem, each led by its key path
/// (e.g. `/ensemble/sigma: -1 is less than the minimum of 0`).
pub fn validate(kind: SchemaKind, instance: &serde_json::Value) -> Result<(), Vec<String>> {
    let problems: Vec<String> = kind
        .validator()
        .iter_errors(instance)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = if path.is_empty() {
                "/".to_string()
            } else {
                path
            };
            crate::text::escape_controls(&format!("{path}: {e}"))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_compile() {
        for kind in [SchemaKind::Pipeline, SchemaKind::Report] {
            let _ = kind.validator();
        }
    }

    #[test]
    fn errors_name_the_key_path() {
        let bad = serde_json::json!({"models": [{"path": "a.onnx"}], "ensemble": {"sigma": -1}});
        let errs = validate(SchemaKind::Pipeline, &bad).unwrap_err();
        assert!(errs[0].starts_with("/ensemble/sigma"), "{errs:?}");
        let unknown = serde_json::json!({"models": [{"path": "a.onnx"}], "ensembel": {}});
        let errs = validate(SchemaKind::Pipeline, &unknown).unwrap_err();
        assert!(errs[0].contains("ensembel"), "{errs:?}");
    }
}
