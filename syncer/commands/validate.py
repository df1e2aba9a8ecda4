"""Check the whole catalog offline, without credentials or network.

Reads every file under the catalog directory (settings, images, policies, exceptions,
approvals, access, signers), the CA files that apply to each registry (``ca_dir``, certs.d
directories, SSL_CERT_FILE: each must hold PEM certificates), and prints each problem as ``file:line: error: message``, all of
them in one pass, followed by a one-line summary. Expired exceptions and patterns that match
no image are warnings.

Exit status: 0 when there are no errors (warnings allowed), 2 otherwise.

When GITHUB_ACTIONS=true, each problem is also printed as a workflow command
(``::error file=…,line=…::…``) so that it shows up on the pull request's diff.
With --json, stdout carries {"errors": [...], "warnings": [...]}, each item
{"file", "line", "message"}, and the human-readable lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TextIO

from syncer.access.codeowners import repo_root_of, stale_check
from syncer.catalog import check_catalog, utc_today
from syncer.core.model import Location
from syncer.errors import Diagnostic
from syncer.tools.trust import certificate_problem


def configure(parser: argparse.ArgumentParser) -> None:
    """validate takes only the common options (--catalog, --json)."""


def run(args: argparse.Namespace) -> int:
    catalog, diagnostics = check_catalog(args.catalog, utc_today())
    if catalog is not None and (repo_root_of(catalog) / ".github").is_dir():
        # Only a repository that lives on GitHub (it has .github/) is held to its CODEOWNERS.
        stale = stale_check(catalog)
        if stale is not None:
            diagnostics.append(stale)
            catalog = None
    cert_file = os.environ.get("SSL_CERT_FILE")
    reason = certificate_problem(cert_file) if cert_file else ""
    if cert_file and reason:
        # skopeo and Trivy (Go) would trust no system CA at all, syncer's client the rest.
        diagnostics.append(
            Diagnostic(
                Location(cert_file, 0),
                f"SSL_CERT_FILE {cert_file} "
                f"{reason}; point it at a PEM bundle of CA certificates, "
                "or unset it",
            )
        )
        catalog = None
    errors = [d for d in diagnostics if d.level == "error"]
    warnings = [d for d in diagnostics if d.level == "warning"]
    human = sys.stderr if args.json else sys.stdout

    for diagnostic in diagnostics:
        print(diagnostic, file=human)
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for diagnostic in diagnostics:
            print(annotation(diagnostic), file=human)
    print(
        summary(
            args.catalog,
            catalog is not None,
            len(errors),
            len(warnings),
            len(catalog.images) if catalog else 0,
        ),
        file=human,
    )
    if args.json:
        _print_json(errors, warnings, sys.stdout)
    return 0 if not errors else 2


def summary(root: str, valid: bool, errors: int, warnings: int, images: int) -> str:
    counts = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}"
    if valid:
        return f"{root}: valid, {_plural(images, 'image')} ({counts})"
    return f"{root}: invalid ({counts})"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def annotation(diagnostic: Diagnostic) -> str:
    """A GitHub workflow command for one diagnostic."""
    properties = f"file={_escape_property(diagnostic.location.file)}"
    if diagnostic.location.line:
        properties += f",line={diagnostic.location.line}"
    return f"::{diagnostic.level} {properties}::{_escape_data(diagnostic.message)}"


def _escape_data(text: str) -> str:
    # '%' first, so that the escapes themselves are not escaped again.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _print_json(errors: list[Diagnostic], warnings: list[Diagnostic], out: TextIO) -> None:
    def items(diagnostics: list[Diagnostic]) -> list[dict[str, object]]:
        return [{"file": d.location.file, "line": d.location.line, "message": d.message} for d in diagnostics]

    json.dump({"errors": items(errors), "warnings": items(warnings)}, out, indent=2)
    out.write("\n")
