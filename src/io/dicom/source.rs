//! What derived DICOM objects (a SEG) need of the series a channel was read from: its study,
//! series and frame of reference UIDs, one `(SOPClassUID, SOPInstanceUID)` per slice in k order,
//! the patient and study attributes to copy, and the geometry strings exactly as the source wrote
//! them. Built by `series::Series::source`, read by the SEG writer.

/// What derived DICOM objects (a SEG) need to reference a source series and copy its patient
/// and study. Values are the source's own strings.
#[derive(Debug, Clone, Default)]
pub struct DicomSource {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// `(SOPClassUID, SOPInstanceUID)` of the slice at each k of the input grid.
    pub instances: Vec<(String, String)>,
    /// Patient, study and equipment attributes to copy into derived objects, as
    /// `(DICOM keyword, value)`; patient identifiers are only used where the config allows it.
    pub attributes: Vec<(String, String)>,
    /// ImageOrientationPatient as written in the source, kept verbatim for derived objects.
    pub image_orientation: String,
    /// ImagePositionPatient of each slice (k order), as written in the source.
    pub image_positions: Vec<String>,
    /// PixelSpacing as written in the source.
    pub pixel_spacing: String,
}
