"""Large tensors on transparent huge pages, for the processes the harness starts.

TensorFlow allocates every op's output anew. glibc serves a block above its mmap threshold (at
most 32 MiB) with a fresh mapping, so each call of a large op touches new 4 KiB pages, one page
fault each: on the AMD EPYC of docs/benchmarks.md a 64 MiB Horovod all-reduce spent more than half
its time there (0.42x MPI; 1.29x with huge pages). glibc 2.35+ can ask for transparent huge pages
on its mappings (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`), as NumPy does for its large arrays.

The setting is read when a process starts, so it goes into the environment of the workers and
jobs the harness starts (`distribute.huge_pages`), and a `harness train` started without it
starts itself again with it, before anything is loaded. Older glibc ignores it, and a kernel
with transparent huge pages off (`never`) keeps 4 KiB pages.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

VARIABLE = "GLIBC_TUNABLES"
TUNABLE = "glibc.malloc.hugetlb"
SETTING = f"{TUNABLE}=1"


def huge_page_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What to add to a worker's environment: our tunable after the user's own, unless they chose it."""
    current = environ.get(VARIABLE, "")
    if TUNABLE in current:
        return {}
    return {VARIABLE: f"{current}:{SETTING}" if current else SETTING}


def huge_page_export() -> str:
    """The same for a job script: appended to whatever the job's environment sets.

    No trailing comment: the local executor joins setup lines with `&&` into one command line.
    """
    return f'export {VARIABLE}="${{{VARIABLE}:+${VARIABLE}:}}{SETTING}"'


def restart_with_huge_pages() -> None:
    """Run this same command again, in this process, with the setting in its environment.

    Only before anything is loaded or written (the process id, arguments and signals stay as
    they were), and only where glibc reads the setting, so it is never a restart for nothing.
    """
    extra = huge_page_env(os.environ)
    if not extra or not glibc_reads_it():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, **extra})
    except OSError as error:  # the interpreter's file replaced or gone: train as it is, only slower
        print(
            f"harness: could not start again with huge pages ({sys.executable}: {error.strerror}); "
            f"going on without them (set {VARIABLE}={SETTING} before starting to have them)",
            file=sys.stderr,
        )


def glibc_reads_it() -> bool:
    """glibc 2.35 added the tunable; others (musl, macOS) have no such setting."""
    name, version = platform.libc_ver()
    try:
        return name == "glibc" and tuple(int(part) for part in version.split(".")[:2]) >= (2, 35)
    except ValueError:
        return False


def thp_mode(path: Path = Path("/sys/kernel/mm/transparent_hugepage/enabled")) -> str:
    """The kernel's transparent huge page mode (`always`, `madvise`: on request, `never`)."""
    try:
        text = path.read_text()
    except OSError:
        return "not available"
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else text.strip()
