"""Whether two image files (of `adacsc recon`, `adacsc send` or gadgetron_ismrmrd_client) hold the
same images bit for bit: pixel data, headers (attribute_string_len aside, which only serialisation
sets) and meta (ReconTimeMs aside, a wall-clock figure), series by series, newest group of each.

Usage (e.g. the default chain's images of the bundled scans before and after a change):
    python benchmarks/compare_images.py before.h5 after.h5 [more pairs ...]
Exit status 0 when every pair is identical, 1 otherwise.
"""

from __future__ import annotations

import re
import sys

import h5py
import numpy as np

_TIMING = re.compile(rb"<name>ReconTimeMs</name><value>[^<]*</value>")


def differences(first: str, second: str) -> list[str]:
    """What differs between the newest groups of two files (empty: identical)."""
    found = []
    with h5py.File(first, "r") as a, h5py.File(second, "r") as b:
        ga, gb = a[sorted(a)[-1]], b[sorted(b)[-1]]
        series_a = sorted(k for k in ga if k.startswith("image_"))
        series_b = sorted(k for k in gb if k.startswith("image_"))
        if series_a != series_b:
            return [f"series {series_a} against {series_b}"]
        for name in series_a:
            if not np.array_equal(ga[name]["data"][()], gb[name]["data"][()]):
                found.append(f"{name}: pixel data")
            ha, hb = ga[name]["header"][()], gb[name]["header"][()]
            found += [f"{name}: header field {field}" for field in ha.dtype.names
                      if field != "attribute_string_len" and not np.array_equal(ha[field], hb[field])]
            meta_a = [_TIMING.sub(b"", bytes(m)) for m in ga[name]["attributes"][()]]
            meta_b = [_TIMING.sub(b"", bytes(m)) for m in gb[name]["attributes"][()]]
            if meta_a != meta_b:
                found.append(f"{name}: meta")
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    status = 0
    for first, second in zip(argv[::2], argv[1::2]):
        found = differences(first, second)
        print(f"{first} vs {second}: " + ("identical" if not found else "; ".join(found)))
        status |= bool(found)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
