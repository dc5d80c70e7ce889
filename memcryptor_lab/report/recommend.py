"""Deployment recommendations: fixed advice per deployment, checked against the measured
verdicts of the run (which designs met the threats that deployment faces, which threats
the run did not measure), and the limit no design can move."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ._common import attacker_order, design_order, join
from .matrix import RESISTS


def _code_in_process(artefact: str) -> bool:
    """Attacks that run code in the target (injection): a class apart, see ROOT_RUNS_CODE."""
    return "inject" in artefact or "code" in artefact


def _disk(artefact: str) -> bool:
    """Artefacts that outlive the process on disk: cores written by the kernel, swap."""
    return artefact == "kernel-core" or "swap" in artefact


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    faces: str  # who attacks, in one paragraph
    advice: str  # markdown bullets
    relevant: Callable[[str, str], bool]  # (attacker, artefact) -> does this deployment face it
    attackers: tuple[str, ...]  # attacker classes it faces, measured or not


SCENARIOS = (
    Scenario(
        "desktop",
        "Desktop application (password manager, mail or chat client holding tokens)",
        "Other programs running as the same user (malware, a compromised plug-in, anything "
        "that can attach a debugger), crash reporters that collect core files, and swap or "
        "hibernation images on a stolen disk. Root is usually the user: not an attacker a "
        "desktop application can design against.",
        "- Keep the long-term key out of the process: the OS store (the kernel keyring or "
        "the Secret Service on Linux, the Keychain with an access group on macOS, DPAPI on "
        "Windows), loaded only for an operation, as the `keyring` design does.\n"
        "- Hold secrets sealed; reveal into locked, no-dump, wipe-on-fork memory for the "
        "operation only and wipe it afterwards (`hardened`); never turn a secret into an "
        "immutable string (`plain` shows what that leaves behind).\n"
        "- Make the process non-dumpable and set a hard core limit of 0 "
        "(`PR_SET_DUMPABLE 0` and `RLIMIT_CORE 0` on Linux; the hardened runtime without "
        "`get-task-allow` on macOS): this is what stops a same-user attacker from reading "
        "memory or attaching a debugger, and crash reporters from writing cores.\n"
        "- Encrypt swap and hibernation (LUKS, FileVault): `mlock` keeps pages out of swap "
        "but not out of a hibernation image.",
        lambda attacker, artefact: (
            (attacker != "root" or _disk(artefact)) and not _code_in_process(artefact)
        ),
        ("same-user", "root"),
    ),
    Scenario(
        "daemon",
        "launchd / systemd daemon (a service holding credentials for its clients)",
        "Other local users and services, a compromised service running under the same uid, "
        "administrators' tools and a compromised root that read memory (`gcore`, "
        "`/proc/PID/mem`, debuggers), cores collected by systemd-coredump or ReportCrash, "
        "and swap.",
        "- Hold the keys in a separate key-holder process (the `broker` design): keys in "
        "`memfd_secret` pages, never in the process that parses requests; callers "
        "authenticated by the kernel (`SO_PEERCRED`; the audit token with XPC on macOS) "
        "and keys scoped per caller identity.\n"
        "- Where the daemon must use secrets itself, reveal them into `memfd_secret` pages "
        "(`secretmem`): they are off the kernel's direct map, and `/proc/PID/mem`, "
        "`process_vm_readv` and debuggers cannot read them, even while in use.\n"
        "- systemd: a dedicated or `DynamicUser=` account, `LimitCORE=0`, "
        "`NoNewPrivileges=yes`, `ProtectSystem=strict`, `ProtectHome=`, `PrivateTmp=yes`, "
        "`RestrictAddressFamilies=AF_UNIX`, socket activation (`contrib/systemd/`); a "
        "wrapping key from `LoadCredentialEncrypted=` (TPM2-bound `systemd-creds`), never "
        "a key file.\n"
        "- launchd: a LaunchDaemon with a core limit of 0 and an XPC service that keeps "
        "the key in the Keychain or the Secure Enclave and checks the caller's audit token "
        "and code signature (`contrib/launchd/`, untested here).\n"
        "- `memfd_secret` must be enabled in the kernel (`secretmem.enable=1` on some "
        "kernels): the designs refuse to run without it rather than downgrade silently.",
        lambda attacker, artefact: not _code_in_process(artefact),
        ("same-user", "root"),
    ),
    Scenario(
        "multi-tenant",
        "Multi-tenant host (several customers' workloads on one machine)",
        "The other tenants (other uids, other containers), the host's root and its tooling, "
        "shared swap, and crash dumps collected centrally.",
        "- One broker per tenant with keys scoped per identity (`--identity uid+exe`), never "
        "shared between tenants; tenants in separate uids or user namespaces, so the "
        "kernel's process isolation does the first job.\n"
        "- Keys that must survive a hostile host root come from outside the host: a KMS or "
        "HSM releasing data keys to attested workloads, or confidential computing (AMD "
        "SEV-SNP, Intel TDX). `memfd_secret` and a broker stop root from *reading* keys; "
        "they do not stop root from running code (see below).\n"
        "- No core collection for tenant processes (or cores kept inside the tenant's "
        "trust domain); encrypted swap or none.",
        lambda attacker, artefact: not _code_in_process(artefact),
        ("other-user", "same-user", "root"),
    ),
)


ROOT_RUNS_CODE = """\
**What no design can promise against root that runs code in the process.** Every design
here can be defeated by an attacker who can run code inside the process, and root can:

- attach with `ptrace` (`CAP_SYS_PTRACE` overrides `PR_SET_DUMPABLE 0`; only Yama's
  `ptrace_scope 3` refuses root, until the next reboot), call the design's own reveal,
  or wait for a reveal and read the revealed slot;
- take the process's file descriptors (`pidfd_getfd`), including a `memfd_secret` one,
  and map them; preload a library or replace the binary at the next start; load a kernel
  module that reads any page (`memfd_secret` pages are only off the kernel's direct map,
  not out of the kernel's reach);
- act as the broker's legitimate client (same uid, same executable) and ask it to
  decrypt: the broker cannot tell root from its client.

What remains is a promise about *time and scope*, not about secrecy: secrets are exposed
only while revealed, only those the process is entitled to ask for, and every broker
request can be logged. Keys that never leave hardware (TPM, Secure Enclave, HSM) cannot
be copied away, though they can be used while the attacker is present; user presence
(Touch ID, a security key) puts a person in the loop. Kernel and physical attackers
(cold boot, DMA) are out of scope for every design.
"""

HOW_TO_READ = """\
A design is never "secure" here: a cell says *measured: no plaintext (or key) found by
attacker X through path Y in phase Z*. **Plaintext** is the secret itself in any encoding
a program may hold it in (raw, UTF-8/16/32, hex, base64, and 16-byte fragments); **key**
is the design's raw key: finding it loses every secret sealed under it, in every phase.
**Blocked** means the kernel refused part of the read (the readable rest was scanned and
counted). **In use** is the phase in which the application has a secret revealed to use
it: a copy there is the price of using a secret in the process at all; a copy in any
other phase is a leak. The **decoy** (a secret no victim saw) and a **control victim**
(that never received the secret) must give 0: they check the method itself.
"""


def scenario_table(verdict_frame: pd.DataFrame) -> pd.DataFrame:
    """Per deployment: the threat classes it faces that this run measured, the designs that
    met all of them (nothing found), those that leaked only while a secret was in use,
    those that lost plaintext or key, and the attacker classes the run did not measure."""
    records = []
    if verdict_frame.empty:
        verdict_frame = pd.DataFrame(
            columns=["design", "attacker", "artefact", "threat", "verdict"]
        )
    measured = verdict_frame[verdict_frame["verdict"] != "not-measured"]
    present = set(attacker_order(measured["attacker"])) if len(measured) else set()
    for scenario in SCENARIOS:
        mask = [
            scenario.relevant(a, f)
            for a, f in zip(measured["attacker"], measured["artefact"], strict=True)
        ]
        faced = measured.loc[pd.Series(mask, index=measured.index, dtype=bool)]
        threats = list(dict.fromkeys(faced["threat"]))
        met, window, lost = [], [], []
        for design in design_order(faced["design"]):
            codes = set(faced.loc[faced["design"] == design, "verdict"])
            if codes & {"key", "plaintext"}:
                lost.append(design)
            elif "in-use" in codes:
                window.append(design)
            elif codes and codes <= set(RESISTS):
                met.append(design)
        records.append(
            {
                "deployment": scenario.title,
                "threat classes measured": join(threats),
                "nothing found": join(met),
                "only while in use": join(window),
                "lost plaintext or key": join(lost),
                "attackers not measured in this run": join(
                    a for a in scenario.attackers if a not in present
                ),
            }
        )
    return pd.DataFrame.from_records(records)


def scenario_markdown(verdict_frame: pd.DataFrame) -> str:
    """The deployment recommendations: fixed advice, then what this run measured for it."""
    table = scenario_table(verdict_frame).set_index("deployment")
    parts = []
    for scenario in SCENARIOS:
        row = table.loc[scenario.title]
        missing = row["attackers not measured in this run"]
        measured = (
            "*Nothing this deployment faces was measured in this run.*"
            if row["threat classes measured"] == "none"
            else f"*Measured in this run* against {row['threat classes measured']}: nothing found "
            f"in **{row['nothing found']}**; plaintext only while in use in "
            f"**{row['only while in use']}**; plaintext or key lost by "
            f"**{row['lost plaintext or key']}**."
        )
        if missing != "none":
            names = missing.split(", ")
            who = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
            measured += f" Not measured here: the {who} attacker{'s' if len(names) > 1 else ''}."
            if "root" not in names:
                measured += (
                    " Root can do all a same-user or other-user attacker can, so what root "
                    "did not find through a path, they cannot find through it either; what "
                    "root found, they may be blocked from."
                )
        parts.append(
            f"### {scenario.title}\n\n**Faces:** {scenario.faces}\n\n{scenario.advice}\n\n"
            f"{measured}\n"
        )
    return "\n".join(parts)


def catalog(cell_frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every design and every attack of the run, with what each is (from the registries;
    a name the registry does not know is listed with its rows' facts only)."""
    from attacks import ATTACKS

    from .._registry import DESIGNS
    from ._common import attack_order

    designs = []
    for name in design_order(cell_frame["design"]):
        cls = DESIGNS.get(name)
        notes = sorted(set(cell_frame.loc[cell_frame["design"] == name, "design_notes"]) - {""})
        designs.append(
            {
                "design": name,
                "key lives in": getattr(cls, "key_location", ""),
                "what it is": getattr(cls, "summary", ""),
                "as measured here": join(notes, ""),
            }
        )
    attacks = []
    for name in attack_order(cell_frame["attack"]):
        cls = ATTACKS.get(name)
        mine = cell_frame[cell_frame["attack"] == name]
        attacks.append(
            {
                "attack": name,
                "artefact": join(sorted(set(mine["artefact"]))),
                "attackers": join(attacker_order(mine["attacker"])),
                "what it does": getattr(cls, "summary", ""),
            }
        )
    return pd.DataFrame(designs), pd.DataFrame(attacks)
