"""`trafficd files`: the shipped example policies, systemd units and IAM policy — list, print, install.

    trafficd files list                          what ships, and where it would be installed
    trafficd files show NAME                     print one (e.g. `trafficd files show example.yaml > policy.yaml`)
    trafficd files install [--root DIR] [--aws-credentials-drop-in] [--force]

`install` lays the files out as README's "Running it for real" says: /etc/trafficd/policy.yaml (the example, to
edit; never overwritten without --force), /etc/trafficd/credentials/ (0700, for the credential files), the units
in /etc/systemd/system/ with ExecStart= and Documentation= pointing at this installation, and (off EC2) the
controller's AWS-credentials drop-in. `--root` stages everything under DIR (like DESTDIR); paths written inside
the files stay the target system's. The files come from `<venv>/share/trafficd` (the wheel's data files), or
from the source tree in a checkout.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent.parent
INSTALLED_EXE = "/opt/trafficd/.venv/bin/trafficd"
INSTALLED_DOC = "/opt/trafficd/.venv/share/doc/trafficd/README.md"


@dataclass(frozen=True, slots=True)
class Shipped:
    name: str
    source: str  # path in the source tree
    share: str  # path under <prefix>/share/trafficd
    target: str | None  # where `install` puts it (None: print only)
    mode: int = 0o644
    optional: bool = False  # installed only when asked (the AWS drop-in)


FILES = (
    Shipped("example.yaml", "policies/example.yaml", "policies/example.yaml", "/etc/trafficd/policy.yaml"),
    Shipped("minimal.yaml", "policies/minimal.yaml", "policies/minimal.yaml", None),
    Shipped(
        "trafficd-agent@.service",
        "systemd/trafficd-agent@.service",
        "systemd/trafficd-agent@.service",
        "/etc/systemd/system/trafficd-agent@.service",
    ),
    Shipped(
        "trafficd-controller.service",
        "systemd/trafficd-controller.service",
        "systemd/trafficd-controller.service",
        "/etc/systemd/system/trafficd-controller.service",
    ),
    Shipped(
        "aws-credentials.conf",
        "systemd/trafficd-controller.service.d/aws-credentials.conf",
        "systemd/trafficd-controller.service.d/aws-credentials.conf",
        "/etc/systemd/system/trafficd-controller.service.d/aws-credentials.conf",
        optional=True,
    ),
    Shipped("iam-policy.json", "docs/iam-policy.json", "docs/iam-policy.json", None),
)
CREDENTIALS_DIR = "/etc/trafficd/credentials"


def locate(item: Shipped) -> Path:
    """The installed data file, else the source tree's (a checkout or an editable install)."""
    installed = Path(sysconfig.get_paths()["data"]) / "share" / "trafficd" / item.share
    return installed if installed.exists() else SOURCE_ROOT / item.source


def _by_name(name: str) -> Shipped:
    for item in FILES:
        if item.name == name:
            return item
    from trafficd.errors import UsageError

    raise UsageError(f"no shipped file {name!r} (files: {', '.join(f.name for f in FILES)})")


def content(item: Shipped) -> str:
    text = locate(item).read_text(encoding="utf-8")
    if item.name.endswith(".service"):  # point the unit at this installation
        exe = str(Path(sys.executable).with_name("trafficd"))
        doc = Path(sysconfig.get_paths()["data"]) / "share" / "doc" / "trafficd" / "README.md"
        text = text.replace(INSTALLED_EXE, exe)
        if doc.exists():
            text = text.replace(INSTALLED_DOC, str(doc))
    return text


def _list(args: argparse.Namespace) -> int:
    for item in FILES:
        where = item.target or "(print only: trafficd files show)"
        print(f"{item.name:<28} {where}{'  [--aws-credentials-drop-in]' if item.optional else ''}")
    return 0


def _show(args: argparse.Namespace) -> int:
    sys.stdout.write(content(_by_name(args.name)))
    return 0


def _install(args: argparse.Namespace) -> int:
    root = Path(args.root)
    for item in FILES:
        if item.target is None or (item.optional and not args.aws_credentials_drop_in):
            continue
        dest = root / item.target.lstrip("/")
        if dest.exists() and not args.force:
            print(f"kept      {dest} (exists; --force replaces it)")
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(content(item), encoding="utf-8")
        os.chmod(dest, item.mode)
        print(f"installed {dest} (mode {item.mode:04o})")
    creds = root / CREDENTIALS_DIR.lstrip("/")
    creds.mkdir(parents=True, exist_ok=True)
    os.chmod(creds, 0o700)
    print(f"directory {creds} (mode 0700): put redis-password, api-key (agents), aws-credentials (off EC2) here, 0600")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("files", help="list, print or install the example policies, systemd units and IAM policy")
    cmds = p.add_subparsers(dest="files_command", metavar="ACTION")
    cmds.required = True
    c = cmds.add_parser("list", help="the shipped files and where install puts them")
    c.set_defaults(func=_list)
    c = cmds.add_parser("show", help="print one shipped file")
    c.add_argument("name", metavar="NAME", choices=[f.name for f in FILES])
    c.set_defaults(func=_show)
    c = cmds.add_parser("install", help="lay out policy, credentials directory and units (README: Running it for real)")
    c.add_argument("--root", default="/", help="stage under this directory (default /)")
    c.add_argument("--aws-credentials-drop-in", action="store_true", help="off EC2: the controller's AWS drop-in")
    c.add_argument("--force", action="store_true", help="replace files that exist (the policy too)")
    c.set_defaults(func=_install)
