//! Interop, otadata: random sequences of set-boot-partition / mark-valid / mark-invalid on
//! 2..16 OTA slots, run by ota-core (`OtaData::set_boot` / `mark_valid` / `mark_invalid` on an
//! in-memory NOR flash (`mem_flash::MemFlash`, 4-byte words), rollback-enabled build: new entries are NEW) and judged step by step by
//! two models in one Python process: ESP-IDF v6 as esp-idf `bootloader_common_loader.c`, `esp_ota_ops.c` states it (must be
//! equal on every step: sector bytes, sector written, active slot), and esp-idf-defs' otadata
//! logic (equal wherever its rules are ESP-IDF's; every step where they differ must differ in
//! exactly one of the documented ways — see README "Coming from ESP-IDF", otadata).

#[path = "../../../tests/interop/mod.rs"]
mod interop;

use std::collections::BTreeMap;

use embedded_storage::nor_flash::ReadNorFlash;
use interop::python;
use ota_core::mem_flash::MemFlash;
use ota_core::otadata::{OtaData, OtaState, RollbackCandidate, ENTRY_SIZE, OTADATA_SECTOR_SIZE};
use ota_core::partition::{Label, Partition, SUBTYPE_DATA_OTA, TYPE_DATA};

/// The otadata partition's flash: 4-byte reads and writes, as the emulator's and esp-storage's.
type Flash<'a> = MemFlash<'a, 4, 4>;
use rand::Rng;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    SetBoot(u8),
    MarkValid,
    MarkInvalid,
}

struct Step {
    count: u8,
    op: Op,
    before: [[u8; ENTRY_SIZE]; 2],
    after: [[u8; ENTRY_SIZE]; 2],
    wrote: Option<usize>,
    active: Option<usize>,
    active_slot: Option<u8>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{:02x}", x)).collect()
}

fn sectors(flash: &mut Flash<'_>) -> [[u8; ENTRY_SIZE]; 2] {
    let mut s = [[0u8; ENTRY_SIZE]; 2];
    for (i, e) in s.iter_mut().enumerate() {
        flash.read(i as u32 * OTADATA_SECTOR_SIZE, e).unwrap();
    }
    s
}

/// Run one random sequence on ota-core, recording every step.
fn run_sequence(rng: &mut impl Rng, steps: &mut Vec<Step>) {
    let count: u8 = rng.gen_range(2..=16);
    let part = Partition {
        ptype: TYPE_DATA,
        subtype: SUBTYPE_DATA_OTA,
        offset: 0,
        size: 0x2000,
        label: Label::new("otadata"),
        flags: 0,
    };
    let mut mem = vec![0u8; 0x2000];
    let mut flash = Flash::erased(&mut mem);
    let len = rng.gen_range(1..=16);
    for _ in 0..len {
        let op = match rng.gen_range(0..10) {
            0..=5 => Op::SetBoot(rng.gen_range(0..count)),
            6 | 7 => Op::MarkValid,
            _ => Op::MarkInvalid,
        };
        let before = sectors(&mut flash);
        let mut od = OtaData::read(&mut flash, &part).unwrap();
        let wrote = match op {
            Op::SetBoot(s) => Some(od.set_boot(&mut flash, &part, s, count, true).unwrap()),
            // No active entry: ESP_FAIL, nothing written.
            Op::MarkValid => od.mark_valid(&mut flash, &part, count).unwrap_or_default(),
            Op::MarkInvalid => {
                // The other slot's image verifies; these tables have no factory app.
                let other_ok = matches!(
                    od.rollback_candidate(count),
                    Some(RollbackCandidate::Slot { .. })
                );
                od.mark_invalid(&mut flash, &part, count, other_ok).ok()
            }
        };
        let after = sectors(&mut flash);
        // NOR: every otadata write erased its whole sector first.
        let c = flash.memory();
        for i in 0..2 {
            let base = i * OTADATA_SECTOR_SIZE as usize;
            assert!(c[base + ENTRY_SIZE..base + OTADATA_SECTOR_SIZE as usize]
                .iter()
                .all(|&b| b == 0xFF));
        }
        let od = OtaData::read(&mut flash, &part).unwrap();
        steps.push(Step {
            count,
            op,
            before,
            after,
            wrote,
            active: od.active(),
            active_slot: od.boot_slot(count),
        });
    }
}

fn res_json(s: &Step) -> Value {
    json!({"sectors": [hex(&s.after[0]), hex(&s.after[1])], "wrote": s.wrote,
           "active": s.active, "active_slot": s.active_slot})
}

/// esp-idf-defs' view of two entries: `from_bytes` only drops erased seqs (its CRC check
/// compares the CRC with itself); `select` takes the higher seq, ties to entry b.
fn defs_active(s: &[[u8; ENTRY_SIZE]; 2]) -> Option<usize> {
    let seq = |b: &[u8; ENTRY_SIZE]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let present = |b: &[u8; ENTRY_SIZE]| seq(b) != u32::MAX;
    match (present(&s[0]), present(&s[1])) {
        (false, false) => None,
        (true, false) => Some(0),
        (false, true) => Some(1),
        (true, true) => Some(if seq(&s[0]) > seq(&s[1]) { 0 } else { 1 }),
    }
}

fn has_invalid_state(s: &[[u8; ENTRY_SIZE]; 2]) -> bool {
    s.iter().any(|b| {
        let st = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
        let seq = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        seq != u32::MAX
            && matches!(
                OtaState::from_u32(st),
                OtaState::Invalid | OtaState::Aborted
            )
    })
}

#[test]
fn random_otadata_sequences_match_esp_idf_v6_and_esp_idf_defs() {
    let Some(py) = python() else { return };
    let seed = interop::seed("otadata");
    let mut rng = interop::rng(seed);
    let n = interop::cases(300);
    let mut steps = Vec::new();
    for _ in 0..n {
        run_sequence(&mut rng, &mut steps);
    }
    let req: Vec<Value> = steps
        .iter()
        .map(|s| {
            let (op, slot) = match s.op {
                Op::SetBoot(k) => ("set_boot", k),
                Op::MarkValid => ("mark_valid", 0),
                Op::MarkInvalid => ("mark_invalid", 0),
            };
            json!({"count": s.count, "sectors": [hex(&s.before[0]), hex(&s.before[1])], "op": op, "slot": slot})
        })
        .collect();
    let answer = interop::ask(&py, "otadata_oracle.py", &json!({"steps": req}));
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), steps.len());
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, (s, r)) in steps.iter().zip(results).enumerate() {
        let ours = res_json(s);
        let ctx = format!(
            "step {} ({:?} on {} slots) from [{}, {}]",
            i,
            s.op,
            s.count,
            hex(&s.before[0]),
            hex(&s.before[1])
        );
        // 1. ESP-IDF v6 rules: always equal.
        assert_eq!(ours, r["v6"], "differs from the ESP-IDF v6 model: {}", ctx);
        // 2. esp-idf-defs: equal where its rules are ESP-IDF's, else one documented difference.
        let d = &r["defs"];
        let ours_active = OtaData::from_sectors(&s.before[0], &s.before[1]).active();
        let theirs_active = defs_active(&s.before);
        let class = if ours_active != theirs_active || has_invalid_state(&s.before) {
            // D2: esp-idf-defs does not skip INVALID/ABORTED entries (nor bad CRCs) when it
            // selects; ESP-IDF does. The models then act on different entries.
            assert!(
                has_invalid_state(&s.before) || ours_active.is_none(),
                "{}",
                ctx
            );
            "D2 esp-idf-defs selects INVALID/ABORTED entries"
        } else if s.wrote.is_none() && !matches!(s.op, Op::SetBoot(_)) {
            // ESP-IDF refuses (no active entry, or rollback impossible) or has nothing to do
            // (already VALID): it writes nothing. esp-idf-defs has no such rule.
            match s.op {
                Op::MarkValid if ours_active.is_some() => {
                    // Already VALID: both leave the same bytes.
                    assert_eq!(ours["sectors"], d["sectors"], "{}", ctx);
                    "equal"
                }
                _ => "D3 refused by ESP-IDF (no active entry / rollback impossible)",
            }
        } else {
            match (s.op, ours_active) {
                (Op::SetBoot(_), None) => {
                    // D1: from erased otadata ESP-IDF writes sector 0, esp-idf-defs sector 1
                    // (its `a_or_b` of "none selected" swaps to 'b'); the entry bytes are equal.
                    assert_eq!(s.wrote, Some(0), "{}", ctx);
                    assert_eq!(d["wrote"], 1, "{}", ctx);
                    assert_eq!(d["sectors"][1], ours["sectors"][0], "{}", ctx);
                    assert_eq!(d["active_slot"], ours["active_slot"], "{}", ctx);
                    "D1 first set-boot: sector 1 instead of 0"
                }
                (Op::SetBoot(k), Some(a))
                    if OtaData::from_sectors(&s.before[0], &s.before[1]).entries[a]
                        .slot(s.count)
                        == Some(k) =>
                {
                    // D4: re-selecting the active slot: ESP-IDF v6 rewrites the same sector with
                    // the same seq; esp-idf-defs writes the other sector with seq + count.
                    let seq = |h: &Value| {
                        let b: Vec<u8> = (0..4)
                            .map(|j| {
                                u8::from_str_radix(&h.as_str().unwrap()[j * 2..j * 2 + 2], 16)
                                    .unwrap()
                            })
                            .collect();
                        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                    };
                    assert_eq!(s.wrote, Some(a), "{}", ctx);
                    assert_eq!(d["wrote"], 1 - a, "{}", ctx);
                    assert_eq!(
                        seq(&d["sectors"][1 - a]),
                        seq(&ours["sectors"][a]) + u32::from(s.count),
                        "{}",
                        ctx
                    );
                    assert_eq!(d["active_slot"], ours["active_slot"], "{}", ctx);
                    "D4 same slot again: other sector, seq + count"
                }
                _ => {
                    let what = "differs from esp-idf-defs where its rules are ESP-IDF's";
                    assert_eq!(ours["sectors"], d["sectors"], "{}: {}", what, ctx);
                    assert_eq!(ours["wrote"], d["wrote"], "{}: {}", what, ctx);
                    if has_invalid_state(&s.after) {
                        // Same bytes; the active entry then differs by D2 (esp-idf-defs still
                        // selects the entry just marked INVALID when its seq is the highest).
                        assert_eq!(d["active"], json!(defs_active(&s.after)), "{}", ctx);
                        "equal bytes (active entry then differs by D2)"
                    } else {
                        assert_eq!(ours, *d, "{}: {}", what, ctx);
                        "equal"
                    }
                }
            }
        };
        *classes.entry(class).or_default() += 1;
    }
    let equal = classes.get("equal").copied().unwrap_or(0)
        + classes
            .get("equal bytes (active entry then differs by D2)")
            .copied()
            .unwrap_or(0);
    assert!(
        equal * 2 > steps.len(),
        "too few comparable steps: {:?}",
        classes
    );
    eprintln!(
        "interop otadata: {} sequences, {} steps, seed {:#x}, all equal to the ESP-IDF v6 model; \
         esp-idf-defs: {:?}",
        n,
        steps.len(),
        seed,
        classes
    );
}
