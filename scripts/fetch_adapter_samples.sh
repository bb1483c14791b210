#!/usr/bin/env bash
# Fetch the OTIO adapter packages' sdists and extract their sample timelines into DEST.
#
# Usage: scripts/fetch_adapter_samples.sh [DEST]   (default .cache/adapter-samples)
# The sdists (not the wheels) carry tests/sample_data/: real EDL, FCP7 XML, FCPX XML, AAF and
# OTIO files exported by editing systems. tests/test_ingest.py reads every one of them.
# Idempotent: a package whose samples are already in DEST is not downloaded again.
# Uses the venv's pip ($PIP, default .venv/bin/pip).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-${FOLEY_ADAPTER_SAMPLES:-$here/.cache/adapter-samples}}"
PIP="${PIP:-$here/.venv/bin/pip}"
PYTHON="${PYTHON:-$(dirname "$PIP")/python}"

mkdir -p "$DEST"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# package  extra pip flags (opentimelineio's metadata step needs no build isolation)
packages=(
  "otio-cmx3600-adapter|"
  "otio-fcp-adapter|"
  "otio-fcpx-xml-adapter|"
  "otio-aaf-adapter|"
  "opentimelineio|--no-build-isolation"
)

extract() {  # extract SDIST into DEST/NAME: sample timeline files only, flat
  local sdist="$1" name="$2"
  "$PYTHON" - "$sdist" "$DEST/$name" <<'PY'
import sys, tarfile, zipfile
from pathlib import Path

sdist, out = Path(sys.argv[1]), Path(sys.argv[2])
suffixes = {".edl", ".xml", ".fcpxml", ".aaf", ".otio", ".otioz", ".otiod", ".ale"}
out.mkdir(parents=True, exist_ok=True)

def wanted(member: str) -> bool:
    p = Path(member)
    return "sample_data" in p.parts and p.suffix.lower() in suffixes

count = 0
if sdist.name.endswith(".zip"):
    with zipfile.ZipFile(sdist) as z:
        for info in z.infolist():
            if not info.is_dir() and wanted(info.filename):
                (out / Path(info.filename).name).write_bytes(z.read(info))
                count += 1
else:
    with tarfile.open(sdist) as t:
        for m in t.getmembers():
            if m.isfile() and wanted(m.name):
                (out / Path(m.name).name).write_bytes(t.extractfile(m).read())
                count += 1
print(f"{out.name}: {count} sample files")
PY
}

for entry in "${packages[@]}"; do
  pkg="${entry%%|*}"; flags="${entry#*|}"
  name="${pkg//-/_}"
  if [[ -f "$DEST/$name/.complete" ]]; then
    echo "$name: already in $DEST"
    continue
  fi
  dl="$tmp/$name"; mkdir -p "$dl"
  # the sdist of the version installed in the venv, so samples match the adapters under test
  version="$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" \
             "$pkg" 2>/dev/null || true)"
  spec="$pkg${version:+==$version}"
  # shellcheck disable=SC2086
  if ! timeout 600 "$PIP" download --quiet --no-binary :all: --no-deps $flags -d "$dl" "$spec" \
       2> >(grep -v "^WARNING: Location" >&2); then
    echo "warning: could not download the $pkg sdist; its samples are skipped" >&2
    continue
  fi
  sdist="$(find "$dl" -maxdepth 1 -type f \( -name '*.tar.gz' -o -name '*.zip' \) | head -n 1)"
  [[ -n "$sdist" ]] || { echo "warning: no sdist for $pkg" >&2; continue; }
  echo -n "$spec → "; extract "$sdist" "$name"
  touch "$DEST/$name/.complete"
done
echo "samples in $DEST"
