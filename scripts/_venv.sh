# Sourced by scripts/demo and scripts/test: create or reuse .venv and install the
# extras the caller names, reinstalling only when pyproject.toml has changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDGEFLEET_VENV:-$ROOT/.venv}"

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

ensure_venv() {  # ensure_venv EXTRAS  (e.g. "dev" or "converter,fleet")
    local extras="$1" py stamp want
    if [ ! -x "$VENV/bin/python" ]; then
        py="$(pick_python)"
        echo "==> creating virtual environment $VENV with $py"
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            echo "==> python3-venv is missing; installing it from Debian's packages"
            as_root apt-get update -qq && as_root apt-get install -y -qq python3-venv ||
                { echo "cannot create a virtual environment: install python3-venv" >&2; return 1; }
            rm -rf "$VENV"; "$py" -m venv "$VENV"
        fi
    fi
    stamp="$VENV/.edgefleet-installed"
    want="$extras $(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing edgefleet[$extras] into $VENV (first run takes a few minutes: TensorFlow)"
        "$VENV/bin/python" -m pip install -q --upgrade pip
        "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"
        echo "$want" > "$stamp"
    fi
}
