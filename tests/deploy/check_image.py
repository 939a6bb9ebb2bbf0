"""The chart and the image agree: every binary a rendered manifest runs is an executable that
CMake builds and that deploy/docker/Dockerfile copies into /usr/local/bin, and the image runs as a
non-root user. Usage: check_image.py REPO_ROOT RENDERED_YAML"""

import re
import sys
from pathlib import Path


def main() -> int:
    root, rendered = Path(sys.argv[1]), Path(sys.argv[2])
    problems = []
    docker = (root / "deploy/docker/Dockerfile").read_text()
    manifests = rendered.read_text() if rendered.exists() else ""
    used = set(re.findall(r"/usr/local/bin/(lumkey[\w-]*)", manifests))
    if not used:
        problems.append("the rendered chart runs no /usr/local/bin/lumkey* binary")
    built = set()
    for cm in root.glob("services/*/CMakeLists.txt"):
        built |= set(re.findall(r"add_executable\((lumkey[\w-]*)", cm.read_text()))
    copied = set(re.findall(r"/build/services/\w+/(lumkey[\w-]*)", docker))
    targets = set(re.findall(r"\b(lumkey[\w-]*)\b", docker.split("--target", 1)[1].split("&&", 1)[0])) \
        if "--target" in docker else set()
    for b in sorted(used):
        if b not in built:
            problems.append(f"the chart runs {b}, which no CMakeLists.txt builds")
        if b not in copied or b not in targets:
            problems.append(f"the chart runs {b}, which the Dockerfile does not build and copy")
    if "COPY --from=build /out/ /usr/local/bin/" not in docker:
        problems.append("the Dockerfile does not copy the binaries to /usr/local/bin")
    stages = re.findall(r"^FROM\s+(\S+)", docker, re.M)
    if len(stages) < 2 or not stages[-1].endswith("-slim"):
        problems.append(f"expected a multi-stage build ending on a slim image, got {stages}")
    users = re.findall(r"^USER\s+(\S+)", docker, re.M)
    if not users or users[-1].split(":")[0] in ("0", "root"):
        problems.append(f"the image must end on a non-root USER (got {users})")
    if users and not users[-1].split(":")[0].isdigit():
        problems.append("USER should be numeric so that runAsNonRoot can check it")
    uid = re.search(r"runAsUser: (\d+)", manifests)
    if users and uid and users[-1].split(":")[0] != uid.group(1):
        problems.append(f"the chart's runAsUser {uid.group(1)} differs from the image's USER {users[-1]}")
    for p in problems:
        print(f"chart-check: FAIL: {p}")
    if not problems:
        print(f"chart-check: ok: image builds and copies {', '.join(sorted(used))}; USER {users[-1]}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
