//! Outlook's TNEF container (`winmail.dat`, `application/ms-tnef`): the
//! files inside it, so that a customer whose Outlook wraps attachments in
//! it is read like everyone else (MS-OXTNEF).
//!
//! Written here because no maintained Rust crate reads it: `tnef` 0.1
//! stops at message attributes it does not know (half of the public
//! samples), and `ytnef` binds a GPL C library. Only what an attachment
//! needs is read: each attachment's data, its name (the long name from its
//! MAPI properties, else the 8.3 title) and its MIME type when Outlook
//! recorded one. Anything malformed ends the reading; the caller then keeps
//! `winmail.dat` itself, so nothing is lost. Pure; never panics.

/// One file found in a TNEF container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TnefFile {
    /// Its name: the long file name, else the display name, else the title.
    pub name: Option<String>,
    /// Its MIME type, when Outlook recorded one.
    pub content_type: Option<String>,
    /// Its Content-ID, when it is an inline picture.
    pub content_id: Option<String>,
    /// Its bytes.
    pub data: Vec<u8>,
}

const SIGNATURE: u32 = 0x223E_9F78;
const LEVEL_ATTACHMENT: u8 = 0x02;
/// attAttachRenddata: starts a new attachment.
const ATT_RENDDATA: u32 = 0x0006_9002;
/// attAttachTitle: the (often 8.3) file name.
const ATT_TITLE: u32 = 0x0001_8010;
/// attAttachData: the file's bytes.
const ATT_DATA: u32 = 0x0006_800F;
/// attAttachment: the attachment's MAPI properties.
const ATT_PROPERTIES: u32 = 0x0006_9005;

// MAPI property ids read from an attachment's properties.
const PR_DISPLAY_NAME: u16 = 0x3001;
const PR_ATTACH_DATA: u16 = 0x3701;
const PR_ATTACH_LONG_FILENAME: u16 = 0x3707;
const PR_ATTACH_MIME_TAG: u16 = 0x370E;
const PR_ATTACH_CONTENT_ID: u16 = 0x3712;

// MAPI property types.
const PT_STRING8: u16 = 0x001E;
const PT_UNICODE: u16 = 0x001F;
const PT_BINARY: u16 = 0x0102;
const PT_OBJECT: u16 = 0x000D;
const MV_FLAG: u16 = 0x1000;

/// Bounds-checked little-endian reads.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `n` bytes and the padding that aligns them to four.
    fn padded(&mut self, n: usize) -> Option<&'a [u8]> {
        let value = self.take(n)?;
        self.take((4 - n % 4) % 4)?;
        Some(value)
    }
}

/// Whether `bytes` start like a TNEF container.
pub fn is_tnef(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == SIGNATURE
}

/// The files in a TNEF container, in order; `None` when `bytes` is not one
/// or is broken before any file could be read.
pub fn files(bytes: &[u8]) -> Option<Vec<TnefFile>> {
    let mut cursor = Cursor { bytes };
    if cursor.u32()? != SIGNATURE {
        return None;
    }
    cursor.u16()?; // legacy key
    let mut found: Vec<TnefFile> = Vec::new();
    let mut current: Option<TnefFile> = None;
    while !cursor.bytes.is_empty() {
        let Some((level, id, data)) = attribute(&mut cursor) else {
            break; // truncated or broken: keep what was read
        };
        if level != LEVEL_ATTACHMENT {
            continue;
        }
        match id {
            ATT_RENDDATA => {
                found.extend(current.take());
                current = Some(TnefFile { name: None, content_type: None, content_id: None, data: Vec::new() });
            }
            ATT_TITLE => {
                if let Some(file) = current.as_mut()
                    && file.name.is_none()
                {
                    file.name = text(data, false);
                }
            }
            ATT_DATA => {
                if let Some(file) = current.as_mut() {
                    file.data = data.to_vec();
                }
            }
            ATT_PROPERTIES => {
                if let Some(file) = current.as_mut() {
                    apply_properties(file, data);
                }
            }
            _ => {}
        }
    }
    found.extend(current);
    found.retain(|f| !f.data.is_empty());
    (!found.is_empty()).then_some(found)
}

/// One attribute: (level, id, data). Its checksum is not enforced: a wrong
/// one costs nothing here, and some writers get it wrong.
fn attribute<'a>(cursor: &mut Cursor<'a>) -> Option<(u8, u32, &'a [u8])> {
    let level = cursor.u8()?;
    let id = cursor.u32()?;
    let length = usize::try_from(cursor.u32()?).ok()?;
    let data = cursor.take(length)?;
    cursor.u16()?; // checksum
    Some((level, id, data))
}

/// Applies the MAPI properties of an attachment that name it, type it or
/// carry its data (when `attAttachData` did not).
fn apply_properties(file: &mut TnefFile, bytes: &[u8]) {
    let mut cursor = Cursor { bytes };
    let Some(count) = cursor.u32() else { return };
    let mut long_name = None;
    let mut display_name = None;
    for _ in 0..count.min(10_000) {
        let Some((id, kind, values)) = property(&mut cursor) else { return };
        let Some(first) = values.first() else { continue };
        let as_text = || text(first, kind == PT_UNICODE);
        match id {
            PR_ATTACH_LONG_FILENAME => long_name = as_text(),
            PR_DISPLAY_NAME => display_name = as_text(),
            PR_ATTACH_MIME_TAG => file.content_type = as_text().map(|t| t.to_ascii_lowercase()),
            PR_ATTACH_CONTENT_ID => file.content_id = as_text(),
            PR_ATTACH_DATA if file.data.is_empty() && kind == PT_BINARY => file.data = first.to_vec(),
            _ => {}
        }
    }
    if let Some(name) = long_name.or(display_name) {
        file.name = Some(name);
    }
}

/// One MAPI property: (id, base type, values). Fixed-size values are
/// skipped (returned empty); variable-size ones are returned.
fn property<'a>(cursor: &mut Cursor<'a>) -> Option<(u16, u16, Vec<&'a [u8]>)> {
    let kind = cursor.u16()?;
    let id = cursor.u16()?;
    if id >= 0x8000 {
        // A named property: its GUID, then a number or a UTF-16 name.
        cursor.take(16)?;
        match cursor.u32()? {
            0 => {
                cursor.u32()?;
            }
            _ => {
                let length = usize::try_from(cursor.u32()?).ok()?;
                cursor.padded(length)?;
            }
        }
    }
    let base = kind & !MV_FLAG;
    let variable = matches!(base, PT_STRING8 | PT_UNICODE | PT_BINARY | PT_OBJECT);
    // Variable-size values always come with a count, even single ones.
    let count = if kind & MV_FLAG != 0 || variable { cursor.u32()? } else { 1 };
    let mut values = Vec::new();
    for _ in 0..count.min(100_000) {
        if variable {
            let length = usize::try_from(cursor.u32()?).ok()?;
            values.push(cursor.padded(length)?);
        } else {
            let size = match base {
                0x0002 | 0x000B | 0x0003 | 0x0004 | 0x000A | 0x0001 => 4,
                0x0005 | 0x0006 | 0x0007 | 0x0014 | 0x0040 => 8,
                0x0048 => 16,
                _ => return None, // a type we cannot size: stop here
            };
            cursor.take(size)?;
        }
    }
    Some((id, base, values))
}

/// A string property or attribute: UTF-16LE, or 8-bit (UTF-8 when it is,
/// else Windows-1252, Outlook's usual code page), without its terminating
/// NUL; `None` when empty.
fn text(bytes: &[u8], utf16: bool) -> Option<String> {
    let decoded = if utf16 {
        let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        String::from_utf16_lossy(&units)
    } else {
        match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes).0.into_owned(),
        }
    };
    let trimmed = decoded.trim_end_matches('\0').trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::{files, is_tnef};

    /// A container as Outlook writes one: signature, key, one attachment.
    fn container(name_83: &str, long: &str, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0x223E_9F78u32.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        let mut attribute = |level: u8, id: u32, data: &[u8]| {
            out.push(level);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
            let sum = data.iter().fold(0u16, |acc, b| acc.wrapping_add(u16::from(*b)));
            out.extend_from_slice(&sum.to_le_bytes());
        };
        attribute(0x01, 0x0007_8008, b"IPM.Microsoft Mail.Note\0");
        attribute(0x02, 0x0006_9002, &[0u8; 14]);
        attribute(0x02, 0x0001_8010, format!("{name_83}\0").as_bytes());
        attribute(0x02, 0x0006_800F, data);
        // MAPI properties: a named property first (skipped), then the long name as UTF-16.
        let mut props = Vec::new();
        props.extend_from_slice(&2u32.to_le_bytes());
        props.extend_from_slice(&0x0003u16.to_le_bytes());
        props.extend_from_slice(&0x8005u16.to_le_bytes());
        props.extend_from_slice(&[7u8; 16]);
        props.extend_from_slice(&0u32.to_le_bytes());
        props.extend_from_slice(&0x1234u32.to_le_bytes());
        props.extend_from_slice(&42u32.to_le_bytes());
        let utf16: Vec<u8> = long.encode_utf16().chain([0]).flat_map(u16::to_le_bytes).collect();
        props.extend_from_slice(&0x001Fu16.to_le_bytes());
        props.extend_from_slice(&0x3707u16.to_le_bytes());
        props.extend_from_slice(&1u32.to_le_bytes());
        props.extend_from_slice(&(utf16.len() as u32).to_le_bytes());
        props.extend_from_slice(&utf16);
        props.resize(props.len() + (4 - utf16.len() % 4) % 4, 0);
        attribute(0x02, 0x0006_9005, &props);
        out
    }

    #[test]
    fn reads_the_file_and_its_long_name() {
        let bytes = container("ANGEBO~1.PDF", "Angebot März 2026.pdf", b"%PDF-1.4 data");
        assert!(is_tnef(&bytes));
        let found = files(&bytes).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name.as_deref(), Some("Angebot März 2026.pdf"));
        assert_eq!(found[0].data, b"%PDF-1.4 data");
    }

    #[test]
    fn broken_or_foreign_bytes_give_nothing_and_never_panic() {
        assert_eq!(files(b"not tnef at all"), None);
        let bytes = container("A.TXT", "a.txt", b"hello");
        for cut in 0..bytes.len() {
            let _ = files(&bytes[..cut]);
        }
        let mut flipped = bytes.clone();
        for i in 6..flipped.len() {
            flipped[i] ^= 0xFF;
            let _ = files(&flipped);
            flipped[i] ^= 0xFF;
        }
    }
}
