"""Batch oracle for otadata: two independent models answer every step of every sequence.

  * "defs": esp-idf-defs' otadata logic (PyPI `esp-idf-defs`, `esp_idf_defs.otadata`):
    OtaDataSelectEntry.from_bytes / select / OtaDataParameters.incremented_and_swapped /
    to_bytes. It has no mark-valid / mark-invalid: those are done with its own pieces (rewrite
    the selected entry with OtaDataSelectEntry(seq, state).to_bytes() in the selected sector).
  * "v6": ESP-IDF v6 as esp-idf `bootloader_common_loader.c`, `esp_ota_ops.c` writes it in pseudo-code
    (esp_rewrite_ota_data, esp_ota_mark_app_valid_cancel_rollback,
    esp_ota_mark_app_invalid_rollback with the rollback check, rollback-enabled build: NEW).

stdin:  {"steps": [{"count": n, "sectors": [hex64, hex64], "op": "set_boot"|"mark_valid"|"mark_invalid",
                    "slot": k}, ...]}   sectors = the first 32 bytes of otadata sectors 0 and 1 before
stdout: {"results": [{"defs": R, "v6": R}, ...]},
        R = {"sectors": [hex64, hex64], "wrote": 0|1|null, "active": 0|1|null, "active_slot": int|null}
"""
import binascii
import json
import struct
import sys

from esp_idf_defs.otadata import OtaDataParameters, OtaDataSelectEntry, OtaImageState

SEQ_ERASED = 0xFFFFFFFF
NEW, VALID, INVALID, ABORTED = 0, 2, 3, 4


def crc(seq):
    # esp-idf `bootloader_common_loader.c`: binascii.crc32(le32(seq), 0xFFFFFFFF)
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


# ---------------------------------------------------------------- esp-idf-defs


def defs_select(sectors):
    a = OtaDataSelectEntry.from_bytes(sectors[0])
    b = OtaDataSelectEntry.from_bytes(sectors[1])
    return OtaDataSelectEntry.select(a, b)


def defs_step(step, sectors):
    n = step["count"]
    sel, ab = defs_select(sectors)
    wrote = None
    out = list(sectors)
    if step["op"] == "set_boot":
        nxt = OtaDataParameters(sel, ab, n).incremented_and_swapped(step["slot"])
        wrote = 0 if nxt.a_or_b == "a" else 1
        out[wrote] = nxt.otadata.to_bytes()
    elif sel is not None:
        state = OtaImageState.VALID if step["op"] == "mark_valid" else OtaImageState.INVALID
        wrote = 0 if ab == "a" else 1
        out[wrote] = OtaDataSelectEntry(sel.seq, state).to_bytes()
    sel2, ab2 = defs_select(out)
    return {
        "sectors": [s.hex() for s in out],
        "wrote": wrote,
        "active": None if ab2 is None else (0 if ab2 == "a" else 1),
        "active_slot": None if sel2 is None else sel2.ota_slot(n),
    }


# ---------------------------------------------------------------- ESP-IDF v6 (`bootloader_common_loader.c`, `esp_ota_ops.c`)


def parse(b):
    seq, state, c = struct.unpack_from("<I20xII", b, 0)
    return {"seq": seq, "label": b[4:24], "state": state, "crc": c}


def pack(e):
    return struct.pack("<I", e["seq"]) + e["label"] + struct.pack("<II", e["state"], e["crc"])


def valid(e):
    invalid = e["seq"] == SEQ_ERASED or e["state"] in (INVALID, ABORTED)
    return not invalid and e["crc"] == crc(e["seq"])


def active(es):
    ok = [valid(e) for e in es]
    if ok[0] and ok[1]:
        return 0 if max(es[0]["seq"], es[1]["seq"]) == es[0]["seq"] else 1
    if ok[0]:
        return 0
    if ok[1]:
        return 1
    return None


def slot(e, n):
    return ((e["seq"] - 1) & 0xFFFFFFFF) % n


def rewrite(e, seq, state):
    return {"seq": seq, "label": e["label"], "state": state, "crc": crc(seq)}


def v6_step(step, sectors):
    n = step["count"]
    es = [parse(s) for s in sectors]
    a = active(es)
    wrote = None
    if step["op"] == "set_boot":
        target = step["slot"]
        if a is not None:
            if slot(es[a], n) == target:
                nxt, seq = a, es[a]["seq"]
            else:
                nxt = 1 - a
                base = (target + 1) % n
                i = 0
                while es[a]["seq"] > base + i * n:
                    i += 1
                seq = base + i * n
        else:
            nxt, seq = 0, target + 1
        es[nxt] = rewrite(es[nxt], seq, NEW)
        wrote = nxt
    elif step["op"] == "mark_valid":
        if a is not None and es[a]["state"] != VALID:
            es[a] = rewrite(es[a], es[a]["seq"], VALID)
            wrote = a
    elif step["op"] == "mark_invalid":
        # esp_ota_check_rollback_is_possible: the other entry is valid (its image verifies);
        # no factory app in these tables.
        if a is not None and valid(es[1 - a]):
            es[a] = rewrite(es[a], es[a]["seq"], INVALID)
            wrote = a
    a2 = active(es)
    return {
        "sectors": [pack(e).hex() for e in es],
        "wrote": wrote,
        "active": a2,
        "active_slot": None if a2 is None else slot(es[a2], n),
    }


def main():
    req = json.load(sys.stdin)
    results = []
    for step in req["steps"]:
        sectors = [bytes.fromhex(h) for h in step["sectors"]]
        results.append({"defs": defs_step(step, sectors), "v6": v6_step(step, sectors)})
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
