"""What a qemu-devel reviewer checks before reading a line.

checkpatch: QEMU's scripts/checkpatch.pl once per patch, the way QEMU's
.b4-config runs it (``-q --terse --no-summary --mailback -``, patch on
stdin). hygiene: Signed-off-by, subject shape, a body that says why, no
whitespace damage.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.core.errors import EnvironmentProblem, TestsFailed
from harness.core.pipeline import Context, NoRequest, Outcome, Stage
from harness.core.runner import StageLog, run
from harness.stages import baseline, series
from harness.stages.series import Series, grouped_tables

CHECKPATCH_ARGS = ("-q", "--terse", "--no-summary", "--mailback", "-")
TERSE_RE = re.compile(r"^[^:]*:(\d+): (ERROR|WARNING|CHECK): (.*)$")
SUBJECT_MAX = 76


@dataclass
class PatchReview:
    patch: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hygiene: list[str] = field(default_factory=list)
    series: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors and not self.hygiene


def parse_checkpatch(output: str) -> tuple[list[str], list[str]]:
    errors, warnings = [], []
    for line in output.splitlines():
        m = TERSE_RE.match(line.strip())
        if not m:
            continue
        item = f"line {m.group(1)}: {m.group(3)}"
        (errors if m.group(2) == "ERROR" else warnings).append(item)
    return errors, warnings


def checkpatch(source_dir: Path, patch: Path, log: StageLog) -> tuple[list[str], list[str]]:
    script = source_dir / "scripts" / "checkpatch.pl"
    if not script.exists():
        raise EnvironmentProblem(f"no {script}", hint="run `python3 build.py import` first")
    res = run(["perl", script, *CHECKPATCH_ARGS], log, cwd=source_dir, check=False,
              input=patch.read_text(errors="replace"))
    errors, warnings = parse_checkpatch(res.stdout)
    if res.returncode != 0 and not errors:
        errors.append(f"checkpatch.pl exited {res.returncode}: "
                      + (res.stdout.strip().splitlines() or ["no output"])[-1])
    return errors, warnings


def _header(text: str, name: str) -> str | None:
    m = re.search(rf"^{name}: (.*(?:\n [^\n]*)*)$", text.split("\n\n", 1)[0], re.M)
    return m.group(1).replace("\n ", " ").strip() if m else None


def hygiene(text: str) -> list[str]:
    """Problems a maintainer would bounce the patch for."""
    problems = []
    subject = _header(text, "Subject") or ""
    subject = re.sub(r"^\[[^\]]*\]\s*", "", subject)
    if not subject:
        problems.append("no Subject")
    else:
        if not re.match(r"^[\w./+-]+(?:[,/ ][\w./+-]+)*: \S", subject):
            problems.append(f"subject is not 'subsystem: summary': {subject!r}")
        if len(subject) >= SUBJECT_MAX:
            problems.append(f"subject is {len(subject)} columns (< {SUBJECT_MAX})")
    body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    message = body.split("\n---\n", 1)[0]
    if not re.search(r"^Signed-off-by: .+ <[^>]+@[^>]+>$", message, re.M):
        problems.append("no Signed-off-by")
    prose = [ln for ln in message.splitlines()
             if ln.strip() and not re.match(r"^[\w-]+-by: |^(Fixes|Resolves|Link): ", ln)]
    if len(" ".join(prose).split()) < 8:
        problems.append("commit message body does not explain why (under 8 words)")
    diff = body.split("\n---\n", 1)[1] if "\n---\n" in body else ""
    for n, line in enumerate(diff.splitlines(), 1):
        if not line.startswith("+") or line.startswith("+++"):
            continue
        if re.search(r"[ \t]+$", line) or re.match(r"^\+[^\t]* \t", line):
            problems.append(f"whitespace damage in an added line (diff line {n})")
            break
    return problems


def review_patches(source_dir: Path, patches: list[Path], log: StageLog,
                   series: str = "") -> list[PatchReview]:
    reviews = []
    for patch in patches:
        errors, warnings = checkpatch(source_dir, patch, log)
        reviews.append(PatchReview(patch.name, errors, warnings,
                                   hygiene(patch.read_text(errors="replace")), series))
    return reviews


def review_stack(source_dir: Path, stack: list[Series], log: StageLog) -> list[PatchReview]:
    """Every patch of every series, in order, each named with its series."""
    return [r for s in stack for r in review_patches(source_dir, list(s.patches), log, s.name)]


def table(reviews: list[PatchReview]) -> str:
    """A table per series."""
    return grouped_tables(
        reviews, lambda r: r.series,
        ("| patch | errors | warnings | hygiene |", "|---|---:|---:|---|"),
        lambda r: (f"| {r.patch} | {len(r.errors)} | {len(r.warnings)} | "
                   f"{'; '.join(r.hygiene) or 'ok'} |"))


def details(reviews: list[PatchReview], kinds=("ERROR", "WARNING", "HYGIENE")) -> str:
    out = []
    for r in reviews:
        for kind, items in (("ERROR", r.errors), ("WARNING", r.warnings),
                            ("HYGIENE", r.hygiene)):
            if kind in kinds:
                where = f"{r.series}/{r.patch}" if r.series else r.patch
                out += [f"{where}: {kind}: {item}" for item in items]
    return "\n".join(out)


def save(reviews: list[PatchReview], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([asdict(r) for r in reviews], indent=2) + "\n")


def load(data: list[dict]) -> list[PatchReview]:
    """Reviews from a checkpatch.json (older ones have no series)."""
    return [PatchReview(**r) for r in data]


# -- the stage ---------------------------------------------------------------------------


def stage(ctx: Context, request: NoRequest, log: StageLog) -> Outcome[list[PatchReview]]:
    baseline.require_selected(ctx, "checkpatch")
    stack = series.read_stack(ctx.layout.patches)
    reviews = review_stack(ctx.layout.qemu, stack, log)
    save(reviews, ctx.layout.results / "checkpatch.json")
    text = "\n".join(t for t in (table(reviews), details(reviews)) if t)
    errors = sum(len(r.errors) for r in reviews)
    warnings = sum(len(r.warnings) for r in reviews)
    hygiene = sum(len(r.hygiene) for r in reviews)
    summary = (f"{len(reviews)} patch(es) in {len(stack)} series: {errors} error(s), "
               f"{warnings} warning(s), {hygiene} hygiene problem(s)")
    if errors or hygiene:
        return Outcome.failed(
            TestsFailed(summary, hint="fix the patches in qemu/, `build.py export`, "
                                      "then `build.py checkpatch` again"), reviews, text)
    return Outcome(summary, reviews, text)


STAGE = Stage("checkpatch", stage, "scripts/checkpatch.pl and hygiene checks, once per patch")
