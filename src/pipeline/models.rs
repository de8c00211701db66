//! The models of a pipeline (`models` in the config) and `--model PATH[:DxHxW]` as given on the
//! command line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::declarations::OutputDecl;
use super::error::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_size: Option<[usize; 3]>,
    /// Reads this one channel of a multi-channel output as the model's one logit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_channel: Option<usize>,
    /// What the output channels are; wins over the model's `outputs` metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<OutputDecl>,
}

/// Parses `PATH[:DxHxW]` as given to `--model`.
pub fn parse_model_arg(arg: &str) -> Result<ModelSpec, ConfigError> {
    let (path, patch) = match arg.rsplit_once(':') {
        Some((p, size)) if looks_like_patch(size) => (p, Some(parse_patch(size)?)),
        _ => (arg, None),
    };
    if path.is_empty() {
        return Err(ConfigError::ModelWithoutPath {
            arg: arg.to_string(),
        });
    }
    Ok(ModelSpec {
        path: PathBuf::from(path),
        name: None,
        patch_size: patch,
        output_channel: None,
        outputs: None,
    })
}

fn looks_like_patch(s: &str) -> bool {
    s.contains('x') && s.chars().all(|c| c.is_ascii_digit() || c == 'x')
}

fn parse_patch(s: &str) -> Result<[usize; 3], ConfigError> {
    let bad = || ConfigError::BadPatchSize {
        text: s.to_string(),
    };
    let parts: Vec<usize> = s
        .split('x')
        .map(|p| p.parse::<usize>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let patch: [usize; 3] = parts.try_into().map_err(|_| bad())?;
    if patch.contains(&0) {
        return Err(bad());
    }
    Ok(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_argument_with_patch() {
        let m = parse_model_arg("a/b.onnx:16x64x64").unwrap();
        assert_eq!(m.patch_size, Some([16, 64, 64]));
        assert_eq!(parse_model_arg("c:/x.onnx").unwrap().patch_size, None);
        assert!(parse_model_arg("m.onnx:16x0x4").is_err());
    }
}
