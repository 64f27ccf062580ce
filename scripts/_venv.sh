# Sourced by scripts/demo and scripts/test: create or reuse .venv and install the
# extras the caller names, reinstalling only when pyproject.toml has changed; and, for
# scripts/test, the device-only environment .venvs/device and the legacy one .venvs/legacy.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGEFLEET_VENV:-$ROOT/.venv}"
DEVICE_VENV="${EDGEFLEET_DEVICE_VENV:-$ROOT/.venvs/device}"
LEGACY_VENV="${EDGEFLEET_LEGACY_VENV:-$ROOT/.venvs/legacy}"

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

# A venv's dependencies are reinstalled only when its extras or pyproject.toml change: the
# stamp file records what they were installed for.
stale() {  # stale VENV TAG
    [ "$(cat "$1/.edgefleet-installed" 2>/dev/null)" != "$2 $(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)" ]
}

stamp() {  # stamp VENV TAG
    echo "$2 $(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)" > "$1/.edgefleet-installed"
}

reinstall_own() {  # reinstall_own VENV: our code again, not editable (as on a board), its dependencies kept
    "$1/bin/python" -m pip install -q --no-deps --force-reinstall "$ROOT"
    rm -rf "$ROOT/build"
}

ensure_venv() {  # ensure_venv EXTRAS  (e.g. "dev" or "converter,fleet")
    local extras="$1"
    make_venv "$VENV"
    if stale "$VENV" "$extras"; then
        echo "==> installing edgefleet[$extras] into $VENV (first run takes a few minutes: TensorFlow)"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"
        stamp "$VENV" "$extras"
    fi
}

ensure_device_venv() {  # .venvs/device: edgefleet[device,fleet], pytest and hypothesis, no TensorFlow
    make_venv "$DEVICE_VENV"
    # setuptools builds in build/ and ships whatever an earlier build left in build/lib,
    # modules deleted or moved since included: every build here starts from nothing
    rm -rf "$ROOT/build"
    if stale "$DEVICE_VENV" "device,fleet"; then
        echo "==> installing edgefleet[device,fleet], pytest and hypothesis into $DEVICE_VENV (not editable, as on a board)"
        "$DEVICE_VENV/bin/python" -m pip install -q --upgrade pip
        "$DEVICE_VENV/bin/python" -m pip install -q "$ROOT[device,fleet]" pytest hypothesis
        stamp "$DEVICE_VENV" "device,fleet"
    fi
    reinstall_own "$DEVICE_VENV"
}

legacy_python() {  # a Python that tflite-runtime 2.14 has wheels for (3.8 to 3.11), or nothing
    for py in python3.11 python3.10 python3.9; do
        if command -v "$py" >/dev/null; then echo "$py"; return 0; fi
    done
    return 1
}

ensure_legacy_venv() {  # .venvs/legacy: edgefleet[device] on tflite-runtime 2.14 and NumPy 1.x, as on
    local py            # 32-bit Raspberry Pi OS, where ai-edge-litert has no wheel
    py="$(legacy_python)" || return 1
    [ -x "$LEGACY_VENV/bin/python" ] || "$py" -m venv "$LEGACY_VENV"
    rm -rf "$ROOT/build"
    if stale "$LEGACY_VENV" "legacy"; then
        echo "==> installing edgefleet[device] on tflite-runtime 2.14 and NumPy 1.x into $LEGACY_VENV"
        "$LEGACY_VENV/bin/python" -m pip install -q --upgrade pip
        "$LEGACY_VENV/bin/python" -m pip install -q "$ROOT[device]" pytest hypothesis
        # what a board without an ai-edge-litert wheel has: tflite-runtime, which needs NumPy 1.x
        "$LEGACY_VENV/bin/python" -m pip uninstall -q -y ai-edge-litert
        "$LEGACY_VENV/bin/python" -m pip install -q "tflite-runtime==2.14.*" "numpy<2"
        stamp "$LEGACY_VENV" "legacy"
    fi
    reinstall_own "$LEGACY_VENV"
}
