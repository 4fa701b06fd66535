"""Batch oracle for delta patches: the real detools (PyPI `detools`) makes and applies them.

stdin:  {"cases": [{"op": "create", "from": path, "to": path, "patch": path,
                    "compression": "heatshrink"|"none"|"lzma"|..., "esp_header": bool,
                    "chip": "esp32"|..., "args": {extra detools.create_patch keyword args}},
                   {"op": "apply", "from": path, "patch": path, "to": path}]}
stdout: {"results": [{"ok": true, "size": n} | {"ok": false, "error": text}, ...]}

"create" calls `detools.create_patch(..., compression=c)` (what `detools create_patch -c c`
runs). With "esp_header" the patch is framed as espressif/idf-extra-components
`esp_delta_ota/examples/https_delta_ota/tools/esp_delta_ota_patch_gen.py` frames it: magic
0xfccdde10 little-endian, the base's "Validation Hash" as esptool image-info prints it (the
image's appended SHA-256, which esptool checks against its own), 28 zero bytes, the patch.
"apply" is `detools.apply_patch` (what `detools apply_patch` runs).
"""
import io
import json
import struct
import sys

import detools
from esptool.bin_image import LoadFirmwareImage

ESP_DELTA_OTA_MAGIC = 0xFCCDDE10


def create(c):
    out = io.BytesIO()
    with open(c["from"], "rb") as ff, open(c["to"], "rb") as ft:
        detools.create_patch(ff, ft, out, compression=c["compression"], **c.get("args", {}))
    patch = out.getvalue()
    if c.get("esp_header"):
        image = LoadFirmwareImage(c.get("chip", "esp32"), c["from"])
        if not image.append_digest or image.stored_digest != image.calc_digest:
            raise ValueError("base has no valid appended SHA-256")
        header = struct.pack("<I", ESP_DELTA_OTA_MAGIC) + image.stored_digest + bytes(28)
        patch = header + patch
    with open(c["patch"], "wb") as f:
        f.write(patch)
    return len(patch)


def apply(c):
    with open(c["from"], "rb") as ff, open(c["patch"], "rb") as fp, open(c["to"], "wb") as ft:
        return detools.apply_patch(ff, fp, ft)


def main():
    req = json.load(sys.stdin)
    results = []
    for c in req["cases"]:
        try:
            size = create(c) if c["op"] == "create" else apply(c)
            results.append({"ok": True, "size": size})
        except Exception as e:  # reported per case; the test decides
            results.append({"ok": False, "error": "%s: %s" % (type(e).__name__, e)})
    json.dump({"results": results}, sys.stdout)


main()
