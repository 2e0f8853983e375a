"""constraints.txt pins what the code patches or depends on by behaviour, and every installer uses it."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from packaging.utils import canonicalize_name

from inference.kafka_compat import WRITTEN_FOR

REPO = Path(__file__).resolve().parents[2]


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, ver = line.partition("==")
            assert sep and ver, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            out[canonicalize_name(name)] = ver
    return out


def test_kafka_python_is_pinned_to_the_version_the_patches_were_written_for():
    assert pins()["kafka-python"] == WRITTEN_FOR


def test_the_pins_cover_what_the_code_patches_or_relies_on():
    assert {"kafka-python", "ray", "redis", "prometheus-client", "pydantic"} <= set(pins())


def test_the_installed_packages_are_the_pinned_ones():
    wrong = {name: (ver, version(name)) for name, ver in pins().items() if version(name) != ver}
    assert not wrong, f"installed versions differ from constraints.txt (pinned, installed): {wrong}"


def test_the_image_pins_the_same_ray_and_installs_with_the_constraints():
    dockerfile = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    (ray_arg,) = re.findall(r"^ARG RAY_VERSION=(\S+)$", dockerfile, flags=re.M)
    assert ray_arg == pins()["ray"]
    assert re.search(r"^COPY [^\n]*\bconstraints\.txt\b", dockerfile, flags=re.M)
    assert re.search(r"pip install -c constraints\.txt [^\n]*\s\.\s", dockerfile)


def test_the_bootstrap_installs_with_the_constraints_and_keys_its_venv_by_them():
    script = (REPO / "deploy" / "local" / "bootstrap.sh").read_text()
    (key,) = re.findall(r"^key=\$\(.*$", script, flags=re.M)
    assert "constraints.txt" in key and "pyproject.toml" in key
    installs = [ln for ln in script.splitlines() if re.search(r'pip" install .*-e "\.\[dev\]"', ln)]
    assert installs and all("-c constraints.txt" in ln for ln in installs)
