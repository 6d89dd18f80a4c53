"""ClientOptions.display through the Python API: PLAIN by default; AUTO draws a progress bar
per item when stdout is a terminal (a pseudo-terminal here), PLAIN never does."""

import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import conductor

# A server and a client with the given display in one process whose stdout is the terminal:
# one tiny training item, then both close.
CHILD = textwrap.dedent("""\
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import conductor
    from conftest import make_version
    folder = Path(sys.argv[2])
    server = conductor.Server(workdir=folder / "server", bind="tcp://127.0.0.1:*",
                              log_to_stdout=False, heartbeat_interval=0.2)
    server.start()
    server.set_reserve(0)
    server.add_version(make_version(folder / "tiny", target_models=1))
    with conductor.Client(server=server.endpoint(), workdir=folder / "client",
                          heartbeat_interval=0.2,
                          display=getattr(conductor.ClientOptions.Display, sys.argv[3])):
        list(server.stored_models(count=1, timeout=60))
    server.close()
    print("CHILD DONE", flush=True)
    """)


def run_on_terminal(folder, display, timeout=90):
    """Runs CHILD with stdout and stderr on a pseudo-terminal; returns what it printed."""
    main, secondary = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(Path(__file__).parent),
                              str(folder), display],
                             stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif child.poll() is not None:
                break
        assert child.wait(timeout=max(1, deadline - time.monotonic())) == 0, output
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(main)
    text = output.decode(errors="replace")
    assert "CHILD DONE" in text, text
    return text


def test_display_defaults_to_plain_and_round_trips():
    options = conductor.ClientOptions()
    assert options.display == conductor.ClientOptions.Display.PLAIN
    assert conductor.client_options_from_environment().display == conductor.ClientOptions.Display.PLAIN
    options.display = conductor.ClientOptions.Display.AUTO
    assert options.display == conductor.ClientOptions.Display.AUTO


def test_auto_draws_progress_bars_on_a_terminal_and_plain_does_not(temp_dir):
    auto = run_on_terminal(temp_dir / "auto", "AUTO")
    plain = run_on_terminal(temp_dir / "plain", "PLAIN")
    assert "\x1b[K" in auto and "training tiny" in auto, auto  # a bar, erased and redrawn
    assert "\x1b[" not in plain, plain
    assert "Connected" in plain or "connected" in plain, plain  # the log lines themselves
