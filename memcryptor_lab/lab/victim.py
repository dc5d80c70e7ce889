"""The victim: a child process that holds one secret in one design and walks the phases.

    python -m memcryptor_lab.lab.victim --design NAME --secret-fd R --key-fd K --use-fd S

The harness drives it with JSON lines on stdin and reads one JSON line reply per command
on stdout. The secret and key arrive on their own pipes and are read straight into the
design's storage (`seal_fd`, `key_fd`), so the victim makes no copies of its own on the way
in. Replies never carry secret bytes.

Commands: load (-> at-rest), use (-> in-use: reveal, HMAC a challenge, write the secret to
the use socket, stay revealed), release (-> released: wipe, destroy), collect (-> after-gc), exit.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hmac
import json
import os
import socket
import sys
from typing import Any

from .. import open_design
from .._platform import die_with_parent
from .._protector import Protector, Sealed
from ._attacker import drop_privileges


class _Victim:
    def __init__(
        self, design: str, secret_fd: int, key_fd: int, use_fd: int, ballast_mib: int = 0
    ) -> None:
        self.design = design
        # Ballast makes the victim as big as a real daemon, for attack wall-time benchmarks.
        self.ballast = os.urandom(ballast_mib << 20) if ballast_mib else b""
        self.secret_fd, self.key_fd, self.use_fd = secret_fd, key_fd, use_fd
        self.protector: Protector | None = None
        self.sealed: Sealed | None = None
        self.revealed = contextlib.ExitStack()
        self.phase = "started"

    def load(self, secret_len: int) -> dict[str, Any]:
        self.protector = open_design(self.design, key_fd=self.key_fd)
        self.sealed = self.protector.seal_fd(self.secret_fd, secret_len)
        os.close(self.secret_fd)
        os.close(self.key_fd)
        self.phase = "at-rest"
        return {"notes": self.protector.notes()}

    def use(self, challenge_hex: str) -> dict[str, Any]:
        assert self.sealed is not None, "load first"
        view = self.revealed.enter_context(self.sealed.reveal())
        # hmac.digest takes any buffer; hmac.new would want a bytes copy of the key
        mac = hmac.digest(view, bytes.fromhex(challenge_hex), "sha256").hex()
        with socket.socket(fileno=self.use_fd) as sock:  # e.g. a password sent to a server
            sock.sendall(view)
        self.phase = "in-use"
        return {"mac": mac}

    def release(self) -> dict[str, Any]:
        self.revealed.close()
        if self.sealed is not None:
            self.sealed.destroy()
            self.sealed = None
        # no garbage collection here: what a cycle keeps alive until the collector runs is
        # part of what "released" shows (the exposure walk has an after-gc moment)
        self.phase = "released"
        return {}

    def collect(self) -> dict[str, Any]:
        gc.collect()
        self.phase = "after-gc"
        return {}

    def exit(self) -> None:
        self.revealed.close()
        if self.protector is not None:
            self.protector.close()


def serve(victim: _Victim, stdin: Any, stdout: Any) -> int:
    def reply(**fields: Any) -> None:
        stdout.write(json.dumps(fields) + "\n")
        stdout.flush()

    reply(ok=True, pid=os.getpid(), phase=victim.phase)
    for line in stdin:
        request = json.loads(line)
        command = request.get("cmd")
        try:
            if command == "load":
                extra = victim.load(int(request["secret_len"]))
            elif command == "use":
                extra = victim.use(str(request["challenge"]))
            elif command == "release":
                extra = victim.release()
            elif command == "collect":
                extra = victim.collect()
            elif command == "exit":
                victim.exit()
                reply(ok=True, phase="exited")
                return 0
            else:
                raise ValueError(f"unknown command {command!r}")
        except Exception as exc:  # reported to the harness by type and message, no secret
            reply(ok=False, error=type(exc).__name__, message=str(exc))
            continue
        reply(ok=True, phase=victim.phase, **extra)
    victim.exit()
    return 0


def _warm_up() -> None:
    """Load what the victim would otherwise import or open lazily: once it runs as the lab
    uid, the interpreter's files under /root are out of its reach."""
    import resource  # noqa: F401 - the arena imports it on first use

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    AESGCM(bytes(32)).encrypt(bytes(12), b"warm-up", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--design", required=True)
    parser.add_argument("--secret-fd", type=int, required=True)
    parser.add_argument("--key-fd", type=int, required=True)
    parser.add_argument("--use-fd", type=int, required=True)
    parser.add_argument("--ballast-mib", type=int, default=0)
    parser.add_argument(
        "--run-as", metavar="UID:GID", help="drop to this uid before any secret arrives"
    )
    args = parser.parse_args(argv)
    if args.run_as:
        uid, gid = (int(part) for part in args.run_as.split(":"))
        _warm_up()
        drop_privileges(uid, gid)  # also sets the parent-death signal again
    else:
        die_with_parent()
    if os.getppid() == 1:  # the harness died before we asked to die with it
        return 1
    victim = _Victim(args.design, args.secret_fd, args.key_fd, args.use_fd, args.ballast_mib)
    return serve(victim, sys.stdin, sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
