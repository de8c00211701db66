//! Choosing a channel's series: which series of a folder is which channel is decided by
//! `SeriesRule`s (regular expressions on SeriesDescription, SeriesNumber and SeriesInstanceUID;
//! `default_rule` gives the built-in ones for the BraTS channel names). A rule must match
//! exactly one series; a folder with a single series needs none when the caller allows it.

use std::collections::BTreeMap;

use regex::Regex;

use super::discover::{Scan, SeriesFiles};
use super::problem::ChoiceProblem;
use crate::io::InputError;
use crate::pipeline::SeriesRule;

/// Built-in rule for the BraTS channel names: t1n (native T1: T1, T1 pre, MPRAGE, SPGR), t1c
/// (T1 with contrast: T1CE, T1C, T1Gd, T1 post, T1+C, post-contrast MPRAGE), t2w (T2 but not
/// FLAIR, T2*, SWI, DWI) and t2f (FLAIR, T2F, dark fluid; not T1 FLAIR).
pub fn default_rule(channel: &str) -> Option<SeriesRule> {
    const T1: &str = "(t1|mprage|spgr|bravo)";
    const CONTRAST: &str = "(post|contrast|\\+c|gado|(^|[^a-z])(gd|gad|ce|c)([^a-z]|$))";
    let t1c_short = "t1.{0,3}(c|ce|gd|gad)([^a-z]|$)";
    let (include, exclude) = match channel {
        "t1n" => (format!("(?i){T1}"), format!("(?i){t1c_short}|{CONTRAST}|t2|flair")),
        "t1c" => (
            format!("(?i){t1c_short}|{T1}.*{CONTRAST}|{CONTRAST}.*{T1}"),
            "(?i)t2|flair".to_string(),
        ),
        "t2w" => (
            "(?i)t2".to_string(),
            "(?i)flair|t2.{0,3}f([^a-z]|$)|t2.?(\\*|star)|dark.?fluid|(^|[^a-z])(swi|dwi|adc|gre)([^a-z]|$)"
                .to_string(),
        ),
        "t2f" => (
            "(?i)flair|t2.{0,3}f([^a-z]|$)|dark.?fluid".to_string(),
            "(?i)t1".to_string(),
        ),
        _ => return None,
    };
    Some(SeriesRule {
        series_description: Some(include),
        exclude_description: Some(exclude),
        series_number: None,
        series_instance_uid: None,
    })
}

/// The rule that applies to `channel`: the config's, else the built-in one.
pub fn rule_for(configured: &BTreeMap<String, SeriesRule>, channel: &str) -> Option<SeriesRule> {
    configured
        .get(channel)
        .cloned()
        .or_else(|| default_rule(channel))
}

fn describe_rule(rule: &SeriesRule) -> String {
    rule.patterns()
        .iter()
        .map(|(k, p)| format!("{k} /{p}/"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a series satisfies a rule.
fn rule_matches(rule: &SeriesRule, s: &SeriesFiles) -> Result<bool, ChoiceProblem> {
    let test = |pattern: &Option<String>, value: &str| -> Result<Option<bool>, ChoiceProblem> {
        match pattern {
            None => Ok(None),
            Some(p) => Regex::new(p)
                .map(|r| Some(r.is_match(value)))
                .map_err(|source| ChoiceProblem::Pattern {
                    pattern: p.clone(),
                    source,
                }),
        }
    };
    let include = [
        test(&rule.series_description, &s.description)?,
        test(&rule.series_number, &s.number)?,
        test(&rule.series_instance_uid, &s.uid)?,
    ];
    let excluded = test(&rule.exclude_description, &s.description)?.unwrap_or(false);
    Ok(include.iter().all(|m| m.unwrap_or(true)) && !excluded)
}

/// Picks the series of `channel` in `scan`. A folder with one series needs no rule when
/// `sole_ok`; otherwise the rule must match exactly one series.
pub fn choose<'a>(
    scan: &'a Scan,
    channel: &str,
    rule: Option<&SeriesRule>,
    sole_ok: bool,
) -> Result<&'a SeriesFiles, InputError> {
    if sole_ok && scan.series.len() == 1 {
        return Ok(&scan.series[0]);
    }
    let fail = |problem: ChoiceProblem| InputError::DicomSeriesChoice {
        dir: scan.dir.clone(),
        channel: channel.to_string(),
        problem: Box::new(problem),
        found: scan.listing(),
    };
    let channel = channel.to_string();
    let Some(rule) = rule else {
        return Err(fail(ChoiceProblem::NoRule {
            count: scan.series.len(),
            channel,
        }));
    };
    let mut matching = Vec::new();
    for s in &scan.series {
        if rule_matches(rule, s).map_err(&fail)? {
            matching.push(s);
        }
    }
    match matching.len() {
        1 => Ok(matching[0]),
        0 => Err(fail(ChoiceProblem::NoMatch {
            rule: describe_rule(rule),
            channel,
        })),
        count => Err(fail(ChoiceProblem::SeveralMatch {
            count,
            rule: describe_rule(rule),
            channel,
        })),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn series(description: &str, number: &str, uid: &str) -> SeriesFiles {
        SeriesFiles {
            uid: uid.to_string(),
            description: description.to_string(),
            number: number.to_string(),
            slices: Vec::new(),
        }
    }

    fn picks(channel: &str, description: &str) -> bool {
        let rule = default_rule(channel).unwrap();
        rule_matches(&rule, &series(description, "1", "1.2.3")).unwrap()
    }

    #[test]
    fn default_rules_know_common_names() {
        let cases: &[(&str, &[&str])] = &[
            (
                "t1n",
                &[
                    "T1",
                    "t1n",
                    "AX T1 pre",
                    "T1_MPRAGE",
                    "t1_se_tra",
                    "T1W_3D_TFE",
                    "sag T1 SPACE",
                ],
            ),
            (
                "t1c",
                &[
                    "T1CE",
                    "t1c",
                    "T1Gd",
                    "T1 post",
                    "AX T1 POST GD",
                    "T1+C",
                    "t1_mprage_post",
                    "T1W_3D_TFE+C",
                    "post-contrast T1",
                    "T1 CE",
                    "t1_ce",
                ],
            ),
            ("t2w", &["T2", "t2w", "AX T2 TSE", "t2_tse_tra", "T2 FSE"]),
            (
                "t2f",
                &[
                    "FLAIR",
                    "t2f",
                    "AX T2 FLAIR",
                    "t2_tirm_tra_dark-fluid",
                    "T2F",
                ],
            ),
        ];
        let channels = ["t1n", "t1c", "t2w", "t2f"];
        for (channel, names) in cases {
            for name in *names {
                let hits: Vec<&str> = channels
                    .iter()
                    .copied()
                    .filter(|c| picks(c, name))
                    .collect();
                assert_eq!(hits, vec![*channel], "{name:?}");
            }
        }
        for other in [
            "T1 FLAIR",
            "DWI",
            "SWI",
            "T2*",
            "localizer",
            "ADC",
            "T2 star",
        ] {
            let hits: Vec<&str> = channels
                .iter()
                .copied()
                .filter(|c| picks(c, other))
                .collect();
            assert!(hits.is_empty(), "{other}: {hits:?}");
        }
        assert!(default_rule("adc").is_none());
    }

    fn scan_of(series: Vec<SeriesFiles>) -> Scan {
        Scan {
            dir: PathBuf::from("/d"),
            series,
            non_dicom: 0,
            non_image: Vec::new(),
        }
    }

    #[test]
    fn choosing_a_series() {
        let scan = scan_of(vec![
            series("AX T1 pre", "3", "1.2.3"),
            series("AX T1 post Gd", "7", "1.2.7"),
            series("T2", "4", "1.2.4"),
        ]);
        let t1c = choose(&scan, "t1c", default_rule("t1c").as_ref(), true).unwrap();
        assert_eq!(t1c.uid, "1.2.7");
        let by_number = SeriesRule {
            series_number: Some("^3$".into()),
            ..Default::default()
        };
        assert_eq!(
            choose(&scan, "t1n", Some(&by_number), false).unwrap().uid,
            "1.2.3"
        );
        let e = choose(&scan, "t2f", default_rule("t2f").as_ref(), true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/d: channel t2f: no series matches"), "{e}");
        assert!(e.contains("1.2.7 \"AX T1 post Gd\" #7 (0 files)"), "{e}");
        let any_t1 = SeriesRule {
            series_description: Some("T1".into()),
            ..Default::default()
        };
        let e = choose(&scan, "t1n", Some(&any_t1), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 series match"), "{e}");
        let e = choose(&scan, "x", None, true).unwrap_err().to_string();
        assert!(e.contains("no rule"), "{e}");
        // a lone series needs no rule when allowed
        let one = scan_of(vec![series("whatever", "", "9.9")]);
        assert_eq!(choose(&one, "t1n", None, true).unwrap().uid, "9.9");
        assert!(!e.contains('\n'));
    }
}
