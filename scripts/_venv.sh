# Sourced by scripts/demo and scripts/test: create or reuse .venv and install the
# extras the caller names, reinstalling only when pyproject.toml has changed; and, for
# scripts/test, the device-only environment .venvs/device.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGEFLEET_VENV:-$ROOT/.venv}"
DEVICE_VENV="${EDGEFLEET_DEVICE_VENV:-$ROOT/.venvs/device}"

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi
}

pick_python() {
    for py in python3.13 python3.12 python3.11 python3.10 python3; do
        if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
            echo "$py"; return 0
        fi
    done
    echo "edgefleet needs Python 3.10 to 3.13 (TensorFlow and LiteRT wheels); install python3" >&2
    return 1
}

make_venv() {  # make_venv FOLDER: create it unless it holds a Python already
    local venv="$1" py
    if [ ! -x "$venv/bin/python" ]; then
        py="$(pick_python)"
        echo "==> creating virtual environment $venv with $py"
        if ! "$py" -m venv "$venv" 2>/dev/null; then
            echo "==> python3-venv is missing; installing it from Debian's packages"
            as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv ||
                { echo "cannot create a virtual environment: install python3-venv" >&2; return 1; }
            rm -rf "$venv"; "$py" -m venv "$venv"
        fi
    fi
}

ensure_venv() {  # ensure_venv EXTRAS  (e.g. "dev" or "converter,fleet")
    local extras="$1" stamp want
    make_venv "$VENV"
    stamp="$VENV/.edgefleet-installed"
    want="$extras $(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing edgefleet[$extras] into $VENV (first run takes a few minutes: TensorFlow)"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"
        echo "$want" > "$stamp"
    fi
}

ensure_device_venv() {  # .venvs/device: edgefleet[device,fleet] and pytest, no TensorFlow
    local stamp want
    make_venv "$DEVICE_VENV"
    # setuptools builds in build/ and ships whatever an earlier build left in build/lib,
    # modules deleted or moved since included: every build here starts from nothing
    rm -rf "$ROOT/build"
    stamp="$DEVICE_VENV/.edgefleet-installed"
    want="device,fleet $(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing edgefleet[device,fleet] and pytest into $DEVICE_VENV (not editable, as on a board)"
        "$DEVICE_VENV/bin/python" -m pip install -q --upgrade pip
        "$DEVICE_VENV/bin/python" -m pip install -q "$ROOT[device,fleet]" pytest
        echo "$want" > "$stamp"
    fi
    # the dependencies stay; our own code changes between runs (not editable, as on a board)
    "$DEVICE_VENV/bin/python" -m pip install -q --no-deps --force-reinstall "$ROOT"
    rm -rf "$ROOT/build"
}
