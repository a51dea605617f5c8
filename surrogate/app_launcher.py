"""`surrogate app`: find apps/explorer.py and start Streamlit on it.

This is the only place in the package that knows where the app lives: beside the package in a
source checkout, or under <prefix>/share/surrogate/apps when installed from a wheel (pyproject ships
apps/ there as data files, so no top-level `apps` package is installed into site-packages).
"""
from __future__ import annotations

import os
import signal
import site
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

ENTRY = "explorer.py"


def candidate_dirs() -> list[Path]:
    """Where apps/ may be, in order: $SURROGATE_APPS, a source checkout, the installed data files."""
    dirs = []
    if os.environ.get("SURROGATE_APPS"):
        dirs.append(Path(os.environ["SURROGATE_APPS"]))
    dirs.append(Path(__file__).resolve().parents[1] / "apps")
    for prefix in {sys.prefix, sysconfig.get_path("data"), site.getuserbase()}:
        if prefix:
            dirs.append(Path(prefix) / "share" / "surrogate" / "apps")
    return dirs


def explorer_path() -> Path:
    for d in candidate_dirs():
        if (d / ENTRY).is_file():
            return d / ENTRY
    where = ", ".join(str(d) for d in candidate_dirs())
    raise FileNotFoundError(f"apps/{ENTRY} not found (looked in {where}); reinstall surrogate or set SURROGATE_APPS")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the server will: a port left in TIME_WAIT by a stopped app is free to reuse
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def command(port: int, app: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(app or explorer_path()), "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def launch(port: int = 8501, results: str | Path = "results") -> int:
    """Run the explorer until Ctrl-C; returns the exit code for the CLI."""
    try:
        import streamlit  # noqa: F401
    except ImportError:
        print("error: the app needs streamlit: pip install 'surrogate[app]'", file=sys.stderr)
        return 2
    if not 0 < port < 65536:
        print(f"error: --port must be between 1 and 65535, got {port}", file=sys.stderr)
        return 2
    if not port_free(port):
        print(f"error: port {port} is in use; choose another with --port", file=sys.stderr)
        return 2
    app = explorer_path()
    results = Path(results).resolve()
    env = {**os.environ, "SURROGATE_RESULTS": str(results)}
    print(f"surrogate app: http://localhost:{port}  (results: {results}; Ctrl-C stops it)", flush=True)
    proc = subprocess.Popen(command(port, app), env=env)
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated launcher must not orphan the server
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        return 130
