"""``binsr serve``: options checked before listening, a busy port in one line, the warning when
listening beyond this machine, and a real server process that answers and stops on Ctrl-C."""

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from binsr.cli import main


def _serve(capsys, *argv):
    rc = main(["serve", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


@pytest.mark.parametrize("argv, words", [
    (["--port", "70000"], "--port must be 0-65535"),
    (["--max-queue", "0"], "must be positive"),
    (["--max-ensemble-pixels", "-1"], "0 (no self-ensemble) or more"),
    (["--max-upload-mb", "-1"], "must be positive"),
    (["--model", "zoo:nope"], "unknown model 'zoo:nope'"),
    (["--model", "missing.bsr"], "packed model not found"),
    (["--threads", "0"], "--threads must be at least 1"),
])
def test_usage_errors_exit_2(capsys, argv, words):
    rc, _, err = _serve(capsys, *argv)
    assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err


def test_busy_port_is_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        rc, _, err = _serve(capsys, "--port", str(taken.getsockname()[1]))
    assert rc == 1 and "cannot listen on 127.0.0.1" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True)])
def test_warns_when_listening_beyond_this_machine(capsys, monkeypatch, host, warned):
    import uvicorn

    bound = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: bound.extend(s.getsockname() for s in sockets))
    rc, out, err = _serve(capsys, "--host", host, "--port", "0")
    assert rc == 0 and len(bound) == 1
    assert ("warning: listening on" in err) == warned, err
    assert f":{bound[0][1]}/" in out


def test_a_real_server_answers_and_stops_on_ctrl_c():
    proc = subprocess.Popen([sys.executable, "-m", "binsr", "serve", "--port", "0", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://\S+/", line).group(0)
        models = None
        for _ in range(200):  # the socket is bound before the line is printed; served once started
            try:
                with urllib.request.urlopen(url + "api/models", timeout=5) as reply:
                    models = json.load(reply)
                break
            except OSError:
                time.sleep(0.05)
        assert models is not None and models["default"] in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.communicate()
