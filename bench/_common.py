"""What the bench commands share: the machine description, child processes with their peak memory,
and a fake provider in a process of its own (so it does not share the dispatcher's GIL)."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

#: The instant every bench project is planned at (a Tuesday; the newsletter fires at 09:00 LA).
NOW = "2026-11-24T10:00:00-08:00"
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
#: The real command, from the same environment as this interpreter.
OUTREACH = str(Path(sys.executable).parent / "outreach")


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, Python, SQLite and PostgreSQL versions."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    pg = "none"
    try:
        out = subprocess.run(["psql", "--version"], capture_output=True, text=True, timeout=5)
        words = out.stdout.split() if out.returncode == 0 else []
        pg = words[2] if len(words) > 2 else "none"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram": ram,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "postgresql": pg, "os": f"{platform.system()} {platform.release()}"}


def machine_line() -> str:
    m = machine()
    return (f"machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM; Python {m['python']}, "
            f"SQLite {m['sqlite']}, PostgreSQL {m['postgresql']}")


LAST_CPU = [0.0]


def run_measured(cmd: Sequence[str], cwd: Path | None = None, env: dict | None = None,
                 timeout: float = 900) -> tuple[float, float, int, str, str]:
    """Run ``cmd`` as a child; (wall seconds, peak RSS in MB of that child, exit code, out, err).

    The child's CPU seconds (user + system) are kept in ``LAST_CPU[0]``.

    The peak is the child's own ``ru_maxrss``, read from ``os.wait4`` (the rusage of exactly that
    child, as ``resource.getrusage(RUSAGE_CHILDREN)`` would report it in a fresh parent): a real
    process measured from outside, imports and all.
    """
    import tempfile
    import threading

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        LAST_CPU[0] = usage.ru_utime + usage.ru_stime
        out.seek(0)
        err.seek(0)
        return wall, usage.ru_maxrss / 1024, proc.returncode, out.read(), err.read()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def figure(name: str, value: float, unit: str, target: str = "", **extra: Any) -> dict[str, Any]:
    """Print one figure as a line people read and a JSON line machines (run_all) read."""
    shown = f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    print(f"{name}: {shown} {unit}" + (f"  (target {target})" if target else ""), flush=True)
    row = {"figure": name, "value": value, "unit": unit, "target": target, **extra}
    print("@@figure " + json.dumps(row), flush=True)
    return row


class FakeProcess:
    """A fake provider (twilio or sendgrid) served by ``bench/_fake.py`` in another process."""

    def __init__(self, kind: str, latency: float = 0.0, rate: float | None = None,
                 threads_hint: int = 0) -> None:
        cmd = [PYTHON, str(BENCH / "_fake.py"), "--kind", kind, "--latency", str(latency)]
        if rate:
            cmd += ["--rate", str(rate)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fake provider did not start")
        self.info = json.loads(line)
        self.url = self.info["url"]

    def stats(self, after: float = 0.0) -> dict[str, Any]:
        """What the fake received since ``after`` (a time.monotonic() of this machine)."""
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/__stats?after={after!r}", timeout=10) as r:
            return json.loads(r.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "FakeProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("OUTREACH_CONFIG", None)
    env.update(extra)
    return env


if __name__ == "__main__":
    print(machine_line())
