"""Bundles the helm shim (tests/helm/helm) and helm-python-sdk's wheel into one executable zip.

    python3 tests/helm/bundle.py WHEEL SHIM INTERPRETER OUT

strata runs helm in a sandbox that reads the helm program but not the directories beside it, so
the shim carries the SDK inside itself: its Python modules (imported from the zip) and the
native library (stored uncompressed; the shim copies it out to its scratch directory to load it).
INTERPRETER must be a Python (3.10 or later) in a system directory the sandbox can execute.
"""

import os
import sys
import zipfile


def main(wheel, shim, interpreter, out):
    partial = out + ".partial"
    with zipfile.ZipFile(wheel) as src, open(partial, "wb") as raw:
        raw.write(f"#!{interpreter}\n".encode())
        with zipfile.ZipFile(raw, "w") as dst:
            dst.write(shim, "__main__.py", compress_type=zipfile.ZIP_DEFLATED)
            library = None
            for info in src.infolist():
                name = info.filename
                if not name.startswith("helm_python/") or name.endswith("/"):
                    continue
                if "/lib/" in name:
                    # One copy of the library (the wheel holds it under three names), stored.
                    if library is None or len(name) > len(library):
                        library = name
                    continue
                dst.writestr(name, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
            if library is None:
                sys.exit(f"{wheel} holds no native library")
            with src.open(library) as data, dst.open(
                zipfile.ZipInfo("helm_python/lib/libhelm_c.so", date_time=(1980, 1, 1, 0, 0, 0)), "w"
            ) as stored:
                while chunk := data.read(1 << 20):
                    stored.write(chunk)
    os.chmod(partial, 0o755)
    os.replace(partial, out)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
