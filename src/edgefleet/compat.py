"""What a bundle needs of the device that runs it (`requires` in its manifest, copied into
the signed transfer manifest), checked before anything is downloaded.

    "requires": {"runtimes": {"ai-edge-litert": ">=1.2.0", "tflite-runtime": ">=2.14.0"},
                 "python": ">=3.10", "numpy": ">=1.23,<3"}

Each value is a PEP 440 version specifier. `runtimes` lists the runtimes the bundle runs
on, each with the versions it needs: the device's runtime must be one of them. A bundle
without `requires` (made before it existed) is read from its `runtime.min_versions`.
No TensorFlow: the agent and the publisher import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

# the oldest runtimes whose schema, ops and API the converter's models are checked against
MIN_RUNTIME_VERSIONS = {"ai-edge-litert": "1.2.0", "tflite-runtime": "2.14.0"}
DEFAULT_REQUIRES: dict[str, Any] = {
    "runtimes": {name: f">={v}" for name, v in MIN_RUNTIME_VERSIONS.items()},
    "python": ">=3.10",
    "numpy": ">=1.23,<3",  # the majors the agent is tested on (NumPy 1.x with tflite-runtime 2.14)
}


def requires_of(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A bundle manifest's `requires`, or what its older `runtime.min_versions` implies."""
    requires = manifest.get("requires")
    if isinstance(requires, dict):
        return dict(requires)
    runtime = manifest.get("runtime") if isinstance(manifest.get("runtime"), dict) else {}
    minimum = runtime.get("min_versions")
    if isinstance(minimum, dict) and minimum:
        return {"runtimes": {str(k): f">={v}" for k, v in minimum.items()}}
    return {}


def _fits(what: str, spec: Any, version: str) -> str | None:
    """Why VERSION of WHAT does not meet SPEC, or None."""
    if not isinstance(spec, str):
        return f"the bundle's requirement for {what} is {spec!r}, not a version specifier"
    try:
        wanted = SpecifierSet(spec)
    except InvalidSpecifier:
        return f"the bundle's requirement for {what} {spec!r} is not a PEP 440 version specifier"
    try:
        ok = wanted.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return f"this device's {what} version {version!r} cannot be compared"
    return None if ok else f"the bundle needs {what} {spec}, this device has {version}"


def refusal(requires: Mapping[str, Any], runtime: tuple[str, str], python: str, numpy: str) -> str | None:
    """Why a bundle with REQUIRES cannot run on a device with RUNTIME (name, version), PYTHON
    and NUMPY versions, or None. Unknown keys are left alone (newer publishers)."""
    name, version = runtime
    runtimes = requires.get("runtimes")
    if isinstance(runtimes, dict) and runtimes:
        if name not in runtimes:
            return (f"the bundle runs on {', '.join(sorted(runtimes))}; this device runs {name} {version}: "
                    "install one of those, or set [runtime] runtime to it")
        if reason := _fits(name, runtimes[name], version):
            return f"{reason}: upgrade it (pip install -U {name})"
    for what, have in (("python", python), ("numpy", numpy)):
        if what in requires and (reason := _fits(what, requires[what], have)):
            return reason
    return None
