"""Batch oracle over the real detools (PyPI) for the patch maker's interop suite.

Reads one JSON request on stdin, writes one JSON answer on stdout.
  {"op": "judge", "cases": [{"old": path, "new": path, "patch": path, "compression": str,
                             "detools_patch": path}, ...]}
      -> {"results": [{"applied": bool, "equal": bool, "error": str|null,
                       "detools_size": int, "detools_applies": bool}, ...]}
         applies OUR patch with detools.apply_patch (what `detools apply_patch` runs) and
         compares the output with NEW byte for byte; then makes detools' own patch of the same
         pair with detools.create_patch(compression=...) (what `detools create_patch -c` runs)
         and reports its size.
"""
import io
import json
import sys

import detools


def judge(case):
    result = {"applied": False, "equal": False, "error": None}
    with open(case["new"], "rb") as f:
        new = f.read()
    try:
        out = io.BytesIO()
        with open(case["old"], "rb") as ffrom, open(case["patch"], "rb") as fpatch:
            detools.apply_patch(ffrom, fpatch, out)
        result["applied"] = True
        result["equal"] = out.getvalue() == new
    except Exception as e:  # noqa: BLE001 - the error text is the answer
        result["error"] = f"{type(e).__name__}: {e}"
    with open(case["old"], "rb") as ffrom, open(case["new"], "rb") as fto, \
            open(case["detools_patch"], "wb") as fpatch:
        detools.create_patch(ffrom, fto, fpatch, compression=case["compression"])
    with open(case["detools_patch"], "rb") as f:
        theirs = f.read()
    result["detools_size"] = len(theirs)
    check = io.BytesIO()
    with open(case["old"], "rb") as ffrom:
        detools.apply_patch(ffrom, io.BytesIO(theirs), check)
    result["detools_applies"] = check.getvalue() == new
    return result


def main():
    request = json.load(sys.stdin)
    if request.get("op") != "judge":
        raise SystemExit(f"unknown op {request.get('op')!r}")
    json.dump({"results": [judge(c) for c in request["cases"]]}, sys.stdout)


if __name__ == "__main__":
    main()
