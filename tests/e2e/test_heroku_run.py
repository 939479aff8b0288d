"""One-off dynos: `heroku run` and `heroku run:detached` with the real Heroku CLI.

The CLI posts to `POST /apps/:app/dynos`, then attaches over TLS to waka's rendezvous server,
verifying its certificate against waka's own CA (NODE_EXTRA_CA_CERTS, set by the harness).
Real parts throughout: `waka up`, git, Docker containers of the stack image.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from .conftest import CLI_TIMEOUT, Api, WakaServer, app_repo, git_url, wait_for
from .test_cli_retry import cutting, sent_twice_as_one_request, through  # noqa: F401  (fixture)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("stack_image")]

SIX_VERSION = "1.17.0"  # tests/fixtures/apps/python-web/requirements.txt


@pytest.fixture(scope="module")
def app(server: WakaServer, api: Api, tmp_path_factory: pytest.TempPathFactory) -> str:
    """python-web, pushed and released (its slug has six and a .profile.d)."""
    name = api.create_app("oneoff")
    repo = app_repo("python-web", tmp_path_factory.mktemp("repos") / name)
    pushed = repo.push(git_url(server, name))
    assert pushed.returncode == 0, pushed.output
    return name


def one_off_containers(api: Api, app: str) -> list[str]:
    """`docker ps` lines of the app's one-off containers (label waka.run)."""
    app_id = api.get(f"/apps/{app}")["id"]
    done = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--format",
            '{{.ID}} {{.State}} {{.Label "waka.run"}}',
            "--filter",
            "label=waka.run",
            "--filter",
            f"label=waka.app={app_id}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split("\n")[:-1]


def heroku_with_input(server: WakaServer, stdin: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI with something on its stdin (the harness's heroku() gives it /dev/null)."""
    return subprocess.run(
        [str(server.heroku_cli), *args],
        cwd=server.cli_home,
        env=server.heroku_env(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )


def test_the_cli_trusts_waka_s_own_ca(server: WakaServer) -> None:
    tls = server.home / "tls"
    assert (tls / "ca.pem").is_file() and (tls / "server.pem").is_file()
    assert server.heroku_env()["NODE_EXTRA_CA_CERTS"] == str(tls / "ca.pem")
    assert (tls / "ca.key").stat().st_mode & 0o077 == 0, "the CA key is readable by others"


def test_run_prints_the_command_s_output(server: WakaServer, api: Api, app: str) -> None:
    ran = server.heroku("run", "echo", "hi", "-a", app)
    assert ran.stdout.splitlines() == ["hi"], ran
    # The container is removed once the process is done; the formation never saw it.
    wait_for(lambda: one_off_containers(api, app) == [], what="the one-off container gone")
    assert all(d["type"] != "run" for d in api.get(f"/apps/{app}/dynos"))


def test_exit_code_is_passed_back(server: WakaServer, app: str) -> None:
    assert server.heroku("run", "-x", "false", "-a", app, check=False).returncode == 1
    assert server.heroku("run", "-x", "true", "-a", app, check=False).returncode == 0
    failed = server.heroku("run", "-x", "-a", app, "--", "bash", "-c", "exit 3", check=False)
    assert failed.returncode == 3, failed
    assert "heroku-command-exit-status" not in failed.stdout


def test_run_sees_the_slug_its_profile_and_its_environment(server: WakaServer, app: str) -> None:
    # python3 with six only works once the buildpack's .profile.d has set up the environment.
    six = server.heroku(
        "run", "-x", "-a", app, "--", "python3", "-c", "import six; print(six.__version__)"
    )
    assert six.stdout.strip() == SIX_VERSION, six
    server.heroku("config:set", "GREETING=from-config", "-a", app)
    env = server.heroku(
        "run",
        "-x",
        "-a",
        app,
        "-e",
        "EXTRA=from-flag",
        "--",
        'echo "$DYNO $GREETING $EXTRA $HOME $PWD"',
    )
    dyno, greeting, extra, home, pwd = env.stdout.split()
    assert re.fullmatch(r"run\.\d{4}", dyno), env.stdout
    assert (greeting, extra, home, pwd) == ("from-config", "from-flag", "/app", "/app")
    assert "Procfile" in server.heroku("run", "-x", "-a", app, "--", "ls").stdout.split()


def test_input_reaches_the_process(server: WakaServer, app: str) -> None:
    # Without --no-tty the dyno has a TTY: the CLI's input is typed into it (and echoed).
    typed = heroku_with_input(
        server, "typed\n", "run", "-x", "-a", app, "--", "read x; echo got $x"
    )
    assert typed.returncode == 0, typed
    assert "got typed" in typed.stdout.splitlines(), typed.stdout
    # With --no-tty, stdin is a pipe that ends when the CLI's input does (cat returns).
    piped = heroku_with_input(
        server, "line one\nline two\n", "run", "--no-tty", "-x", "-a", app, "--", "cat; echo end"
    )
    assert piped.returncode == 0, piped
    assert piped.stdout.splitlines() == ["line one", "line two", "end"], piped.stdout


class Terminal:
    """The CLI on a pseudo-terminal of 30 rows and 100 columns, as a user at a shell has."""

    def __init__(self, server: WakaServer, *args: str) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.process = subprocess.Popen(
            [str(server.heroku_cli), *args],
            cwd=server.cli_home,
            env={**server.heroku_env(), "TERM": "xterm"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = b""

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, wanted: str, timeout: float = CLI_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while wanted.encode() not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {wanted!r} on the terminal; it shows: {self.seen!r}"
            if select.select([self.master], [], [], min(left, 0.5))[0]:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the CLI has exited and closed the terminal
                    assert wanted.encode() in self.seen, f"no {wanted!r} in {self.seen!r}"

    def close(self) -> int:
        try:
            return self.process.wait(timeout=CLI_TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            os.close(self.master)


def bash_in_a_terminal(server: WakaServer, app: str) -> None:
    """`heroku run bash` on a pseudo-terminal: the dyno has a TTY of the user's size, runs
    what is typed and exits with its status (any runtime's one-offs)."""
    terminal = Terminal(server, "run", "-x", "-a", app, "bash")
    try:
        terminal.expect("up, run.")  # the CLI has its handshake; now it is in raw mode
        terminal.type("echo $((6 * 7)) on $DYNO; stty size; tty\r")
        terminal.expect("42 on run.")
        terminal.expect("30 100")  # the user's terminal size, passed on to the dyno's TTY
        terminal.expect("/dev/pts/")
        terminal.type("exit 4\r")
    finally:
        code = terminal.close()
    assert code == 4, terminal.seen


def test_run_bash_interactively_in_a_terminal(server: WakaServer, app: str) -> None:
    bash_in_a_terminal(server, app)


def test_a_one_off_ends_with_its_user(server: WakaServer, api: Api, app: str) -> None:
    wait_for(lambda: one_off_containers(api, app) == [], what="earlier one-offs removed")
    cli = subprocess.Popen(
        [str(server.heroku_cli), "run", "-a", app, "--", "echo started; sleep 300"],
        cwd=server.cli_home,
        env=server.heroku_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = wait_for(
            lambda: [c for c in one_off_containers(api, app) if " running " in c],
            what="the one-off running",
        )
        time.sleep(2)  # the dyno manager ticks meanwhile: it must leave the one-off alone
        assert [c for c in one_off_containers(api, app) if " running " in c] == running
        # `heroku ps` shows it among the app's dynos while it runs, as on Heroku.
        shown = [d for d in api.get(f"/apps/{app}/dynos") if d["type"] == "run"]
        assert [(d["state"], d["name"].startswith("run.")) for d in shown] == [("up", True)]
        listed = server.heroku("ps", "-a", app).stdout
        assert "run: one-off processes (1)" in listed and f"{shown[0]['name']} (" in listed
        cli.send_signal(signal.SIGINT)  # the CLI closes its connection on Ctrl-C
        cli.communicate(timeout=CLI_TIMEOUT)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    wait_for(lambda: one_off_containers(api, app) == [], what="the one-off stopped and removed")


def test_run_detached_logs_to_the_app_s_log(server: WakaServer, api: Api, app: str) -> None:
    started = server.heroku(
        "run:detached", "-a", app, "--", "echo hello from detached; echo to stderr >&2"
    )
    output = started.stdout + started.stderr
    match = re.search(r"--dyno (run\.\d{4})", output)
    assert match, output
    dyno = match.group(1)

    def log_lines() -> list[str]:
        printed = server.heroku("logs", "-a", app, "-n", "200", check=False).stdout
        return [line.split(" ", 1)[1] for line in printed.splitlines() if " " in line]

    def complete() -> list[str]:
        lines = log_lines()
        return lines if f"heroku[{dyno}]: State changed from up to complete" in lines else []

    lines = wait_for(complete, what=f"{dyno} complete in the log")
    assert f"app[{dyno}]: hello from detached" in lines, lines
    assert f"app[{dyno}]: to stderr" in lines, lines
    assert f"heroku[{dyno}]: Process exited with status 0" in lines, lines
    assert any(
        line.startswith("app[api]: Starting process with command `echo hello from detached")
        and line.endswith(f"by user {server.email}")
        for line in lines
    ), lines
    wait_for(lambda: one_off_containers(api, app) == [], what="the detached container removed")


def test_run_detached_sent_again_by_the_cli_runs_once(
    server: WakaServer,
    api: Api,
    app: str,
    cutting,  # noqa: F811
) -> None:
    """The CLI sends `POST /apps/:app/dynos` again when its connection breaks before the
    answer (tests/e2e/test_cli_retry.py): the command runs once, and the CLI names its dyno."""
    proxy = cutting(b"POST", rb"/apps/[^/ ]+/dynos")
    marker = f"ran-once-{time.time_ns()}"
    started = server.heroku("run:detached", "-a", app, "--", f"echo {marker}", env=through(proxy))
    sent_twice_as_one_request(proxy)
    match = re.search(r"--dyno (run\.\d{4})", started.stdout + started.stderr)
    assert match, started
    dyno = match.group(1)

    def lines() -> list[str]:
        printed = server.heroku("logs", "-a", app, "-n", "500", check=False).stdout
        return [line.split(" ", 1)[1] for line in printed.splitlines() if " " in line]

    done = wait_for(
        lambda: (
            (found := lines())
            and f"heroku[{dyno}]: Process exited with status 0" in found
            and found
        ),
        what=f"{dyno} exited",
    )
    assert [line for line in done if line.endswith(f": {marker}")] == [f"app[{dyno}]: {marker}"]
    asked = [line for line in done if f"Starting process with command `echo {marker}`" in line]
    assert len(asked) == 2, asked  # app[api]'s line, and heroku[run.N]'s: one dyno
    assert all(line.startswith(("app[api]", f"heroku[{dyno}]")) for line in asked), asked


def test_an_app_without_code_cannot_run(server: WakaServer, api: Api, tmp_path: Path) -> None:
    empty = api.create_app("nocode")
    ran = server.heroku("run", "echo", "hi", "-a", empty, check=False)
    assert ran.returncode != 0
    assert "no release with code" in ran.stderr, ran.stderr
