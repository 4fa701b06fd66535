//! Type and subtype names of gen_esp32part.py (`TYPES`, `SUBTYPES`), in the upstream dict
//! order (it shows in the "Known keywords" messages). esp-idf gen_esp32part.py.

use super::{
    SUBTYPE_APP_FACTORY, SUBTYPE_APP_OTA_0, SUBTYPE_APP_TEST, SUBTYPE_DATA_EFUSE, SUBTYPE_DATA_NVS,
    SUBTYPE_DATA_NVS_KEYS, SUBTYPE_DATA_OTA, SUBTYPE_DATA_PHY, TYPE_APP, TYPE_BOOTLOADER,
    TYPE_DATA, TYPE_PARTITION_TABLE,
};

/// `TYPES` (gen_esp32part.py).
pub(crate) const TYPE_NAMES: &[(&str, u8)] = &[
    ("bootloader", TYPE_BOOTLOADER),
    ("partition_table", TYPE_PARTITION_TABLE),
    ("app", TYPE_APP),
    ("data", TYPE_DATA),
];

const BOOTLOADER_SUBTYPES: &[(&str, u8)] = &[("primary", 0x00), ("ota", 0x01), ("recovery", 0x02)];
const PARTITION_TABLE_SUBTYPES: &[(&str, u8)] = &[("primary", 0x00), ("ota", 0x01)];
/// `factory`, `test`, then `ota_0..ota_15` (0x10..), then `tee_0`, `tee_1` (0x30..) (gen_esp32part.py).
const APP_SUBTYPES: &[(&str, u8)] = &[
    ("factory", 0x00),
    ("test", 0x20),
    ("ota_0", 0x10),
    ("ota_1", 0x11),
    ("ota_2", 0x12),
    ("ota_3", 0x13),
    ("ota_4", 0x14),
    ("ota_5", 0x15),
    ("ota_6", 0x16),
    ("ota_7", 0x17),
    ("ota_8", 0x18),
    ("ota_9", 0x19),
    ("ota_10", 0x1A),
    ("ota_11", 0x1B),
    ("ota_12", 0x1C),
    ("ota_13", 0x1D),
    ("ota_14", 0x1E),
    ("ota_15", 0x1F),
    ("tee_0", 0x30),
    ("tee_1", 0x31),
];
const DATA_SUBTYPES: &[(&str, u8)] = &[
    ("ota", 0x00),
    ("phy", 0x01),
    ("nvs", 0x02),
    ("coredump", 0x03),
    ("nvs_keys", 0x04),
    ("efuse", 0x05),
    ("undefined", 0x06),
    ("esphttpd", 0x80),
    ("fat", 0x81),
    ("spiffs", 0x82),
    ("littlefs", 0x83),
    ("tee_ota", 0x90),
];

/// `SUBTYPES.get(ptype, {})`: the names for one type (empty for custom types).
pub(crate) fn subtype_table(ptype: i64) -> &'static [(&'static str, u8)] {
    match u8::try_from(ptype) {
        Ok(TYPE_APP) => APP_SUBTYPES,
        Ok(TYPE_DATA) => DATA_SUBTYPES,
        Ok(TYPE_BOOTLOADER) => BOOTLOADER_SUBTYPES,
        Ok(TYPE_PARTITION_TABLE) => PARTITION_TABLE_SUBTYPES,
        _ => &[],
    }
}

fn lookup(table: &[(&'static str, u8)], v: u8) -> Option<&'static str> {
    table.iter().find(|(_, x)| *x == v).map(|(n, _)| *n)
}

/// gen_esp32part.py's name of a partition type (`app`, `data`, `bootloader`, `partition_table`).
pub fn type_name(ptype: u8) -> Option<&'static str> {
    lookup(TYPE_NAMES, ptype)
}

/// gen_esp32part.py's name of a subtype of `ptype` (`factory`, `ota_3`, `nvs`, ...).
pub fn subtype_name(ptype: u8, subtype: u8) -> Option<&'static str> {
    lookup(subtype_table(i64::from(ptype)), subtype)
}

/// OTA app subtypes are `ota_0` + 0..15 (`PART_SUBTYPE_OTA_FLAG` 0x10, `PART_SUBTYPE_OTA_MASK`
/// 0x0f, `esp_flash_partitions.h`).
const OTA_SLOTS: u8 = 16;

/// The 2nd-stage bootloader's "Usage" column for a partition, as it prints its partition
/// table at boot (`partition_usage` in `bootloader_utility_load_partition_table`, esp-idf
/// `components/bootloader_support/src/bootloader_utility.c`): `factory app`, `OTA app`,
/// `OTA data`, `RF data`, `WiFi data` (NVS), `NVS keys`, `efuse`, `Unknown app/data`, `unknown`.
pub fn bootloader_usage(ptype: u8, subtype: u8) -> &'static str {
    match (ptype, subtype) {
        (TYPE_APP, SUBTYPE_APP_FACTORY) => "factory app",
        (TYPE_APP, SUBTYPE_APP_TEST) => "test app",
        (TYPE_APP, s) if (SUBTYPE_APP_OTA_0..SUBTYPE_APP_OTA_0 + OTA_SLOTS).contains(&s) => {
            "OTA app"
        }
        (TYPE_APP, _) => "Unknown app",
        (TYPE_DATA, SUBTYPE_DATA_OTA) => "OTA data",
        (TYPE_DATA, SUBTYPE_DATA_PHY) => "RF data",
        (TYPE_DATA, SUBTYPE_DATA_NVS) => "WiFi data",
        (TYPE_DATA, SUBTYPE_DATA_NVS_KEYS) => "NVS keys",
        (TYPE_DATA, SUBTYPE_DATA_EFUSE) => "efuse",
        (TYPE_DATA, _) => "Unknown data",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootloader_usage_names_each_kind_as_the_bootloader_prints_it() {
        let cases = [
            (TYPE_APP, SUBTYPE_APP_FACTORY, "factory app"),
            (TYPE_APP, SUBTYPE_APP_TEST, "test app"),
            (TYPE_APP, SUBTYPE_APP_OTA_0, "OTA app"),
            (TYPE_APP, SUBTYPE_APP_OTA_0 + 15, "OTA app"),
            (TYPE_APP, SUBTYPE_APP_OTA_0 + 16, "test app"),
            (TYPE_APP, 0x30, "Unknown app"),
            (TYPE_DATA, SUBTYPE_DATA_OTA, "OTA data"),
            (TYPE_DATA, SUBTYPE_DATA_PHY, "RF data"),
            (TYPE_DATA, SUBTYPE_DATA_NVS, "WiFi data"),
            (TYPE_DATA, SUBTYPE_DATA_NVS_KEYS, "NVS keys"),
            (TYPE_DATA, SUBTYPE_DATA_EFUSE, "efuse"),
            (TYPE_DATA, 0x03, "Unknown data"),
            (TYPE_DATA, 0x82, "Unknown data"),
            (TYPE_BOOTLOADER, 0x00, "unknown"),
            (0x40, 0x00, "unknown"),
        ];
        for (t, s, want) in cases {
            assert_eq!(
                bootloader_usage(t, s),
                want,
                "type 0x{t:02x} subtype 0x{s:02x}"
            );
        }
    }
}
