//! The patient, study and frame of reference every object of one run shares.
//!
//! DICOM input: the source's StudyInstanceUID and FrameOfReferenceUID, and its Patient and
//! General Study attributes copied (an allow-list; a derived object filed under the source's
//! study must carry the same patient, or archives file it apart and dcentvfy complains).
//! NIfTI input: a new, de-identified patient and study: new UIDs, PatientName and PatientID
//! from the pipeline config, StudyDate and StudyTime of the run, other type-2 values empty.

use dicom::core::{Tag, VR};
use dicom::dictionary_std::tags;

use crate::io::dicom::DicomSource;

use super::element::{text, Elem};
use super::values::{long_string, new_uid, Timestamp};

/// Patient and General Study attributes copied from a DICOM source: (keyword, tag, VR,
/// written even when the source lacks it (type 2)).
const COPIED: [(&str, Tag, VR, bool); 14] = [
    ("PatientName", tags::PATIENT_NAME, VR::PN, true),
    ("PatientID", tags::PATIENT_ID, VR::LO, true),
    (
        "IssuerOfPatientID",
        tags::ISSUER_OF_PATIENT_ID,
        VR::LO,
        false,
    ),
    ("PatientBirthDate", tags::PATIENT_BIRTH_DATE, VR::DA, true),
    ("PatientSex", tags::PATIENT_SEX, VR::CS, true),
    ("PatientAge", tags::PATIENT_AGE, VR::AS, false),
    ("PatientSize", tags::PATIENT_SIZE, VR::DS, false),
    ("PatientWeight", tags::PATIENT_WEIGHT, VR::DS, false),
    ("StudyDate", tags::STUDY_DATE, VR::DA, true),
    ("StudyTime", tags::STUDY_TIME, VR::TM, true),
    (
        "ReferringPhysicianName",
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        true,
    ),
    ("StudyID", tags::STUDY_ID, VR::SH, true),
    ("AccessionNumber", tags::ACCESSION_NUMBER, VR::SH, true),
    ("StudyDescription", tags::STUDY_DESCRIPTION, VR::LO, false),
];

/// Who and which study the written objects belong to.
#[derive(Debug, Clone)]
pub struct Study {
    pub study_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// True when copied from a DICOM source.
    pub from_source: bool,
    attributes: Vec<(Tag, VR, String)>,
}

/// Identity given to the objects written for NIfTI input.
#[derive(Debug, Clone)]
pub struct NewPatient<'a> {
    pub patient_name: &'a str,
    pub patient_id: &'a str,
    pub study_description: &'a str,
}

impl Study {
    /// A new study for NIfTI input.
    pub fn new_deidentified(p: &NewPatient, now: &Timestamp) -> Study {
        let attributes = vec![
            (tags::PATIENT_NAME, VR::PN, long_string(p.patient_name)),
            (tags::PATIENT_ID, VR::LO, long_string(p.patient_id)),
            (tags::PATIENT_BIRTH_DATE, VR::DA, String::new()),
            (tags::PATIENT_SEX, VR::CS, String::new()),
            (tags::STUDY_DATE, VR::DA, now.date.clone()),
            (tags::STUDY_TIME, VR::TM, now.time.clone()),
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN, String::new()),
            (tags::STUDY_ID, VR::SH, "1".to_string()),
            (tags::ACCESSION_NUMBER, VR::SH, String::new()),
            (
                tags::STUDY_DESCRIPTION,
                VR::LO,
                long_string(p.study_description),
            ),
        ];
        Study {
            study_instance_uid: new_uid(),
            frame_of_reference_uid: new_uid(),
            from_source: false,
            attributes,
        }
    }

    /// The study of a DICOM source series.
    pub fn from_dicom(src: &DicomSource) -> Study {
        let value = |keyword: &str| {
            src.attributes
                .iter()
                .find(|(k, _)| k == keyword)
                .map(|(_, v)| v.trim_end_matches([' ', '\0']).to_string())
        };
        let attributes = COPIED
            .iter()
            .filter_map(|&(keyword, tag, vr, type2)| match value(keyword) {
                Some(v) => Some((tag, vr, v)),
                None if type2 => Some((tag, vr, String::new())),
                None => None,
            })
            .collect();
        let frame_of_reference_uid = if src.frame_of_reference_uid.is_empty() {
            new_uid()
        } else {
            src.frame_of_reference_uid.clone()
        };
        Study {
            study_instance_uid: src.study_instance_uid.clone(),
            frame_of_reference_uid,
            from_source: true,
            attributes,
        }
    }

    /// Patient and General Study module elements (StudyInstanceUID included), and the Frame
    /// of Reference module.
    pub(crate) fn elements(&self) -> Vec<Elem> {
        let mut out: Vec<Elem> = self
            .attributes
            .iter()
            .map(|(tag, vr, v)| text(*tag, *vr, v))
            .collect();
        out.push(text(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            &self.study_instance_uid,
        ));
        out.push(text(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &self.frame_of_reference_uid,
        ));
        out.push(text(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_attributes_are_copied_by_allow_list() {
        let src = DicomSource {
            study_instance_uid: "1.2.3".into(),
            frame_of_reference_uid: "1.2.4".into(),
            attributes: vec![
                ("PatientName".into(), "Doe^Jane".into()),
                ("Manufacturer".into(), "Scanner Co".into()),
                ("StudyDescription".into(), "Brain MRI ".into()),
            ],
            ..Default::default()
        };
        let s = Study::from_dicom(&src);
        assert_eq!(s.study_instance_uid, "1.2.3");
        assert_eq!(s.frame_of_reference_uid, "1.2.4");
        assert!(s
            .attributes
            .contains(&(tags::PATIENT_NAME, VR::PN, "Doe^Jane".into())));
        assert!(s
            .attributes
            .contains(&(tags::STUDY_DESCRIPTION, VR::LO, "Brain MRI".into())));
        // type 2 attributes the source lacks are present and empty; equipment is not copied
        assert!(s
            .attributes
            .contains(&(tags::ACCESSION_NUMBER, VR::SH, String::new())));
        assert!(!s
            .attributes
            .iter()
            .any(|(t, _, _)| *t == tags::MANUFACTURER));
    }
}
