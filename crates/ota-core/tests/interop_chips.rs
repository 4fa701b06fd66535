//! Interop, chips: ota-core's memory map of every chip is esptool's, row for row (the real
//! esptool from PyPI, asked once for all chips by `tests/oracle/esptool_oracle.py`).

#[path = "../../../tests/interop/mod.rs"]
mod interop;

use interop::python;
use ota_core::Chip;
use serde_json::json;

#[test]
fn every_chip_memory_map_is_esptools_row_for_row() {
    // elf2image merges two sections only when their start addresses have the same memory
    // types, so the maps must be esptool's exactly (order included: it compares lists).
    let Some(py) = python() else { return };
    let names: Vec<&str> = Chip::ALL.iter().map(|c| c.name()).collect();
    let answer = interop::ask(
        py.as_path(),
        "esptool_oracle.py",
        &json!({"op": "memory_map", "chips": names}),
    );
    for (chip, map) in Chip::ALL.iter().zip(answer["maps"].as_array().unwrap()) {
        let theirs: Vec<(u64, u64, String)> = map
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[0].as_u64().unwrap(),
                    r[1].as_u64().unwrap(),
                    r[2].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let ours: Vec<(u64, u64, String)> = chip
            .memory_map()
            .iter()
            .map(|r| (r.start as u64, r.end as u64, r.kind.name().to_string()))
            .collect();
        assert!(!theirs.is_empty(), "{chip}");
        assert_eq!(ours, theirs, "{chip}");
    }
}
