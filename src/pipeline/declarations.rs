//! What a model's output channels are and which tumor regions a run reports: the `outputs` key
//! of a model (or its ONNX metadata) and the config's `regions` list. `crate::regions` turns
//! them into a region plan.

use serde::{Deserialize, Serialize};

/// What a model's output channels are (the `outputs` key of a model in the config, or of the
/// ONNX model's metadata as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputDecl {
    /// One channel: the logit of one region.
    Logit(RegionDecl),
    /// Channel i is the logit of class i of a softmax over the channels.
    Softmax(Vec<ClassDecl>),
    /// Channel i is the (sigmoid) logit of region i.
    Sigmoid(Vec<RegionDecl>),
}

/// A region: a name and the label values (of a BraTS-style label map) it covers; no labels
/// means every non-zero label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionDecl {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<u8>>,
}

/// One class of a softmax output: its name and label value (0 is the background).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassDecl {
    pub name: String,
    pub label: u8,
}
