"""Part 4: the snapshot-table fuzzer (hypothesis; rig/reliability/fuzzimage.py writes the images).

Structure-aware generation of snapshot tables and current-snapshot records, each image run
through qemu-img info / check / snapshot -l and, on copies, check -r all and snapshot
-c/-a/-d. A crash (a signal: an assertion, a segfault), a hang (the timeout) or a sanitizer
report (on the ASan build when there is one, `build.py build --asan`) fails; an error exit
is fine. Hypothesis shrinks a failing input; the smallest one is kept under
tests/reliability/regressions/ (its image and what crashed), and test_regressions.py
replays every kept one.

The smoke runs a fixed number of examples derandomized (the same ones every run); the full
run keeps going with new seeds until --fuzz-seconds are used up, and reports executions
per second.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed: "
                                 "`python3 build.py setup` installs it in .venv")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase  # noqa: E402

from rig import builds  # noqa: E402
from rig.errors import BuildMissing  # noqa: E402
from rig.reliability import fuzzimage as fz  # noqa: E402
from rig.reliability import known  # noqa: E402
from rig.reliability.fuzzspec import tables  # noqa: E402
from rig.reliability.observe import Runner, Tool  # noqa: E402

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
TIMEOUT = 20.0  # seconds per qemu-img run: a hang (three times that on the ASan build)

# -- one execution --------------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, tool: Tool, template: fz.Template, work: Path, deadline: float,
                 timeout: float = TIMEOUT):
        self.tool, self.template, self.work = tool, template, work
        self.run = Runner(timeout=timeout, keep=10)
        self.deadline = deadline  # time.monotonic() after which examples are not run
        self.examples = 0
        self.skipped = 0  # generated after the deadline (hypothesis finishing its round)
        self.last_failure: dict | None = None
        self.known: dict[str, int] = {}  # known bug id -> examples that hit it
        self.seconds: dict[str, float] = {}  # op -> seconds spent in it

    def execute(self, spec: fz.TableSpec) -> list[str]:
        """Every op of fz.OPS on the image of ``spec``; the crashes (empty: none)."""
        if time.monotonic() > self.deadline:
            self.skipped += 1
            return []
        self.examples += 1
        image = fz.write(spec, self.template, self.work / "fuzz.qcow2")
        crashes = []
        for label, args, writes in fz.OPS:
            target = image
            if writes:
                target = self.work / "op.qcow2"
                shutil.copyfile(image, target)
            argv = [self.tool.img, *(a.replace("{first}", fz.first_name(spec)) for a in args),
                    str(target)]
            res = self.run.run(argv)
            self.seconds[label] = self.seconds.get(label, 0.0) + res.seconds
            if res.crash:
                text = res.crash_text(label)
                ids = known.classify("fuzz", [text])
                if ids:  # a known bug (replayed by test_regressions): look for new ones
                    for i in ids:
                        self.known[i] = self.known.get(i, 0) + 1
                    continue
                crashes.append(text)
        if crashes:
            self.last_failure = {"spec": spec.to_json(), "crashes": crashes,
                                 "image": image.read_bytes()}
        return crashes


def keep_regression(failure: dict, tool: Tool) -> Path:
    """The minimal failing input as tests/reliability/regressions/fuzz-<sha>.{json,qcow2.gz}."""
    REGRESSIONS.mkdir(exist_ok=True)
    digest = hashlib.sha256(failure["image"]).hexdigest()[:12]
    (REGRESSIONS / f"fuzz-{digest}.qcow2.gz").write_bytes(
        gzip.compress(failure["image"], mtime=0))
    meta = {"image": f"fuzz-{digest}.qcow2.gz", "found_by": "test_fuzz.py", "bug": None,
            "build": tool.label, "crashes": failure["crashes"], "spec": failure["spec"]}
    path = REGRESSIONS / f"fuzz-{digest}.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path


def test_fuzz_snapshot_table(mode, tools, require, results_dir, scratch, summary, request):
    tool = tools.patched
    which = "patched"
    try:
        asan = builds.resolve("patched-asan")
        tool, which = Tool("patched-asan", str(asan.img), str(asan.io)), "patched-asan"
    except BuildMissing:  # no ASan build: the plain one, crashes and hangs only
        pass
    run = Runner()
    template = fz.load_template(fz.make_template(run, tool, scratch / "template.qcow2"))
    t0 = time.monotonic()
    budget = mode.fuzz_seconds
    fuzzer = Fuzzer(tool, template, scratch, t0 + budget,
                    TIMEOUT * (3 if which == "patched-asan" else 1))
    db = DirectoryBasedExampleDatabase(str(results_dir / "hypothesis"))

    def make_body():  # a fresh test per round: settings decorate a function once
        @given(spec=tables())
        def body(spec):
            crashes = fuzzer.execute(spec)
            assert not crashes, "\n".join(crashes)
        return body

    rounds, error = 0, None
    while error is None:
        examples = mode.fuzz_examples or 200
        # the smoke: a fixed seed and no example database, so every run tries the same
        # inputs; the full run: a seed per round and the database (failures come back first)
        test = settings(max_examples=examples, deadline=None,
                        database=None if mode.fuzz_examples is not None else db,
                        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target,
                                Phase.shrink],
                        suppress_health_check=list(HealthCheck))(make_body())
        test = hypothesis.seed(mode.seed + rounds)(test)
        rounds += 1
        try:
            test()
        except AssertionError as exc:
            error = exc
        if mode.fuzz_examples is not None or time.monotonic() - t0 > budget:
            break
    seconds = time.monotonic() - t0
    data = {"build": which, "examples": fuzzer.examples, "executions": fuzzer.run.count,
            "seconds": round(seconds, 1),
            "exec_per_second": round(fuzzer.run.count / seconds, 1) if seconds else 0,
            "examples_per_second": round(fuzzer.examples / seconds, 2) if seconds else 0,
            "rounds": rounds, "seed": mode.seed, "budget_seconds": budget,
            "ops": [o[0] for o in fz.OPS],
            "sanitizers": which == "patched-asan", "known_bug_hits": fuzzer.known,
            "seconds_per_op": {k: round(v, 1) for k, v in fuzzer.seconds.items()},
            "failure": None}
    if error is not None and fuzzer.last_failure:
        kept = keep_regression(fuzzer.last_failure, tool)
        data["failure"] = {"crashes": fuzzer.last_failure["crashes"], "kept": str(kept)}
    summary.add("fuzz", "snapshot-table", data)
    if error is not None:
        pytest.fail(f"the fuzzer found a crash (minimised input kept in "
                    f"{data['failure'] and data['failure']['kept']}):\n{error}", pytrace=False)
