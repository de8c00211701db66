//! The `blobs` section: the threshold and connectivity that make blobs, and the per-blob
//! decision thresholds on a blob's confidence.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Blobs {
    pub threshold: f32,
    pub connectivity: u8,
    pub min_voxels: usize,
    /// Per-blob decision thresholds on the blob's confidence (mean aggregated logit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisions: Option<Decisions>,
}

impl Default for Blobs {
    fn default() -> Self {
        Blobs {
            threshold: 0.0,
            connectivity: 26,
            min_voxels: 1,
            decisions: None,
        }
    }
}

/// A blob with confidence >= `accept` is accepted, one below `reject` rejected, the rest go to
/// review (`reject <= accept`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decisions {
    pub accept: f64,
    pub reject: f64,
}

/// The decision on one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Accept,
    Review,
    Reject,
}

impl Decisions {
    /// The decision for a blob whose confidence is `confidence`.
    pub fn decide(&self, confidence: f64) -> Decision {
        if confidence >= self.accept {
            Decision::Accept
        } else if confidence < self.reject {
            Decision::Reject
        } else {
            Decision::Review
        }
    }
}
