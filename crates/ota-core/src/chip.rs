//! ESP32-family chips: ids, names, bootloader offsets (idf-formats.md §1.1, §3.3).

/// A chip of the ESP32 family, as named in the image header's `chip_id` (idf-formats.md §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Chip {
    Esp32,
    Esp32s2,
    Esp32c3,
    Esp32s3,
    Esp32c2,
    Esp32c6,
    Esp32h2,
    Esp32p4,
    Esp32c61,
    Esp32c5,
    Esp32h21,
    Esp32h4,
}

impl Chip {
    /// Every chip we know, in chip-id order.
    pub const ALL: [Chip; 12] = [
        Chip::Esp32,
        Chip::Esp32s2,
        Chip::Esp32c3,
        Chip::Esp32s3,
        Chip::Esp32c2,
        Chip::Esp32c6,
        Chip::Esp32h2,
        Chip::Esp32p4,
        Chip::Esp32c61,
        Chip::Esp32c5,
        Chip::Esp32h21,
        Chip::Esp32h4,
    ];

    /// `esp_chip_id_t` value stored at image header offset 0x0C (idf-formats.md §3.3).
    pub const fn id(self) -> u16 {
        match self {
            Chip::Esp32 => 0x0000,
            Chip::Esp32s2 => 0x0002,
            Chip::Esp32c3 => 0x0005,
            Chip::Esp32s3 => 0x0009,
            Chip::Esp32c2 => 0x000C,
            Chip::Esp32c6 => 0x000D,
            Chip::Esp32h2 => 0x0010,
            Chip::Esp32p4 => 0x0012,
            Chip::Esp32c61 => 0x0014,
            Chip::Esp32c5 => 0x0017,
            Chip::Esp32h21 => 0x0019,
            Chip::Esp32h4 => 0x001C,
        }
    }

    pub fn from_id(id: u16) -> Option<Chip> {
        Chip::ALL.into_iter().find(|c| c.id() == id)
    }

    /// esptool's lowercase name (`esp32s2`), as used by `--chip`.
    pub const fn name(self) -> &'static str {
        match self {
            Chip::Esp32 => "esp32",
            Chip::Esp32s2 => "esp32s2",
            Chip::Esp32c3 => "esp32c3",
            Chip::Esp32s3 => "esp32s3",
            Chip::Esp32c2 => "esp32c2",
            Chip::Esp32c6 => "esp32c6",
            Chip::Esp32h2 => "esp32h2",
            Chip::Esp32p4 => "esp32p4",
            Chip::Esp32c61 => "esp32c61",
            Chip::Esp32c5 => "esp32c5",
            Chip::Esp32h21 => "esp32h21",
            Chip::Esp32h4 => "esp32h4",
        }
    }

    /// esptool's display name (`ESP32-S2`).
    pub const fn display_name(self) -> &'static str {
        match self {
            Chip::Esp32 => "ESP32",
            Chip::Esp32s2 => "ESP32-S2",
            Chip::Esp32c3 => "ESP32-C3",
            Chip::Esp32s3 => "ESP32-S3",
            Chip::Esp32c2 => "ESP32-C2",
            Chip::Esp32c6 => "ESP32-C6",
            Chip::Esp32h2 => "ESP32-H2",
            Chip::Esp32p4 => "ESP32-P4",
            Chip::Esp32c61 => "ESP32-C61",
            Chip::Esp32c5 => "ESP32-C5",
            Chip::Esp32h21 => "ESP32-H21",
            Chip::Esp32h4 => "ESP32-H4",
        }
    }

    /// Parse esptool's lowercase name (also accepts `ESP32-S2` style and `esp32-s2`).
    pub fn from_name(name: &str) -> Option<Chip> {
        let mut buf = [0u8; 16];
        let mut n = 0;
        for b in name.bytes() {
            if b == b'-' || b == b'_' {
                continue;
            }
            if n == buf.len() {
                return None;
            }
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        }
        let norm = core::str::from_utf8(&buf[..n]).ok()?;
        Chip::ALL.into_iter().find(|c| c.name() == norm)
    }

    /// Where the ROM loads the 2nd-stage bootloader from (idf-formats.md §1.1).
    pub const fn bootloader_offset(self) -> u32 {
        match self {
            Chip::Esp32 | Chip::Esp32s2 => 0x1000,
            Chip::Esp32c5 | Chip::Esp32p4 => 0x2000,
            _ => 0x0,
        }
    }
}

impl core::fmt::Display for Chip {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_names_parse() {
        for c in Chip::ALL {
            assert_eq!(Chip::from_id(c.id()), Some(c));
            assert_eq!(Chip::from_name(c.name()), Some(c));
            assert_eq!(Chip::from_name(c.display_name()), Some(c));
        }
        assert_eq!(Chip::from_id(0xFFFF), None);
        assert_eq!(Chip::Esp32s2.bootloader_offset(), 0x1000);
        assert_eq!(Chip::Esp32c3.bootloader_offset(), 0);
    }
}
