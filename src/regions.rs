//! Tumor regions: what each model's output channels are, which regions a run reports, and how a
//! model's stitched channels become one logit map per region.
//!
//! A model declares its outputs (`pipeline::OutputDecl`, from the config or the model's
//! `outputs` metadata): one logit of one region, softmax classes with label values, or sigmoid
//! regions. A model with several output channels and no declaration is refused: its channel 0
//! is never read by default. The run's regions come from the config's `regions`, else from the
//! declarations (the BraTS regions WT = 1|2|3, TC = 1|3, ET = 3 for softmax classes over the
//! BraTS labels; the declared regions of sigmoid and one-logit models).
//!
//! Every pass yields one logit map per region the model provides: a one-logit or sigmoid
//! model's channel, or, for a softmax model, the log-odds of the region's classes against the
//! others, `log(sum_{c in R} e^{l_c}) - log(sum_{c not in R} e^{l_c})`, computed per voxel with
//! each sum's largest logit factored out (so no exponential overflows, and neither sum can
//! vanish), from the class logits the sliding window stitched (as nnU-Net stitches logits
//! before the softmax). A softmax model provides region R when every label of R is one of its
//! classes.
//!
//! The label map in the BraTS convention (0 background, 1 NETC, 2 SNFH, 3 ET, or the declared
//! classes' labels) comes from the per-voxel argmax of the class probabilities averaged over all
//! passes when every model is softmax over the same classes, else by the nested rule on the
//! regions' aggregated logits when the regions form a chain (ET in TC in WT) whose steps each add
//! one label: the smallest region above the threshold gives its label, then each larger one the
//! label it adds. Maps are `[k, z, y, x]` (channels) and `[z, y, x]` (regions).

use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis, Zip};

use crate::pipeline::{ClassDecl, OutputDecl, RegionDecl};

/// The BraTS 2023-2024 regions, as nnU-Net's region-based training defines them.
pub const BRATS_REGIONS: [(&str, &[u8]); 3] = [("WT", &[1, 2, 3]), ("TC", &[1, 3]), ("ET", &[3])];

/// Names of the BraTS 2023-2024 labels.
pub const BRATS_LABELS: [(u8, &str); 3] = [(1, "NETC"), (2, "SNFH"), (3, "ET")];

/// The region an undeclared one-logit model provides: the whole tumor, any non-zero label.
pub const DEFAULT_REGION: &str = "WT";

/// A declaration that does not fit the model, or regions no model can give (exit code 4 when
/// a model is named, as it is the model that cannot be run).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("{model}: output has {channels} channels and no declaration of what they are; set `outputs` of this model in the pipeline config (softmax classes or sigmoid regions, see docs/configuration.md) or `output_channel` to read one of them")]
    Undeclared { model: String, channels: String },
    #[error(
        "{model}: the outputs declaration has {declared} channels, the model's output has {actual}"
    )]
    ChannelCount {
        model: String,
        declared: usize,
        actual: usize,
    },
    #[error("{model}: metadata 'outputs' is not a valid declaration: {reason}")]
    Metadata { model: String, reason: String },
    #[error("{model}: output_channel selects one channel, so the outputs declaration must be a single logit")]
    OneChannel { model: String },
    #[error("{model}: {what}")]
    Declaration { model: String, what: String },
    #[error("{model}: region '{region}' covers labels {declared} in the model's declaration and {configured} in the pipeline's regions")]
    LabelsDiffer {
        model: String,
        region: String,
        declared: String,
        configured: String,
    },
    #[error(
        "{model}: declares region '{region}', which is not one of the pipeline's regions ({known})"
    )]
    UnknownRegion {
        model: String,
        region: String,
        known: String,
    },
    #[error("{model}: provides none of the pipeline's regions ({known})")]
    ProvidesNothing { model: String, known: String },
    #[error("region '{region}': no model provides it (labels {labels}; no softmax model has all of these classes and no sigmoid or one-logit model declares it)")]
    NotProvided { region: String, labels: String },
}

/// A model's declaration as the run uses it, with its channel count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub outputs: OutputDecl,
    pub channels: usize,
}

/// What a model says of its outputs, in order of precedence: the config's `outputs`, the
/// model's `outputs` metadata (JSON), else one logit of the default region when the output has
/// one channel or `output_channel` picks one. `channels` is the output's channel count when the
/// graph fixes it.
pub fn declare(
    model: &str,
    configured: Option<&OutputDecl>,
    metadata: Option<&str>,
    output_channel: Option<usize>,
    channels: Option<usize>,
) -> Result<Declared, RegionError> {
    let from_metadata = metadata
        .map(|text| {
            serde_json::from_str::<OutputDecl>(text).map_err(|e| RegionError::Metadata {
                model: model.to_string(),
                reason: e.to_string(),
            })
        })
        .transpose()?;
    let outputs = match (configured.cloned().or(from_metadata), output_channel) {
        (Some(decl), _) => decl,
        (None, Some(_)) => default_logit(),
        (None, None) if channels == Some(1) => default_logit(),
        (None, None) => {
            return Err(RegionError::Undeclared {
                model: model.to_string(),
                channels: channels.map_or("a dynamic number of".to_string(), |c| c.to_string()),
            })
        }
    };
    check_declaration(model, &outputs)?;
    let declared = match &outputs {
        OutputDecl::Logit(_) => 1,
        OutputDecl::Softmax(classes) => classes.len(),
        OutputDecl::Sigmoid(regions) => regions.len(),
    };
    match (output_channel, channels) {
        (Some(_), _) if declared != 1 => {
            return Err(RegionError::OneChannel {
                model: model.to_string(),
            })
        }
        (None, Some(actual)) if actual != declared => {
            return Err(RegionError::ChannelCount {
                model: model.to_string(),
                declared,
                actual,
            })
        }
        _ => {}
    }
    Ok(Declared {
        outputs,
        channels: declared,
    })
}

fn default_logit() -> OutputDecl {
    OutputDecl::Logit(RegionDecl {
        name: DEFAULT_REGION.to_string(),
        labels: None,
    })
}

/// What the schema cannot say: unique class labels and names, unique region names.
fn check_declaration(model: &str, outputs: &OutputDecl) -> Result<(), RegionError> {
    let bad = |what: String| RegionError::Declaration {
        model: model.to_string(),
        what,
    };
    match outputs {
        OutputDecl::Softmax(classes) => {
            for (i, c) in classes.iter().enumerate() {
                if let Some(other) = classes[..i].iter().find(|o| o.label == c.label) {
                    return Err(bad(format!(
                        "softmax classes '{}' and '{}' have the same label {}",
                        other.name, c.name, c.label
                    )));
                }
                if classes[..i].iter().any(|o| o.name == c.name) {
                    return Err(bad(format!("softmax class '{}' is declared twice", c.name)));
                }
            }
            if classes.len() < 2 {
                return Err(bad("a softmax needs at least two classes".to_string()));
            }
        }
        OutputDecl::Sigmoid(regions) => {
            for (i, r) in regions.iter().enumerate() {
                if regions[..i].iter().any(|o| o.name == r.name) {
                    return Err(bad(format!(
                        "sigmoid region '{}' is declared twice",
                        r.name
                    )));
                }
            }
        }
        OutputDecl::Logit(_) => {}
    }
    Ok(())
}

/// A region the run reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub name: String,
    /// Label values it covers; `None`: every non-zero label.
    pub labels: Option<Vec<u8>>,
}

impl Region {
    fn from_decl(d: &RegionDecl) -> Region {
        Region {
            name: d.name.clone(),
            labels: d.labels.as_ref().map(|l| sorted(l)),
        }
    }

    /// Whether label value `label` (non-zero) lies in the region.
    pub fn covers(&self, label: u8) -> bool {
        label != 0 && self.labels.as_ref().is_none_or(|l| l.contains(&label))
    }
}

fn sorted(labels: &[u8]) -> Vec<u8> {
    let mut l = labels.to_vec();
    l.sort_unstable();
    l.dedup();
    l
}

/// How one model's stitched channels become region logits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// Channel i is the logit of region `regions[i]`.
    Channels(Vec<usize>),
    /// Softmax classes: for each region the model provides, which channels are in it.
    Softmax(Vec<(usize, Vec<bool>)>),
}

/// How the BraTS-convention label map is made.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelRule {
    /// Argmax of the class probabilities averaged over every pass; class i has label
    /// `labels[i]`.
    Argmax { labels: Vec<u8> },
    /// The nested rule: `steps` from the smallest region up, each `(region, label it adds)`.
    Nested { steps: Vec<(usize, u8)> },
}

/// The regions of a run and how every model feeds them.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionPlan {
    pub regions: Vec<Region>,
    /// One per model, in model order.
    pub heads: Vec<Head>,
    /// The label map's rule and the names of its labels (`(label, name)`, ascending); none for
    /// a run of one region.
    pub label_map: Option<(LabelRule, Vec<(u8, String)>)>,
}

impl RegionPlan {
    /// The plan for models with `declared` outputs (`(model name, declaration)`), and the
    /// config's `regions` (empty: derived from the declarations).
    pub fn new(
        configured: &[RegionDecl],
        declared: &[(String, OutputDecl)],
    ) -> Result<RegionPlan, RegionError> {
        let regions = if configured.is_empty() {
            derived_regions(declared)
        } else {
            configured.iter().map(Region::from_decl).collect()
        };
        let heads = declared
            .iter()
            .map(|(name, decl)| head(name, decl, &regions))
            .collect::<Result<Vec<_>, _>>()?;
        for (r, region) in regions.iter().enumerate() {
            if !heads.iter().any(|h| h.provides(r)) {
                return Err(RegionError::NotProvided {
                    region: region.name.clone(),
                    labels: region
                        .labels
                        .as_ref()
                        .map_or("any non-zero".to_string(), |l| {
                            l.iter().map(u8::to_string).collect::<Vec<_>>().join("|")
                        }),
                });
            }
        }
        let label_map = (regions.len() > 1)
            .then(|| label_rule(&regions, declared))
            .flatten();
        Ok(RegionPlan {
            regions,
            heads,
            label_map,
        })
    }

    /// Indices of the models that feed region `r`, in model order.
    pub fn feeders(&self, r: usize) -> Vec<usize> {
        (0..self.heads.len())
            .filter(|&m| self.heads[m].provides(r))
            .collect()
    }
}

impl Head {
    /// Whether this model provides region `r`.
    pub fn provides(&self, r: usize) -> bool {
        match self {
            Head::Channels(regions) => regions.contains(&r),
            Head::Softmax(provided) => provided.iter().any(|(p, _)| *p == r),
        }
    }

    /// The region logits of one pass's stitched channels `[k, z, y, x]`, as `(region, map)`.
    pub fn region_logits(&self, channels: Array4<f32>) -> Vec<(usize, Array3<f32>)> {
        match self {
            Head::Channels(regions) if regions.len() == 1 => {
                vec![(regions[0], channels.index_axis_move(Axis(0), 0))]
            }
            Head::Channels(regions) => regions
                .iter()
                .zip(channels.outer_iter())
                .map(|(&r, c)| (r, c.to_owned()))
                .collect(),
            Head::Softmax(provided) => provided
                .iter()
                .map(|(r, inside)| (*r, log_odds(channels.view(), inside)))
                .collect(),
        }
    }
}

/// Per voxel, `log(sum_{c in} e^{l_c}) - log(sum_{c out} e^{l_c})` of the class logits `[k, z,
/// y, x]`, each sum with its own largest logit factored out.
pub fn log_odds(classes: ArrayView4<f32>, inside: &[bool]) -> Array3<f32> {
    let shape = classes.raw_dim();
    let mut out = Array3::<f32>::zeros((shape[1], shape[2], shape[3]));
    let lanes = classes.lanes(Axis(0));
    Zip::from(&mut out).and(lanes).par_for_each(|o, logits| {
        let (mut max_in, mut max_out) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for (&l, &is_in) in logits.iter().zip(inside) {
            if is_in {
                max_in = max_in.max(l);
            } else {
                max_out = max_out.max(l);
            }
        }
        let (mut sum_in, mut sum_out) = (0.0f32, 0.0f32);
        for (&l, &is_in) in logits.iter().zip(inside) {
            if is_in {
                sum_in += (l - max_in).exp();
            } else {
                sum_out += (l - max_out).exp();
            }
        }
        *o = (max_in - max_out) + (sum_in.ln() - sum_out.ln());
    });
    out
}

/// Per voxel, the softmax of the class logits `[k, z, y, x]`, added to `sums` (`[k, z, y, x]`).
pub fn add_softmax(classes: ArrayView4<f32>, sums: &mut Array4<f32>) {
    let lanes = classes.lanes(Axis(0));
    Zip::from(sums.lanes_mut(Axis(0)))
        .and(lanes)
        .par_for_each(|mut sum, logits| {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let total: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
            for (s, &l) in sum.iter_mut().zip(logits.iter()) {
                *s += (l - max).exp() / total;
            }
        });
}

/// The regions a run reports when the config names none.
fn derived_regions(declared: &[(String, OutputDecl)]) -> Vec<Region> {
    let mut regions: Vec<Region> = Vec::new();
    let mut add = |region: Region| match regions.iter_mut().find(|r| r.name == region.name) {
        Some(known) if known.labels.is_none() => known.labels = region.labels,
        Some(_) => {}
        None => regions.push(region),
    };
    for (_, decl) in declared {
        match decl {
            OutputDecl::Logit(r) => add(Region::from_decl(r)),
            OutputDecl::Sigmoid(rs) => rs.iter().map(Region::from_decl).for_each(&mut add),
            OutputDecl::Softmax(classes) => softmax_regions(classes).into_iter().for_each(&mut add),
        }
    }
    // the BraTS regions first, in their order, then the others as declared
    let brats = |r: &Region| BRATS_REGIONS.iter().position(|(n, _)| *n == r.name);
    regions.sort_by_key(|r| brats(r).unwrap_or(BRATS_REGIONS.len()));
    regions
}

/// The regions of a softmax over `classes`: the BraTS regions when the classes hold the BraTS
/// labels, else one region per non-background class.
fn softmax_regions(classes: &[ClassDecl]) -> Vec<Region> {
    let has = |label: u8| classes.iter().any(|c| c.label == label);
    if BRATS_LABELS.iter().all(|(l, _)| has(*l)) {
        return BRATS_REGIONS
            .iter()
            .map(|(name, labels)| Region {
                name: name.to_string(),
                labels: Some(labels.to_vec()),
            })
            .collect();
    }
    classes
        .iter()
        .filter(|c| c.label != 0)
        .map(|c| Region {
            name: c.name.clone(),
            labels: Some(vec![c.label]),
        })
        .collect()
}

/// The head of one model, checked against the run's regions.
fn head(model: &str, decl: &OutputDecl, regions: &[Region]) -> Result<Head, RegionError> {
    let known = || {
        regions
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let head = match decl {
        OutputDecl::Logit(r) => Head::Channels(vec![region_index(model, r, regions, known)?]),
        OutputDecl::Sigmoid(rs) => Head::Channels(
            rs.iter()
                .map(|r| region_index(model, r, regions, known))
                .collect::<Result<_, _>>()?,
        ),
        OutputDecl::Softmax(classes) => Head::Softmax(
            regions
                .iter()
                .enumerate()
                .filter_map(|(r, region)| softmax_membership(classes, region).map(|m| (r, m)))
                .collect(),
        ),
    };
    let provides_any = (0..regions.len()).any(|r| head.provides(r));
    if !provides_any {
        return Err(RegionError::ProvidesNothing {
            model: model.to_string(),
            known: known(),
        });
    }
    Ok(head)
}

/// Which classes lie in `region`, when the softmax has every label of it (and some other class
/// stays outside).
fn softmax_membership(classes: &[ClassDecl], region: &Region) -> Option<Vec<bool>> {
    let inside: Vec<bool> = classes.iter().map(|c| region.covers(c.label)).collect();
    let complete = match &region.labels {
        Some(labels) => labels.iter().all(|l| classes.iter().any(|c| c.label == *l)),
        None => inside.iter().any(|&i| i),
    };
    (complete && inside.iter().any(|&i| !i)).then_some(inside)
}

/// The index of declared region `r` among the run's regions; its labels must agree.
fn region_index(
    model: &str,
    r: &RegionDecl,
    regions: &[Region],
    known: impl Fn() -> String,
) -> Result<usize, RegionError> {
    let index = regions
        .iter()
        .position(|x| x.name == r.name)
        .ok_or_else(|| RegionError::UnknownRegion {
            model: model.to_string(),
            region: r.name.clone(),
            known: known(),
        })?;
    let declared = r.labels.as_ref().map(|l| sorted(l));
    if declared.is_some() && declared != regions[index].labels {
        return Err(RegionError::LabelsDiffer {
            model: model.to_string(),
            region: r.name.clone(),
            declared: labels_text(declared.as_deref()),
            configured: labels_text(regions[index].labels.as_deref()),
        });
    }
    Ok(index)
}

/// Label values as the messages write them: `1|2|3`, or `any non-zero`.
fn labels_text(labels: Option<&[u8]>) -> String {
    labels.map_or("any non-zero".to_string(), |l| {
        l.iter().map(u8::to_string).collect::<Vec<_>>().join("|")
    })
}

/// The label map's rule, if the regions allow one, with the names of its labels.
fn label_rule(
    regions: &[Region],
    declared: &[(String, OutputDecl)],
) -> Option<(LabelRule, Vec<(u8, String)>)> {
    let classes = common_softmax(declared);
    if let Some(classes) = classes {
        let labels = classes.iter().map(|c| c.label).collect();
        let names = label_names(
            classes.iter().filter(|c| c.label != 0).map(|c| c.label),
            declared,
        );
        return Some((LabelRule::Argmax { labels }, names));
    }
    let steps = nested_steps(regions)?;
    let names = label_names(steps.iter().map(|&(_, l)| l), declared);
    Some((LabelRule::Nested { steps }, names))
}

/// The classes every model shares, when every model is a softmax over the same classes.
fn common_softmax(declared: &[(String, OutputDecl)]) -> Option<&[ClassDecl]> {
    let mut common: Option<&[ClassDecl]> = None;
    for (_, decl) in declared {
        let OutputDecl::Softmax(classes) = decl else {
            return None;
        };
        match common {
            Some(c) if c != classes.as_slice() => return None,
            _ => common = Some(classes),
        }
    }
    common
}

/// The regions as a chain from the smallest up, each adding one label to the one inside it.
fn nested_steps(regions: &[Region]) -> Option<Vec<(usize, u8)>> {
    let mut order: Vec<(usize, &Vec<u8>)> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| r.labels.as_ref().map(|l| (i, l)))
        .collect::<Option<_>>()?;
    order.sort_by_key(|(_, l)| l.len());
    let mut steps = Vec::new();
    let mut inner: &[u8] = &[];
    for (r, labels) in order {
        let added: Vec<u8> = labels
            .iter()
            .copied()
            .filter(|l| !inner.contains(l))
            .collect();
        let nested = inner.iter().all(|l| labels.contains(l));
        match added.as_slice() {
            [one] if nested => steps.push((r, *one)),
            _ => return None,
        }
        inner = labels;
    }
    Some(steps)
}

/// Names of label values: from a softmax declaration, else the BraTS names, else `label N`.
fn label_names(
    labels: impl Iterator<Item = u8>,
    declared: &[(String, OutputDecl)],
) -> Vec<(u8, String)> {
    let from_classes = |label: u8| {
        declared.iter().find_map(|(_, d)| match d {
            OutputDecl::Softmax(classes) => classes
                .iter()
                .find(|c| c.label == label)
                .map(|c| c.name.clone()),
            _ => None,
        })
    };
    let brats = |label: u8| {
        BRATS_LABELS
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, n)| n.to_string())
    };
    let mut names: Vec<(u8, String)> = labels
        .map(|l| {
            let name = from_classes(l)
                .or_else(|| brats(l))
                .unwrap_or_else(|| format!("label {l}"));
            (l, name)
        })
        .collect();
    names.sort_by_key(|(l, _)| *l);
    names
}

/// The label map of the argmax rule: per voxel, the label of the class with the largest
/// averaged probability (`means` `[k, z, y, x]`; the first class wins a tie).
pub fn argmax_labels(labels: &[u8], means: ArrayView4<f32>) -> Array3<u8> {
    let shape = means.raw_dim();
    let mut out = Array3::<u8>::zeros((shape[1], shape[2], shape[3]));
    Zip::from(&mut out)
        .and(means.lanes(Axis(0)))
        .par_for_each(|o, p| {
            let mut best = 0;
            for (i, &v) in p.iter().enumerate() {
                if v > p[best] {
                    best = i;
                }
            }
            *o = labels[best];
        });
    out
}

/// The label map of the nested rule on the regions' aggregated logits: each step's label where
/// its region is above `threshold`, the smallest region's step last so that it wins.
pub fn nested_labels(
    steps: &[(usize, u8)],
    region_logits: &[ArrayView3<f32>],
    threshold: f32,
) -> Array3<u8> {
    let mut out = Array3::<u8>::zeros(region_logits[0].raw_dim());
    for &(r, label) in steps.iter().rev() {
        Zip::from(&mut out)
            .and(&region_logits[r])
            .par_for_each(|o, &v| {
                if v > threshold {
                    *o = label;
                }
            });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(labels: &[(&str, u8)]) -> OutputDecl {
        OutputDecl::Softmax(
            labels
                .iter()
                .map(|(n, l)| ClassDecl {
                    name: n.to_string(),
                    label: *l,
                })
                .collect(),
        )
    }

    fn brats4() -> OutputDecl {
        classes(&[("background", 0), ("NETC", 1), ("SNFH", 2), ("ET", 3)])
    }

    fn region(name: &str, labels: Option<&[u8]>) -> RegionDecl {
        RegionDecl {
            name: name.to_string(),
            labels: labels.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn a_multi_channel_model_needs_a_declaration() {
        let e = declare("m.onnx", None, None, None, Some(4)).unwrap_err();
        assert!(matches!(e, RegionError::Undeclared { .. }), "{e}");
        assert!(e.to_string().contains("4 channels"), "{e}");
        let e = declare("m.onnx", None, None, None, None).unwrap_err();
        assert!(e.to_string().contains("dynamic"), "{e}");
        let one = declare("m.onnx", None, None, None, Some(1)).unwrap();
        assert_eq!(one.outputs, OutputDecl::Logit(region("WT", None)));
        let picked = declare("m.onnx", None, None, Some(2), Some(4)).unwrap();
        assert_eq!(picked.channels, 1);
    }

    #[test]
    fn declarations_come_from_config_then_metadata_and_must_fit() {
        let meta = r#"{"softmax": [{"name": "bg", "label": 0}, {"name": "t", "label": 1}]}"#;
        let d = declare("m", None, Some(meta), None, Some(2)).unwrap();
        assert_eq!(d.channels, 2);
        let configured = brats4();
        let d = declare("m", Some(&configured), Some(meta), None, Some(4)).unwrap();
        assert_eq!(d.outputs, configured);
        let e = declare("m", Some(&configured), None, None, Some(3)).unwrap_err();
        assert!(
            matches!(
                e,
                RegionError::ChannelCount {
                    declared: 4,
                    actual: 3,
                    ..
                }
            ),
            "{e}"
        );
        let e = declare("m", None, Some("{\"softmax\": 3}"), None, Some(4)).unwrap_err();
        assert!(matches!(e, RegionError::Metadata { .. }), "{e}");
        let twice = classes(&[("bg", 0), ("a", 1), ("b", 1)]);
        let e = declare("m", Some(&twice), None, None, Some(3)).unwrap_err();
        assert!(e.to_string().contains("same label 1"), "{e}");
        let e = declare("m", Some(&brats4()), None, Some(0), Some(4)).unwrap_err();
        assert!(matches!(e, RegionError::OneChannel { .. }), "{e}");
    }

    #[test]
    fn brats_softmax_gives_three_nested_regions_and_the_argmax_rule() {
        let plan = RegionPlan::new(&[], &[("a".into(), brats4()), ("b".into(), brats4())]).unwrap();
        let names: Vec<&str> = plan.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["WT", "TC", "ET"]);
        assert_eq!(
            plan.heads[0],
            Head::Softmax(vec![
                (0, vec![false, true, true, true]),
                (1, vec![false, true, false, true]),
                (2, vec![false, false, false, true]),
            ])
        );
        let (rule, names) = plan.label_map.unwrap();
        assert_eq!(
            rule,
            LabelRule::Argmax {
                labels: vec![0, 1, 2, 3]
            }
        );
        assert_eq!(names[0], (1, "NETC".to_string()));
    }

    #[test]
    fn a_mixed_ensemble_feeds_each_region_from_the_models_that_provide_it() {
        let wt_only = OutputDecl::Logit(region("WT", None));
        let declared = vec![
            ("wt".into(), wt_only),
            ("a".into(), brats4()),
            ("b".into(), brats4()),
        ];
        let plan = RegionPlan::new(&[], &declared).unwrap();
        assert_eq!(plan.regions[0].labels, Some(vec![1, 2, 3]));
        assert_eq!(plan.feeders(0), [0, 1, 2]);
        assert_eq!(plan.feeders(1), [1, 2]);
        assert_eq!(plan.feeders(2), [1, 2]);
        let (rule, _) = plan.label_map.unwrap();
        assert_eq!(
            rule,
            LabelRule::Nested {
                steps: vec![(2, 3), (1, 1), (0, 2)]
            }
        );
    }

    #[test]
    fn one_logit_models_keep_one_region_and_no_label_map() {
        let declared = vec![("a".into(), OutputDecl::Logit(region("WT", None)))];
        let plan = RegionPlan::new(&[], &declared).unwrap();
        assert_eq!(plan.regions.len(), 1);
        assert!(plan.label_map.is_none());
        assert_eq!(plan.heads, [Head::Channels(vec![0])]);
    }

    #[test]
    fn regions_nobody_provides_and_unknown_regions_are_errors() {
        let configured = [region("WT", Some(&[1, 2, 3])), region("XT", Some(&[4]))];
        let e = RegionPlan::new(&configured, &[("a".into(), brats4())]).unwrap_err();
        assert!(
            matches!(&e, RegionError::NotProvided { region, .. } if region == "XT"),
            "{e}"
        );
        let sigmoid = OutputDecl::Sigmoid(vec![region("WT", None), region("QQ", None)]);
        let e = RegionPlan::new(&configured[..1], &[("s".into(), sigmoid)]).unwrap_err();
        assert!(matches!(e, RegionError::UnknownRegion { .. }), "{e}");
        let bad_labels = OutputDecl::Logit(region("WT", Some(&[1])));
        let e = RegionPlan::new(&configured[..1], &[("s".into(), bad_labels)]).unwrap_err();
        assert!(matches!(e, RegionError::LabelsDiffer { .. }), "{e}");
        let two = classes(&[("bg", 0), ("x", 5)]);
        let e = RegionPlan::new(&configured[..1], &[("t".into(), two)]).unwrap_err();
        assert!(matches!(e, RegionError::ProvidesNothing { .. }), "{e}");
    }

    /// log-odds against a direct float64 computation, also for logits far apart.
    #[test]
    fn log_odds_are_the_log_sum_exp_difference() {
        let values = [
            [0.5f32, -1.0, 2.0, 0.25],
            [100.0, -100.0, 3.0, 90.0],
            [-80.0, -80.0, -80.0, -80.0],
        ];
        let inside = [false, true, false, true];
        let classes = Array4::from_shape_fn((4, 1, 1, 3), |(k, _, _, v)| values[v][k]);
        let got = log_odds(classes.view(), &inside);
        for (v, row) in values.iter().enumerate() {
            let lse = |sel: bool| {
                row.iter()
                    .zip(inside)
                    .filter(|(_, i)| *i == sel)
                    .map(|(&l, _)| f64::from(l).exp())
                    .sum::<f64>()
                    .ln()
            };
            let want = lse(true) - lse(false);
            let have = f64::from(got[[0, 0, v]]);
            assert!(
                (have - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{v}: {have} vs {want}"
            );
        }
    }

    #[test]
    fn nested_rule_gives_the_smallest_region_s_label() {
        let wt = Array3::from_shape_vec((1, 1, 4), vec![1.0f32, 1.0, 1.0, -1.0]).unwrap();
        let tc = Array3::from_shape_vec((1, 1, 4), vec![1.0f32, 1.0, -1.0, -1.0]).unwrap();
        let et = Array3::from_shape_vec((1, 1, 4), vec![1.0f32, -1.0, -1.0, 1.0]).unwrap();
        let steps = [(2, 3), (1, 1), (0, 2)];
        let map = nested_labels(&steps, &[wt.view(), tc.view(), et.view()], 0.0);
        // an ET voxel outside WT is still ET: the smallest region above the threshold wins
        assert_eq!(map.into_raw_vec_and_offset().0, vec![3, 1, 2, 3]);
    }
}
