//! The dicom-rs adapter: small constructors for data elements, sequences and code items, and
//! the one place a finished data set is written to a file (Explicit VR Little Endian, with the
//! file meta group dicom-rs fills from the SOP Class and Instance UIDs). dicom-rs types do not
//! leave `seg`.

use std::path::Path;

use dicom::core::value::DataSetSequence;
use dicom::core::{DataElement, PrimitiveValue, Tag, VR};
use dicom::dictionary_std::uids;
use dicom::object::mem::InMemElement;
use dicom::object::{FileMetaTableBuilder, InMemDicomObject};

use super::request::SegError;

pub(crate) type Obj = InMemDicomObject;
pub(crate) type Elem = InMemElement;

/// A coded concept: (CodeValue, CodingSchemeDesignator, CodeMeaning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub value: &'static str,
    pub scheme: &'static str,
    pub meaning: &'static str,
}

/// A single-valued text element; an empty value is written as a zero-length element.
pub(crate) fn text(tag: Tag, vr: VR, value: &str) -> Elem {
    if value.is_empty() {
        DataElement::empty(tag, vr)
    } else {
        DataElement::new(tag, vr, PrimitiveValue::from(value))
    }
}

/// A multi-valued text element (values joined with `\` on write).
pub(crate) fn texts<S: AsRef<str>>(tag: Tag, vr: VR, values: &[S]) -> Elem {
    let v: Vec<String> = values.iter().map(|s| s.as_ref().to_string()).collect();
    DataElement::new(tag, vr, PrimitiveValue::Strs(v.into_iter().collect()))
}

/// An IS element.
pub(crate) fn int_string(tag: Tag, value: i64) -> Elem {
    text(tag, VR::IS, &value.to_string())
}

pub(crate) fn us(tag: Tag, values: &[u16]) -> Elem {
    DataElement::new(
        tag,
        VR::US,
        PrimitiveValue::U16(values.iter().copied().collect()),
    )
}

pub(crate) fn ul(tag: Tag, values: &[u32]) -> Elem {
    DataElement::new(
        tag,
        VR::UL,
        PrimitiveValue::U32(values.iter().copied().collect()),
    )
}

pub(crate) fn at(tag: Tag, values: &[Tag]) -> Elem {
    DataElement::new(
        tag,
        VR::AT,
        PrimitiveValue::Tags(values.iter().copied().collect()),
    )
}

/// Pixel data as bytes (OB); the encoder pads an odd length with one zero byte.
pub(crate) fn bytes(tag: Tag, vr: VR, data: Vec<u8>) -> Elem {
    DataElement::new(tag, vr, PrimitiveValue::from(data))
}

/// A sequence element; an empty `items` writes an empty (type 2) sequence.
pub(crate) fn seq(tag: Tag, items: Vec<Obj>) -> Elem {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// A data set (sequence item) from elements.
pub(crate) fn item(elements: Vec<Elem>) -> Obj {
    InMemDicomObject::from_element_iter(elements)
}

/// The three-element item of a code sequence.
pub(crate) fn code_item(code: Code) -> Obj {
    use dicom::dictionary_std::tags;
    item(vec![
        text(tags::CODE_VALUE, VR::SH, code.value),
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, code.scheme),
        text(tags::CODE_MEANING, VR::LO, code.meaning),
    ])
}

/// A code sequence with exactly one item.
pub(crate) fn code_seq(tag: Tag, code: Code) -> Elem {
    seq(tag, vec![code_item(code)])
}

/// Writes `obj` (which holds SOPClassUID and SOPInstanceUID) as a DICOM file.
pub(crate) fn write_file(obj: Obj, path: &Path) -> Result<(), SegError> {
    let meta = FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN);
    let file = obj
        .with_meta(meta)
        .map_err(|e| SegError::new(path, format!("cannot build the file meta group: {e}")))?;
    file.write_to_file(path)
        .map_err(|e| SegError::new(path, format!("cannot write: {e}")))
}
