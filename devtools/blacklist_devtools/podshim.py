"""Inside a fresh mount namespace: bind a pod's volumes at their mount paths, then exec.

The local pod runner starts each container as
``unshare --mount --uts --propagation private python -m blacklist_devtools.podshim PLAN``.
The plan (JSON) lists bind mounts — volumes, the ServiceAccount token, the
pod's ``/etc/hosts`` — that this process makes in its private namespace, so the
program sees files where the pod spec says and the host is left untouched
(but for the empty directories a mount point needs).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def bind(source: str, target: str, read_only: bool, is_dir: bool) -> None:
    """Bind ``source`` onto ``target``, creating the mount point if it is missing."""
    target_path = Path(target)
    if is_dir:
        target_path.mkdir(parents=True, exist_ok=True)
    else:
        target_path.parent.mkdir(parents=True, exist_ok=True)
        if not target_path.exists():
            target_path.touch()
    subprocess.run(
        ["mount", "--no-canonicalize", "--bind", source, target], check=True, close_fds=False
    )
    if read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)


def _under(path: str, parent: str) -> bool:
    """Tell whether ``path`` is ``parent`` or inside it."""
    return Path(path) == Path(parent) or Path(parent) in Path(path).parents


def main() -> None:
    """Apply the plan given as the only argument, then become the container's program."""
    plan: dict[str, Any] = json.loads(Path(sys.argv[1]).read_text())
    # Parents before children, so a volume at /tmp does not cover one at /tmp/x.
    mounts = sorted(plan["mounts"], key=lambda mount: len(Path(mount["target"]).parts))
    # Open every source first: a mount can hide the path of a later source (a state
    # directory under /tmp, say), but not a file descriptor already open on it.
    handles = []
    for mount in mounts:
        handle = os.open(mount["source"], os.O_PATH)
        os.set_inheritable(handle, True)
        handles.append((handle, Path(mount["source"]).is_dir()))
    # The program itself (this repository, its virtualenv) must stay visible even when
    # a volume is mounted over one of their parents (an emptyDir at /tmp, say).
    preserved = []
    for kept in plan.get("preserve", []):
        if Path(kept).is_dir() and any(_under(kept, mount["target"]) for mount in mounts):
            kept_handle = os.open(kept, os.O_PATH)
            os.set_inheritable(kept_handle, True)
            preserved.append((kept, kept_handle))
    for mount, (handle, is_dir) in zip(mounts, handles, strict=True):
        read_only = bool(mount.get("readOnly", False))
        bind(f"/proc/self/fd/{handle}", mount["target"], read_only, is_dir)
    for kept, handle in preserved:
        bind(f"/proc/self/fd/{handle}", kept, False, True)
        handles.append((handle, True))
    for handle, _ in handles:
        os.close(handle)
    if plan.get("hostname"):
        socket.sethostname(plan["hostname"])
    os.chdir(plan.get("cwd") or "/")
    argv: list[str] = plan["argv"]
    os.execvpe(argv[0], argv, plan["env"])


if __name__ == "__main__":
    main()
