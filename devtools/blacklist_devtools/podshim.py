"""Inside a fresh mount namespace: bind a pod's volumes at their mount paths, then exec.

The local pod runner starts each container as
``unshare --mount --propagation private python -m blacklist_devtools.podshim PLAN``.
The plan (JSON) lists bind mounts — volumes, the ServiceAccount token, the
pod's ``/etc/hosts`` — that this process makes in its private namespace, so the
program sees files where the pod spec says and the host is left untouched
(but for the empty directories a mount point needs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def bind(source: str, target: str, read_only: bool) -> None:
    """Bind ``source`` onto ``target``, creating the mount point if it is missing."""
    target_path = Path(target)
    if Path(source).is_dir():
        target_path.mkdir(parents=True, exist_ok=True)
    else:
        target_path.parent.mkdir(parents=True, exist_ok=True)
        if not target_path.exists():
            target_path.touch()
    subprocess.run(["mount", "--bind", source, target], check=True)
    if read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)


def main() -> None:
    """Apply the plan given as the only argument, then become the container's program."""
    plan: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    for mount in plan["mounts"]:
        bind(mount["source"], mount["target"], bool(mount.get("readOnly", False)))
    os.chdir(plan.get("cwd") or "/")
    argv: list[str] = plan["argv"]
    os.execvpe(argv[0], argv, plan["env"])


if __name__ == "__main__":
    main()
