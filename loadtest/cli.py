"""The command-line frame the load-test tools (check, faults, soak) share:
usage errors as one ``<tool>: error: …`` line and exit 2; for the
long-running tools, SIGTERM stops like Ctrl-C (exit 130), so every server
they started is stopped on the way out."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

import click


def fail(tool: str, message: str) -> NoReturn:
    click.echo(f"{tool}: error: {message}", err=True)
    sys.exit(2)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: the servers stop


def run(main: click.Command, tool: str, interrupted: str | None = None) -> None:
    """Run *main*. With *interrupted* (what to say when stopped), SIGTERM and
    Ctrl-C — even where SIGINT was ignored, as for a background job — end the
    run with that line and exit 130; without it, an abort is an error."""
    if interrupted is not None:
        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        fail(tool, exc.format_message())
    except click.exceptions.Abort:
        if interrupted is None:
            fail(tool, "aborted")
        _stopped(tool, interrupted)
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        _stopped(tool, interrupted)


def _stopped(tool: str, interrupted: str) -> NoReturn:
    click.echo(f"{tool}: {interrupted}", err=True)
    sys.exit(130)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    # Unwind through every `finally` (everything started is stopped there); a
    # second Ctrl-C must not cut that clean-up short, and it is bounded anyway.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def guarded(
    run: Callable[[], int], say: Callable[[str], None], setup_error: type[Exception]
) -> int:
    """Run a long tool that starts servers (``loadtest.run``,
    ``loadtest.cluster_trial``): SIGTERM and Ctrl-C unwind it (exit 130,
    everything it started stopped on the way), a *setup_error* is one line
    and exit 2."""
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    try:
        return run()
    except setup_error as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        say("interrupted; everything it started is stopped")
        return 130
