//! Element lengths of a DICOM Part 10 file, checked before dicom-rs reads it.
//!
//! dicom-rs (0.10) reserves and zeroes as many bytes as an element's length field claims before
//! it reads the value, so a 2 KiB file whose header claims a 2 GiB element costs 2 GiB of memory
//! (found by the `dicom_series` fuzz target). This walks the element headers (the file meta group,
//! then the data set in its transfer syntax, into sequences and items, and through encapsulated
//! pixel data fragments) without reading values, and refuses any defined length larger than the
//! bytes left in its container, and sequences nested deeper than [`MAX_DEPTH`] (dicom-rs recurses
//! once per level). It checks lengths only, nothing else of the file's structure: what it does
//! not understand (a missing meta group, an odd tag) ends the walk and is left to dicom-rs.
//!
//! Transfer syntaxes: implicit VR little endian (sequence VRs from the standard dictionary),
//! explicit VR big endian, deflated explicit VR little endian (inflated here; its data set may be
//! at most [`DEFLATE_RATIO`] times the file size, a bound on deflate bombs) and explicit VR little
//! endian for every other (encapsulated) syntax.
//!
//! What it refuses is a `LengthError`, naming the element (tag and byte offset) and the length
//! it claims against the bytes left.

use std::io::{self, Read};
use std::path::Path;

use dicom::core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom::core::{Tag, VR};
use dicom::dictionary_std::StandardDataDictionary;

/// Deepest sequence nesting accepted.
const MAX_DEPTH: usize = 32;
/// A deflated data set may inflate to at most this many times the file size.
const DEFLATE_RATIO: u64 = 256;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// Why a file's element lengths cannot be trusted (or the file cannot be walked at all).
#[derive(Debug, thiserror::Error)]
pub enum LengthError {
    #[error("cannot open: {0}")]
    Open(#[source] io::Error),
    #[error("{0}")]
    Size(#[source] io::Error),
    #[error("the file is shorter than a DICOM preamble")]
    NoPreamble,
    #[error(
        "the deflated data set inflates to more than {} times the file size",
        DEFLATE_RATIO
    )]
    DeflateBomb,
    #[error("the file meta group claims {claimed} bytes, the file has {left} left")]
    MetaGroup { claimed: u32, left: u64 },
    #[error("element {tag} at byte {at} claims {length} bytes, only {left} are left")]
    Element {
        tag: Tag,
        at: u64,
        length: u32,
        left: u64,
    },
    #[error("sequences nested deeper than {} levels at byte {at}", MAX_DEPTH)]
    TooDeep { at: u64 },
    #[error("element {tag} at byte {at} where a sequence item was expected")]
    NotAnItem { tag: Tag, at: u64 },
    #[error("pixel data fragment at byte {at} has an undefined length")]
    UndefinedFragment { at: u64 },
}

/// Checks the file at `path` (see the module docs); `to_pixel_data` stops at the top-level
/// PixelData element (a header-only read), else the whole file is walked.
pub fn check(path: &Path, to_pixel_data: bool) -> Result<(), LengthError> {
    let file = std::fs::File::open(path).map_err(LengthError::Open)?;
    let size = file.metadata().map_err(LengthError::Size)?.len();
    let mut meta = Walker::new(io::BufReader::new(file), size, Encoding::ExplicitLe);
    meta.skip(132).map_err(|_| LengthError::NoPreamble)?;
    let Some(syntax) = meta.meta_group()? else {
        return Ok(());
    };
    let end = size;
    match syntax.trim_end_matches(['\0', ' ']) {
        "1.2.840.10008.1.2.1.99" => {
            let inflated = flate2::read::DeflateDecoder::new(meta.into_inner());
            let limit = size.saturating_mul(DEFLATE_RATIO);
            let mut w = Walker::new(inflated, limit, Encoding::ExplicitLe);
            let walked = w.data_set(limit, 0, to_pixel_data);
            // at the limit (an element header may straddle it): more data means a bomb
            if w.position.saturating_add(64) >= limit && (walked.is_err() || w.skip(1).is_ok()) {
                return Err(LengthError::DeflateBomb);
            }
            walked.map(|_| ())
        }
        other => {
            meta.encoding = match other {
                "1.2.840.10008.1.2" => Encoding::ImplicitLe,
                "1.2.840.10008.1.2.2" => Encoding::ExplicitBe,
                _ => Encoding::ExplicitLe,
            };
            meta.data_set(end, 0, to_pixel_data).map(|_| ())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    ExplicitLe,
    ImplicitLe,
    ExplicitBe,
}

/// How a walk over a data set ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The container's end, or the end of the file.
    Reached,
    /// An item delimiter, or PixelData when stopping there.
    Marker,
}

struct Walker<R> {
    source: R,
    position: u64,
    /// Where the stream ends (the file size, or the inflation limit).
    size: u64,
    encoding: Encoding,
}

impl<R: Read> Walker<R> {
    fn new(source: R, size: u64, encoding: Encoding) -> Self {
        Walker {
            source,
            position: 0,
            size,
            encoding,
        }
    }

    fn into_inner(self) -> R {
        self.source
    }

    fn bytes<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.source.read_exact(&mut b)?;
        self.position += N as u64;
        Ok(b)
    }

    fn u16(&mut self) -> io::Result<u16> {
        let b = self.bytes::<2>()?;
        Ok(match self.encoding {
            Encoding::ExplicitBe => u16::from_be_bytes(b),
            _ => u16::from_le_bytes(b),
        })
    }

    fn u32(&mut self) -> io::Result<u32> {
        let b = self.bytes::<4>()?;
        Ok(match self.encoding {
            Encoding::ExplicitBe => u32::from_be_bytes(b),
            _ => u32::from_le_bytes(b),
        })
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.source).take(n), &mut io::sink())?;
        self.position += copied;
        if copied < n {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// `(group, element, VR if explicit, length)`, or `None` at the end of the stream.
    fn header(&mut self) -> Option<((u16, u16), Option<VR>, u32)> {
        let group = self.u16().ok()?;
        let element = self.u16().ok()?;
        if group == 0xFFFE {
            return Some(((group, element), None, self.u32().ok()?));
        }
        if self.encoding == Encoding::ImplicitLe {
            return Some(((group, element), None, self.u32().ok()?));
        }
        // as dicom-rs decodes it: an unknown VR is UN, and only these VRs have a 16-bit length
        let vr = VR::from_binary(self.bytes::<2>().ok()?).unwrap_or(VR::UN);
        let short = matches!(
            vr,
            VR::AE
                | VR::AS
                | VR::AT
                | VR::CS
                | VR::DA
                | VR::DS
                | VR::DT
                | VR::FL
                | VR::FD
                | VR::IS
                | VR::LO
                | VR::LT
                | VR::PN
                | VR::SH
                | VR::SL
                | VR::SS
                | VR::ST
                | VR::TM
                | VR::UI
                | VR::UL
                | VR::US
        );
        let length = if short {
            u32::from(self.u16().ok()?)
        } else {
            self.skip(2).ok()?;
            self.u32().ok()?
        };
        Some(((group, element), Some(vr), length))
    }

    /// The file meta group (always explicit VR little endian); its TransferSyntaxUID, or `None`
    /// when there is no usable meta group.
    fn meta_group(&mut self) -> Result<Option<String>, LengthError> {
        let Some(((2, 0), _, 4)) = self.header() else {
            return Ok(None);
        };
        let Ok(group_length) = self.u32() else {
            return Ok(None);
        };
        let end = self.position.saturating_add(u64::from(group_length));
        if end > self.size {
            return Err(LengthError::MetaGroup {
                claimed: group_length,
                left: self.size - self.position,
            });
        }
        let mut syntax = None;
        while self.position < end {
            let Some((tag, _, length)) = self.header() else {
                return Ok(None);
            };
            self.fits(tag, length, end)?;
            if tag == (0x0002, 0x0010) && length <= 64 {
                let mut value = vec![0u8; length as usize];
                if self.source.read_exact(&mut value).is_err() {
                    return Ok(None);
                }
                self.position += u64::from(length);
                syntax = Some(String::from_utf8_lossy(&value).into_owned());
            } else if self.skip(u64::from(length)).is_err() {
                return Ok(None);
            }
        }
        Ok(syntax)
    }

    /// A defined `length` at the current position must end by `end`.
    fn fits(&self, (group, element): (u16, u16), length: u32, end: u64) -> Result<(), LengthError> {
        let left = end.saturating_sub(self.position);
        if length != UNDEFINED && u64::from(length) > left {
            return Err(LengthError::Element {
                tag: Tag(group, element),
                at: self.position,
                length,
                left,
            });
        }
        Ok(())
    }

    fn is_sequence(&self, tag: (u16, u16), vr: Option<VR>) -> bool {
        match vr {
            Some(vr) => vr == VR::SQ,
            None => StandardDataDictionary
                .by_tag(Tag(tag.0, tag.1))
                .is_some_and(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ))),
        }
    }

    /// Elements up to `end`, an item delimiter, or (top level, `stop`) PixelData.
    fn data_set(&mut self, end: u64, depth: usize, stop: bool) -> Result<End, LengthError> {
        while self.position < end {
            let Some((tag, vr, length)) = self.header() else {
                return Ok(End::Reached);
            };
            if tag == ITEM_END || tag == SEQUENCE_END {
                if depth == 0 {
                    continue; // stray at the top level: walk on past it
                }
                return Ok(End::Marker);
            }
            if depth == 0 && stop && tag == PIXEL_DATA {
                return Ok(End::Marker);
            }
            self.fits(tag, length, end)?;
            let value_end = match length {
                UNDEFINED => end,
                n => self.position + u64::from(n),
            };
            if tag == PIXEL_DATA && length == UNDEFINED {
                self.fragments(end)?;
            } else if length == UNDEFINED || self.is_sequence(tag, vr) {
                // undefined-length UN is a sequence in implicit VR little endian (PS3.5 6.2.2)
                let outer = self.encoding;
                if vr == Some(VR::UN) {
                    self.encoding = Encoding::ImplicitLe;
                }
                let result = self.items(value_end, depth + 1, length == UNDEFINED);
                self.encoding = outer;
                result?;
                if length != UNDEFINED && self.position < value_end {
                    let rest = value_end - self.position;
                    if self.skip(rest).is_err() {
                        return Ok(End::Reached);
                    }
                }
            } else if self.skip(u64::from(length)).is_err() {
                return Ok(End::Reached);
            }
        }
        Ok(End::Reached)
    }

    /// The items of a sequence, up to `end` (defined length) or the sequence delimiter.
    fn items(&mut self, end: u64, depth: usize, delimited: bool) -> Result<(), LengthError> {
        if depth > MAX_DEPTH {
            return Err(LengthError::TooDeep { at: self.position });
        }
        while self.position < end {
            let Some((tag, _, length)) = self.header() else {
                return Ok(());
            };
            if tag == SEQUENCE_END {
                return Ok(());
            }
            if tag != ITEM {
                // not an item: left to dicom-rs, which refuses it
                return Err(LengthError::NotAnItem {
                    tag: Tag(tag.0, tag.1),
                    at: self.position,
                });
            }
            self.fits(tag, length, end)?;
            let item_end = match length {
                UNDEFINED => end,
                n => self.position + u64::from(n),
            };
            self.data_set(item_end, depth, false)?;
            if length != UNDEFINED && self.position < item_end {
                let rest = item_end - self.position;
                if self.skip(rest).is_err() {
                    return Ok(());
                }
            }
            if !delimited && self.position >= end {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Encapsulated pixel data: items (the offset table, then fragments) up to the delimiter.
    fn fragments(&mut self, end: u64) -> Result<(), LengthError> {
        while self.position < end {
            let Some((tag, _, length)) = self.header() else {
                return Ok(());
            };
            if tag == SEQUENCE_END {
                return Ok(());
            }
            self.fits(tag, length, end)?;
            if length == UNDEFINED {
                return Err(LengthError::UndefinedFragment { at: self.position });
            }
            if self.skip(u64::from(length)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Explicit VR little endian element bytes.
    fn element(
        group: u16,
        element: u16,
        vr: &[u8; 2],
        value: &[u8],
        length: Option<u32>,
    ) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(group.to_le_bytes());
        b.extend(element.to_le_bytes());
        b.extend(vr);
        let n = length.unwrap_or(value.len() as u32);
        if matches!(vr, b"OB" | b"SQ" | b"UN" | b"UT" | b"OW") {
            b.extend([0, 0]);
            b.extend(n.to_le_bytes());
        } else {
            b.extend((n as u16).to_le_bytes());
        }
        b.extend(value);
        b
    }

    fn file(syntax: &str, data_set: &[u8]) -> tempfile::NamedTempFile {
        let mut uid = syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let meta_body = element(2, 0x10, b"UI", &uid, None);
        let mut bytes = vec![0u8; 128];
        bytes.extend(b"DICM");
        bytes.extend(element(
            2,
            0,
            b"UL",
            &(meta_body.len() as u32).to_le_bytes(),
            None,
        ));
        bytes.extend(meta_body);
        bytes.extend(data_set);
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        f
    }

    const EXPLICIT: &str = "1.2.840.10008.1.2.1";

    #[test]
    fn plain_elements_sequences_and_pixel_data_pass() {
        let item = element(0x0008, 0x1150, b"UI", b"1.2.3\0", None);
        let mut seq_item = vec![0xFE, 0xFF, 0x00, 0xE0];
        seq_item.extend((item.len() as u32).to_le_bytes());
        seq_item.extend(&item);
        let mut data = element(0x0010, 0x0010, b"PN", b"Doe^Jane", None);
        data.extend(element(0x0008, 0x1140, b"SQ", &seq_item, None));
        data.extend(element(0x7FE0, 0x0010, b"OW", &[0; 8], None));
        let f = file(EXPLICIT, &data);
        assert!(check(f.path(), true).is_ok());
        assert!(check(f.path(), false).is_ok());
    }

    #[test]
    fn a_length_beyond_the_file_is_refused() {
        let mut data = element(0x0010, 0x0010, b"PN", b"Doe^Jane", None);
        data.extend(element(0x0008, 0x103E, b"UT", b"abcd", Some(0x7FFF_FFF0)));
        let e = check(file(EXPLICIT, &data).path(), true).unwrap_err();
        assert!(
            matches!(
                e,
                LengthError::Element {
                    tag: Tag(0x0008, 0x103E),
                    length: 0x7FFF_FFF0,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(
            e.contains("(0008,103E)") && e.contains("claims 2147483632 bytes"),
            "{e}"
        );
    }

    #[test]
    fn a_length_beyond_its_item_is_refused() {
        let inner = element(0x0008, 0x1150, b"UI", b"1.2", Some(200));
        let mut seq_item = vec![0xFE, 0xFF, 0x00, 0xE0];
        seq_item.extend((inner.len() as u32).to_le_bytes());
        seq_item.extend(&inner);
        let mut data = element(0x0008, 0x1140, b"SQ", &seq_item, None);
        data.extend(vec![0u8; 400]);
        let e = check(file(EXPLICIT, &data).path(), true).unwrap_err();
        assert!(e.to_string().contains("(0008,1150)"), "{e}");
    }

    #[test]
    fn pixel_data_is_walked_only_for_a_full_read() {
        let data = element(0x7FE0, 0x0010, b"OB", &[1, 2], Some(1 << 30));
        let f = file(EXPLICIT, &data);
        assert!(check(f.path(), true).is_ok());
        let e = check(f.path(), false).unwrap_err();
        assert!(e.to_string().contains("(7FE0,0010)"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        // undefined-length sequences of undefined-length items, 40 deep
        let mut data = Vec::new();
        for _ in 0..40 {
            data.extend(element(0x0008, 0x1140, b"SQ", &[], Some(UNDEFINED)));
            data.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let e = check(file(EXPLICIT, &data).path(), true).unwrap_err();
        assert!(matches!(e, LengthError::TooDeep { .. }), "{e:?}");
        assert!(e.to_string().contains("nested deeper than 32"), "{e}");
    }

    #[test]
    fn implicit_vr_sequences_come_from_the_dictionary() {
        let mut data = Vec::new();
        // ReferencedImageSequence (0008,1140), implicit VR, defined length 16: one item of 8
        // bytes whose element claims far more than the item holds
        data.extend(0x0008u16.to_le_bytes());
        data.extend(0x1140u16.to_le_bytes());
        data.extend(16u32.to_le_bytes());
        data.extend([0xFE, 0xFF, 0x00, 0xE0]);
        data.extend(8u32.to_le_bytes());
        data.extend(0x0008u16.to_le_bytes());
        data.extend(0x1150u16.to_le_bytes());
        data.extend(1000u32.to_le_bytes());
        let e = check(file("1.2.840.10008.1.2", &data).path(), true).unwrap_err();
        assert!(e.to_string().contains("(0008,1150)"), "{e}");
    }

    #[test]
    fn a_deflate_bomb_is_refused() {
        use std::io::Write;
        // 4 MiB of small elements compress to a few KiB
        let one = element(0x0009, 0x1010, b"LO", b"ab", None);
        let mut plain = Vec::new();
        while plain.len() < 4 << 20 {
            plain.extend(&one);
        }
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&plain).unwrap();
        let packed = z.finish().unwrap();
        let f = file("1.2.840.10008.1.2.1.99", &packed);
        let e = check(f.path(), true).unwrap_err();
        assert!(matches!(e, LengthError::DeflateBomb), "{e:?}");
        assert!(e.to_string().contains("inflates to more than 256"), "{e}");
        // a normal deflated data set passes
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&element(0x0010, 0x0010, b"PN", b"Doe^Jane", None))
            .unwrap();
        let f = file("1.2.840.10008.1.2.1.99", &z.finish().unwrap());
        assert!(check(f.path(), true).is_ok());
    }

    /// Inputs the `dicom_series` fuzz target found (fuzz/regressions/dicom_series/): files
    /// separated as the target separates them, each of which made dicom-rs allocate 2 to 4 GiB
    /// before this check existed. Scanning them must fail fast with a length error.
    #[test]
    fn fuzz_regressions_fail_without_allocating() {
        let inputs: [&[u8]; 2] = [
            include_bytes!("../../../fuzz/regressions/dicom_series/oom-meta-group-length"),
            include_bytes!("../../../fuzz/regressions/dicom_series/oom-element-length"),
        ];
        for input in inputs {
            let dir = tempfile::tempdir().unwrap();
            crate::io::dicom::write_fuzz_input(dir.path(), input);
            let e = crate::io::dicom::scan(dir.path()).unwrap_err().to_string();
            assert!(e.contains("claims"), "{e}");
        }
    }
}
