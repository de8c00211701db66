//! DICOM value formatting that the encoder does not do for us: Decimal Strings of at most 16
//! characters, Code Strings, LO truncation, new UIDs (`2.25.<UUID as a decimal integer>`, as
//! PS3.5 B.2 describes) and the date and time stamps of one run.

/// A Decimal String (DS) of at most 16 characters for a finite `v`: fixed-point with as many
/// decimals as fit (trailing zeros dropped), scientific notation only when fixed-point cannot
/// fit. `-0` is written `0`.
pub fn format_ds(v: f64) -> String {
    debug_assert!(v.is_finite());
    for decimals in (0..=15).rev() {
        let s = trim_fraction(format!("{v:.decimals$}"));
        if s.len() <= 16 {
            return s;
        }
    }
    for digits in (0..=9).rev() {
        let s = format!("{v:.digits$e}");
        if s.len() <= 16 {
            return s;
        }
    }
    // unreachable for finite f64: "-1.0e-308" has 9 characters
    format!("{v:.0e}")
}

fn trim_fraction(s: String) -> String {
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s
    }
}

/// True when `s` is a valid Code String: at most 16 of `A-Z 0-9 _` and space.
pub fn is_code_string(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 16
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == ' ')
}

/// A Long String (LO): at most 64 characters, no backslash or control characters.
pub fn long_string(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '\\' && !c.is_control())
        .take(64)
        .collect()
}

/// A new globally unique UID, `2.25.` followed by a random (version 4) UUID as a decimal
/// integer (at most 44 characters).
pub fn new_uid() -> String {
    format!("2.25.{}", uuid::Uuid::new_v4().as_u128())
}

/// Date (DA, `YYYYMMDD`) and time (TM, `HHMMSS`) of this run, local time, shared by every
/// object the run writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    pub date: String,
    pub time: String,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let now = dicom::core::chrono::Local::now();
        Timestamp {
            date: now.format("%Y%m%d").to_string(),
            time: now.format("%H%M%S").to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_sixteen_characters() {
        for v in [
            0.1 + 0.2,
            -119.53125,
            0.9375,
            6.123233995736766e-17,
            -6.123233995736766e-17,
            123456789.12345679,
            -0.0,
            1e20,
            -1.234e-200,
            std::f64::consts::PI * 1e5,
        ] {
            let s = format_ds(v);
            assert!(s.len() <= 16, "{v}: {s}");
            let back: f64 = s.parse().unwrap();
            assert!((back - v).abs() <= 1e-9 * v.abs().max(1.0), "{v}: {s}");
        }
        assert_eq!(format_ds(0.1 + 0.2), "0.3");
        assert_eq!(format_ds(-0.0), "0");
        assert_eq!(format_ds(6.123233995736766e-17), "0");
        assert_eq!(format_ds(-120.0), "-120");
        assert_eq!(format_ds(0.9375), "0.9375");
    }

    #[test]
    fn code_strings_and_uids() {
        assert!(is_code_string("TUMOR_SEG"));
        assert!(!is_code_string("tumor-seg"));
        assert!(!is_code_string("A_VERY_LONG_CONTENT_LABEL"));
        let uid = new_uid();
        assert!(uid.starts_with("2.25.") && uid.len() <= 64);
        assert!(uid[5..].chars().all(|c| c.is_ascii_digit()));
        assert!(!uid[5..].starts_with('0'));
        assert_ne!(uid, new_uid());
        assert_eq!(long_string(&"x".repeat(70)).len(), 64);
    }
}
