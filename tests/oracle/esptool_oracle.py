"""Batch oracle over the real esptool (PyPI): one process answers every case of a test.

Reads one JSON request on stdin, writes one JSON answer on stdout.
  {"op": "image_info", "files": [path, ...]}
      -> {"reports": [{"ok": bool, "stdout": str, "error": str|null}, ...]}
         stdout is what `esptool image-info FILE` prints after its first line ("esptool vX").
  {"op": "elf2image", "chip": "esp32c6", "elf": path, "cases": [{"args": [...], "out": path}, ...]}
      -> {"reports": [...]}: runs `esptool --chip CHIP elf2image ARGS -o OUT ELF` in-process
         (the real CLI entry point), then image-info on OUT.
  {"op": "elf2image_cases", "cases": [{"chip": str, "elf": path, "args": [...], "out": path}, ...]}
      -> {"results": [{"ok": bool, "error": str|null}, ...]}: `esptool --chip CHIP elf2image ARGS
         -o OUT ELF` per case, nothing else (the caller compares the bytes).
  {"op": "memory_map", "chips": [str, ...]}
      -> {"maps": [[[start, end, name], ...], ...]}: each chip's `MEMORY_MAP` (esptool targets/*.py),
         what elf2image's merging compares and image-info prints.
  {"op": "merge_bin", "cases": [{"chip": str, "args": [...], "out": path}, ...]}
      -> {"results": [{"ok": bool, "error": str|null}, ...]}: `esptool --chip CHIP merge-bin -o OUT ARGS`.
"""
import contextlib
import io
import json
import sys

import esptool
from esptool.cmds import image_info


def run_cli(argv):
    """esptool's click CLI in-process; returns (ok, captured output)."""
    out = io.StringIO()
    ok = True
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            esptool.main(argv)
        except SystemExit as e:
            ok = e.code in (0, None)
        except Exception as e:  # esptool.FatalError and friends
            print(f"{type(e).__name__}: {e}")
            ok = False
    return ok, out.getvalue()


def info(path):
    out = io.StringIO()
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            image_info(path)
        return {"ok": True, "stdout": out.getvalue(), "error": None}
    except Exception as e:
        return {"ok": False, "stdout": out.getvalue(), "error": f"{e}"}


def main():
    req = json.load(sys.stdin)
    op = req["op"]
    if op == "image_info":
        ans = {"reports": [info(f) for f in req["files"]]}
    elif op == "elf2image":
        reports = []
        for case in req["cases"]:
            argv = ["--chip", req["chip"], "elf2image", *case["args"], "-o", case["out"], req["elf"]]
            ok, log = run_cli(argv)
            r = info(case["out"]) if ok else {"ok": False, "stdout": "", "error": log}
            reports.append(r)
        ans = {"reports": reports}
    elif op == "elf2image_cases":
        results = []
        for case in req["cases"]:
            argv = ["--chip", case["chip"], "elf2image", *case["args"], "-o", case["out"], case["elf"]]
            ok, log = run_cli(argv)
            results.append({"ok": ok, "error": None if ok else log})
        ans = {"results": results}
    elif op == "memory_map":
        from esptool.targets import CHIP_DEFS

        ans = {"maps": [[list(r) for r in CHIP_DEFS[c].MEMORY_MAP] for c in req["chips"]]}
    elif op == "merge_bin":
        results = []
        for case in req["cases"]:
            ok, log = run_cli(["--chip", case["chip"], "merge-bin", "-o", case["out"], *case["args"]])
            results.append({"ok": ok, "error": None if ok else log})
        ans = {"results": results}
    else:
        raise SystemExit(f"unknown op {op!r}")
    json.dump(ans, sys.stdout)


if __name__ == "__main__":
    main()
