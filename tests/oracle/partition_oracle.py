"""Batch oracle over esp-idf-defs' gen_esp32part code (PyPI `esp-idf-defs`, module
`esp_idf_defs.partitions`): one process answers every partition-table case of a test.

stdin:  {"cases": [{"csv": str, "table_offset": int, "primary_bootloader_offset": int|null,
                    "recovery_bootloader_offset": int|null, "md5": bool}, ...]}
stdout: {"results": [{"ok": true, "bin": hex, "csv": str} | {"ok": false, "error": str}, ...]}

For each case: PartitionTable.from_csv(...), .verify(partition_table_offset=...) (gen_esp32part.py
runs it unless --no-verify), .to_binary(md5); then PartitionTable.from_binary(bin).to_csv().
"""
import json
import sys

from esp_idf_defs.partitions import InputError, PartitionTable


def one(case):
    try:
        t = PartitionTable.from_csv(
            case["csv"],
            case["table_offset"],
            case.get("primary_bootloader_offset"),
            case.get("recovery_bootloader_offset"),
        )
        t.verify(partition_table_offset=case["table_offset"])
        b = t.to_binary(case.get("md5", True))
        back = PartitionTable.from_binary(b).to_csv()
        return {"ok": True, "bin": b.hex(), "csv": back}
    except InputError as e:
        return {"ok": False, "error": str(e)}
    except Exception as e:  # struct.error and the like: still a refusal
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}


def main():
    req = json.load(sys.stdin)
    json.dump({"results": [one(c) for c in req["cases"]]}, sys.stdout)


if __name__ == "__main__":
    main()
