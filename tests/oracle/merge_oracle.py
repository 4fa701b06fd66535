"""Batch oracle for whole flash images: for each case it builds the partition table with
esp-idf-defs (gen_esp32part code), the otadata image with esp-idf-defs' OtaDataSelectEntry,
merges them with the caller's bootloader and app files by running the real `esptool merge-bin`
CLI in-process, and says which app the ESP-IDF 2nd-stage bootloader boots (esp-idf `bootloader_common_loader.c`, `bootloader_utility.c`, default config: no rollback), from the entries and the set of slots that hold an
image that verifies.

stdin:  {"cases": [{"chip": str, "out": path, "table_csv": str, "table_out": path,
                    "otadata_out": path, "otadata_offset": int,
                    "entries": [null | {"seq": int, "state": int, "bad_crc": bool}, x2],
                    "files": [[addr, path], ...], "merge_args": [...],
                    "n_ota": int, "has_factory": bool, "bootable": [idx, ...]}, ...]}
        (idx -1 = factory, N = ota_N)
stdout: {"results": [{"ok": bool, "error": str|null, "expected": idx|null}, ...]}
"""
import binascii
import contextlib
import io
import json
import struct
import sys

import esptool
from esp_idf_defs.otadata import OtaDataSelectEntry, OtaImageState
from esp_idf_defs.partitions import PartitionTable

FACTORY = -1
INVALID, ABORTED = 3, 4


def crc(seq):
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


def otadata_image(entries):
    img = bytearray(b"\xff" * 0x2000)
    for i, e in enumerate(entries):
        if e is None:
            continue
        b = bytearray(OtaDataSelectEntry(e["seq"], OtaImageState(e["state"])).to_bytes())
        if e.get("bad_crc"):
            b[28] ^= 0x01
        img[i * 0x1000:i * 0x1000 + 32] = b
    return bytes(img)


def expected_boot(case):
    """ESP-IDF bootloader selection (`bootloader_utility.c`, no rollback / anti-rollback) + load_boot_image order."""
    n = case["n_ota"]
    es = []
    for e in case["entries"]:
        if e is None:
            es.append({"seq": 0xFFFFFFFF, "state": 0xFFFFFFFF, "crc_ok": False})
        else:
            es.append({"seq": e["seq"], "state": e["state"], "crc_ok": not e.get("bad_crc")})

    def invalid(e):
        return e["seq"] == 0xFFFFFFFF or e["state"] in (INVALID, ABORTED)

    def valid(e):
        return not invalid(e) and e["crc_ok"]

    if (invalid(es[0]) and invalid(es[1])) or n == 0:
        start = FACTORY if case["has_factory"] else 0
    else:
        ok = [valid(e) for e in es]
        if ok[0] and ok[1]:
            a = 0 if max(es[0]["seq"], es[1]["seq"]) == es[0]["seq"] else 1
        elif ok[0]:
            a = 0
        elif ok[1]:
            a = 1
        else:
            a = None
        start = ((es[a]["seq"] - 1) % n) if a is not None else FACTORY
    order = list(range(start, FACTORY - 1, -1)) + list(range(start + 1, n))
    exists = set(range(n)) | ({FACTORY} if case["has_factory"] else set())
    for idx in order:
        if idx in exists and idx in case["bootable"]:
            return idx
    return None


def one(case):
    table = PartitionTable.from_csv(case["table_csv"])
    table.verify()
    with open(case["table_out"], "wb") as f:
        f.write(table.to_binary())
    with open(case["otadata_out"], "wb") as f:
        f.write(otadata_image(case["entries"]))
    pairs = []
    for addr, path in case["files"] + [[0x8000, case["table_out"]], [case["otadata_offset"], case["otadata_out"]]]:
        pairs += [hex(addr), path]
    out = io.StringIO()
    ok = True
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            esptool.main(["--chip", case["chip"], "merge-bin", "-o", case["out"], *case["merge_args"], *pairs])
        except SystemExit as e:
            ok = e.code in (0, None)
        except Exception as e:
            print(f"{type(e).__name__}: {e}")
            ok = False
    return {"ok": ok, "error": None if ok else out.getvalue(), "expected": expected_boot(case)}


def main():
    req = json.load(sys.stdin)
    json.dump({"results": [one(c) for c in req["cases"]]}, sys.stdout)


if __name__ == "__main__":
    main()
