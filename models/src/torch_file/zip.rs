//! The part of the zip format that `torch.save` writes: a central directory of stored
//! (uncompressed) entries, with ZIP64 records where sizes or offsets need them. Every offset and
//! size read from the file is checked against the file before it is used; an entry's data is
//! checked against its CRC-32 when it is read.
use std::collections::BTreeMap;
use std::ops::Range;

/// The entries of an archive held in memory: name to the byte range of its data.
pub struct Zip<'a> {
    bytes: &'a [u8],
    entries: BTreeMap<String, Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    data: (u64, u64),
    crc: u32,
}

const EOCD: u32 = 0x0605_4b50;
const EOCD64: u32 = 0x0606_4b50;
const EOCD64_LOCATOR: u32 = 0x0706_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The range `[start, start + len)` when it lies inside `total` bytes.
fn within(start: u64, len: u64, total: usize) -> Option<Range<usize>> {
    let end = start.checked_add(len)?;
    (end <= total as u64).then_some(start as usize..end as usize)
}

impl<'a> Zip<'a> {
    /// Read the central directory of `bytes`. Errors say what is wrong and where.
    pub fn new(bytes: &'a [u8]) -> Result<Self, String> {
        let n = bytes.len();
        // The end record sits in the last 22 + 65535 (comment) bytes.
        let lowest = n.saturating_sub(22 + 0xffff);
        let eocd = (lowest..=n.saturating_sub(22)).rev().find(|&i| u32_at(bytes, i) == Some(EOCD)).ok_or("not a zip archive (no end of central directory record; truncated?)")?;
        let field = |at: usize| u16_at(bytes, eocd + at).unwrap_or(0);
        let mut count = u64::from(field(10));
        let mut cd_size = u64::from(u32_at(bytes, eocd + 12).unwrap_or(0));
        let mut cd_start = u64::from(u32_at(bytes, eocd + 16).unwrap_or(0));
        if count == 0xffff || cd_size == 0xffff_ffff || cd_start == 0xffff_ffff {
            let loc = eocd.checked_sub(20).filter(|&l| u32_at(bytes, l) == Some(EOCD64_LOCATOR)).ok_or("a ZIP64 archive without its end record locator")?;
            let at = u64_at(bytes, loc + 8).and_then(|a| usize::try_from(a).ok()).filter(|&a| u32_at(bytes, a) == Some(EOCD64)).ok_or("the ZIP64 end record is not where its locator says")?;
            count = u64_at(bytes, at + 32).ok_or("truncated ZIP64 end record")?;
            cd_size = u64_at(bytes, at + 40).ok_or("truncated ZIP64 end record")?;
            cd_start = u64_at(bytes, at + 48).ok_or("truncated ZIP64 end record")?;
        }
        let cd = within(cd_start, cd_size, n).ok_or_else(|| format!("the central directory ({cd_size} bytes at {cd_start}) lies outside the file ({n} bytes)"))?;
        let mut entries = BTreeMap::new();
        let mut at = cd.start;
        for i in 0..count {
            let bad = |what: &str| format!("central directory entry {i}: {what}");
            if u32_at(bytes, at) != Some(CENTRAL) || at + 46 > cd.end {
                return Err(bad("not a central directory record (corrupt or truncated archive)"));
            }
            let method = u16_at(bytes, at + 10).unwrap_or(0);
            let crc = u32_at(bytes, at + 16).unwrap_or(0);
            let mut compressed = u64::from(u32_at(bytes, at + 20).unwrap_or(0));
            let mut size = u64::from(u32_at(bytes, at + 24).unwrap_or(0));
            let (name_len, extra_len, comment_len) = (usize::from(field_at(bytes, at + 28)), usize::from(field_at(bytes, at + 30)), usize::from(field_at(bytes, at + 32)));
            let mut local = u64::from(u32_at(bytes, at + 42).unwrap_or(0));
            let name_range = at + 46..at + 46 + name_len;
            let extra_range = name_range.end..name_range.end + extra_len;
            if extra_range.end + comment_len > cd.end {
                return Err(bad("its name or extra fields run past the central directory"));
            }
            let name = std::str::from_utf8(&bytes[name_range]).map_err(|_| bad("a name that is not UTF-8"))?.to_string();
            // ZIP64 extra field: the 64-bit values of whichever fields are saturated, in order.
            let mut extra = &bytes[extra_range.clone()];
            while extra.len() >= 4 {
                let (id, len) = (u16::from_le_bytes([extra[0], extra[1]]), usize::from(u16::from_le_bytes([extra[2], extra[3]])));
                let body = extra.get(4..4 + len).ok_or_else(|| bad("an extra field runs past its record"))?;
                if id == 1 {
                    let mut vals = body.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
                    for field in [&mut size, &mut compressed, &mut local] {
                        if *field == 0xffff_ffff {
                            *field = vals.next().ok_or_else(|| bad("a ZIP64 field without its value"))?;
                        }
                    }
                }
                extra = &extra[4 + len..];
            }
            if method != 0 {
                return Err(format!("{name}: compressed with method {method}; torch.save stores entries uncompressed (was the archive repacked?)"));
            }
            if compressed != size {
                return Err(format!("{name}: a stored entry of {compressed} bytes that claims to hold {size}"));
            }
            // The data follows the local header, whose own name and extra lengths may differ.
            let lh = usize::try_from(local).ok().filter(|&l| u32_at(bytes, l) == Some(LOCAL)).ok_or_else(|| format!("{name}: no local header at {local} (corrupt or truncated archive)"))?;
            let (lname, lextra) = (u64::from(field_at(bytes, lh + 26)), u64::from(field_at(bytes, lh + 28)));
            let start = local + 30 + lname + lextra;
            within(start, size, n).ok_or_else(|| format!("{name}: its {size} bytes at {start} run past the end of the file ({n} bytes; truncated?)"))?;
            if entries.insert(name.clone(), Entry { data: (start, size), crc }).is_some() {
                return Err(format!("{name}: listed twice"));
            }
            at = extra_range.end + comment_len;
        }
        Ok(Self { bytes, entries })
    }

    /// Every entry name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The bytes of entry `name`, checked against its CRC-32; `None` when there is no such entry.
    pub fn read(&self, name: &str) -> Option<Result<&'a [u8], String>> {
        let e = self.entries.get(name)?;
        // Ranges were checked when the directory was read.
        let data = &self.bytes[e.data.0 as usize..(e.data.0 + e.data.1) as usize];
        Some(if crc32(data) == e.crc { Ok(data) } else { Err(format!("{name}: CRC-32 mismatch (the archive is corrupt)")) })
    }
}

fn field_at(b: &[u8], at: usize) -> u16 {
    u16_at(b, at).unwrap_or(0)
}

/// CRC-32 (IEEE 802.3, reflected), as zip uses it.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, v) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
            *v = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stored zip of `files`, as Python's zipfile writes one.
    pub(crate) fn stored_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in files {
            let offset = out.len() as u32;
            let crc = crc32(data);
            let header = |sig: u32, central: bool| {
                let mut h = sig.to_le_bytes().to_vec();
                if central {
                    h.extend(20u16.to_le_bytes());
                }
                h.extend(20u16.to_le_bytes());
                h.extend([0u8; 6]); // flags, method 0 (stored), time
                h.extend([0u8; 2]); // date
                h.extend(crc.to_le_bytes());
                h.extend((data.len() as u32).to_le_bytes());
                h.extend((data.len() as u32).to_le_bytes());
                h.extend((name.len() as u16).to_le_bytes());
                h.extend(0u16.to_le_bytes());
                if central {
                    h.extend([0u8; 10]); // comment length, disk, attributes
                    h.extend(offset.to_le_bytes());
                }
                h.extend(name.as_bytes());
                h
            };
            out.extend(header(LOCAL, false));
            out.extend(*data);
            central.extend(header(CENTRAL, true));
        }
        let (cd_start, cd_len) = (out.len() as u32, central.len() as u32);
        out.extend(central);
        out.extend(EOCD.to_le_bytes());
        out.extend([0u8; 4]);
        out.extend((files.len() as u16).to_le_bytes());
        out.extend((files.len() as u16).to_le_bytes());
        out.extend(cd_len.to_le_bytes());
        out.extend(cd_start.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn stored_entries_read_back_and_corruption_is_named() {
        let mut z = stored_zip(&[("a/data.pkl", b"hello"), ("a/data/0", &[1, 2, 3, 4])]);
        let zip = Zip::new(&z).unwrap();
        assert_eq!(zip.names().collect::<Vec<_>>(), ["a/data.pkl", "a/data/0"]);
        assert_eq!(zip.read("a/data/0").unwrap().unwrap(), &[1, 2, 3, 4]);
        assert!(zip.read("a/missing").is_none());
        // One flipped byte of data: the CRC catches it.
        let at = z.windows(5).position(|w| w == b"hello").unwrap();
        z[at] = b'j';
        let e = Zip::new(&z).unwrap().read("a/data.pkl").unwrap().unwrap_err();
        assert!(e.contains("a/data.pkl") && e.contains("CRC"), "{e}");
    }

    #[test]
    fn truncated_and_foreign_files_are_refused() {
        let z = stored_zip(&[("a/data.pkl", b"hello world, some data")]);
        for cut in [z.len() - 1, z.len() / 2, 10, 0] {
            assert!(Zip::new(&z[..cut]).is_err(), "cut at {cut}");
        }
        let e = Zip::new(b"\x80\x02}q\x00.").err().unwrap();
        assert!(e.contains("not a zip archive"), "{e}");
        // A central directory that points past the end of the file.
        let mut bad = z.clone();
        let n = bad.len();
        bad[n - 6..n - 2].copy_from_slice(&(n as u32 * 2).to_le_bytes());
        assert!(Zip::new(&bad).err().unwrap().contains("outside the file"));
    }
}
