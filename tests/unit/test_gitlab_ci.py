""".gitlab-ci.yml and its child pipeline .gitlab-ci.d/pipeline.yml stay in step with
build.py: stages, needs, and every script line a real build.py command (parsed by
build.py's own argparse parser). Pure YAML: no gitlab-ci-local needed; the last tests
also ask gitlab-ci-local when it is installed."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import build

ROOT = Path(__file__).resolve().parents[2]
PARENT_FILE = ROOT / ".gitlab-ci.yml"
CI_FILE = ROOT / ".gitlab-ci.d" / "pipeline.yml"   # the pipeline of one baseline
# top-level keys that are not jobs
GLOBAL_KEYWORDS = {"stages", "variables", "default", "include", "workflow", "image",
                   "services", "cache", "before_script", "after_script"}
# the harness's stages/suites each have a job (issue 15)
EXPECTED_JOBS = {"setup", "import", "apply", "images", "build-patched", "build-stock",
                 "build-asan", "unit", "qemu", "iotests", "peers", "libvirt",
                 "checkpatch", "bisect", "port", "report"}


def _merge(base: dict, over: dict) -> dict:
    """GitLab's `extends`: hashes merge deeply, everything else is replaced."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else v
    return out


def load_ci(path: Path = CI_FILE) -> tuple[dict, dict]:
    """(the file's top level, its jobs with `extends` and `default` resolved)."""
    doc = yaml.safe_load(path.read_text())
    for inc in doc.get("include", []) or []:
        local = inc["local"] if isinstance(inc, dict) else inc
        doc = _merge(yaml.safe_load((ROOT / local.lstrip("/")).read_text()), doc)
    raw = {k: v for k, v in doc.items() if k not in GLOBAL_KEYWORDS}

    def resolve(name, seen=()):
        assert name not in seen, f"extends cycle: {' -> '.join((*seen, name))}"
        job = raw[name]
        ext = job.get("extends", [])
        out: dict = {}
        for parent in [ext] if isinstance(ext, str) else ext:
            assert parent in raw, f"{name} extends unknown {parent}"
            out = _merge(out, resolve(parent, (*seen, name)))
        return _merge(out, {k: v for k, v in job.items() if k != "extends"})

    default = doc.get("default", {})
    jobs = {}
    for name in raw:
        if name.startswith("."):
            continue  # hidden: a template
        job = resolve(name)
        for key in ("before_script", "after_script", "timeout", "interruptible"):
            if key not in job and key in default:
                job[key] = default[key]
        jobs[name] = job
    return doc, jobs


def _lines(job: dict, key: str) -> list[str]:
    out = []
    for item in job.get(key, []) or []:
        out += item if isinstance(item, list) else [item]
    return out


def _needs(job: dict) -> list[dict]:
    return [{"job": n} if isinstance(n, str) else n for n in job.get("needs", []) or []]


def _expand(line: str, variables: dict) -> list[str]:
    for k, v in variables.items():
        line = line.replace(f'"${k}"', str(v)).replace(f"${{{k}}}", str(v)) \
                   .replace(f"${k}", str(v))
    return shlex.split(line, comments=True)


def subcommands() -> set[str]:
    p = build.parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


@pytest.fixture(scope="module")
def ci():
    return load_ci()


def test_the_jobs_are_the_harness_stages(ci):
    _, jobs = ci
    assert EXPECTED_JOBS <= set(jobs), f"missing jobs: {EXPECTED_JOBS - set(jobs)}"


def test_every_job_is_in_a_declared_stage_in_order(ci):
    doc, jobs = ci
    stages = doc["stages"]
    assert len(stages) == len(set(stages))
    for name, job in jobs.items():
        assert job.get("stage", "test") in stages, f"{name}: stage {job.get('stage')}"


def test_every_need_exists_and_runs_no_later(ci):
    doc, jobs = ci
    order = {s: i for i, s in enumerate(doc["stages"])}
    for name, job in jobs.items():
        for need in _needs(job):
            assert need["job"] in jobs, f"{name} needs unknown job {need['job']}"
            assert order[jobs[need["job"]]["stage"]] <= order[job["stage"]], \
                f"{name} needs {need['job']}, a later stage"
    # no cycle: a topological order exists
    done: set[str] = set()
    while len(done) < len(jobs):
        ready = {n for n, j in jobs.items() if n not in done
                 and all(x["job"] in done for x in _needs(j))}
        assert ready, f"needs cycle among {sorted(set(jobs) - done)}"
        done |= ready


def test_every_script_line_is_a_real_build_py_command(ci):
    doc, jobs = ci
    known = subcommands()
    variables = {k: (v["value"] if isinstance(v, dict) else v)
                 for k, v in (doc.get("variables") or {}).items()}
    for name, job in jobs.items():
        scripts = _lines(job, "before_script") + _lines(job, "script")
        assert _lines(job, "script"), f"{name}: no script"
        for line in scripts:
            argv = _expand(line, {**variables, **(job.get("variables") or {})})
            assert argv[:2] == ["python3", "build.py"], \
                f"{name}: `{line}` is not a build.py command (no logic in YAML)"
            rest = argv[2:]
            cmd = next((a for a in rest if not a.startswith("-")
                        and (rest.index(a) == 0 or rest[rest.index(a) - 1] != "--baseline")),
                       None)
            assert cmd in known, f"{name}: `{line}`: {cmd!r} is not one of {sorted(known)}"
            try:
                build.parser().parse_args(rest)
            except SystemExit as exc:  # argparse refused it
                pytest.fail(f"{name}: build.py refuses `{line}` (exit {exc.code})")


def test_the_parent_triggers_the_pipeline_once_per_gating_baseline():
    from harness.core.config import select_baseline
    doc = yaml.safe_load(PARENT_FILE.read_text())
    jobs = {k: v for k, v in doc.items() if k not in GLOBAL_KEYWORDS}
    assert set(jobs) == {"baseline"}
    job = jobs["baseline"]
    assert job["stage"] in doc["stages"]
    assert (ROOT / job["trigger"]["include"]).resolve() == CI_FILE
    assert job["trigger"]["strategy"] == "depend"   # the child's failure gates
    (matrix,) = job["parallel"]["matrix"]
    assert matrix["BASELINE"], "no gating baseline"
    for name in matrix["BASELINE"]:
        select_baseline(name)


def test_baselines_are_profiles_and_port_does_not_gate(ci):
    from harness.core.config import select_baseline
    doc, jobs = ci
    select_baseline(doc["variables"]["BASELINE"])
    select_baseline(doc["variables"]["PORT_BASELINE"])
    assert jobs["port"].get("allow_failure") is True
    assert all(not j.get("allow_failure") for n, j in jobs.items() if n != "port")


def test_timeouts_and_results(ci):
    _, jobs = ci
    for name, job in jobs.items():
        assert job.get("timeout"), f"{name}: no timeout"
    for name in ("unit", "qemu", "iotests", "peers", "libvirt", "report"):
        art = jobs[name]["artifacts"]
        assert art["reports"]["junit"] == "out/results/junit-*.xml", name
        assert art.get("when") == "always", name
    assert "out/results/report.html" in jobs["report"]["artifacts"]["paths"]
    assert jobs["report"]["when"] == "always"
    tests = {n for n, j in jobs.items() if j["stage"] == "test"}
    needed = {x["job"] for x in _needs(jobs["report"])}
    assert tests <= needed, f"report misses {tests - needed}"


@pytest.mark.skipif(not shutil.which("gitlab-ci-local"),
                    reason="gitlab-ci-local not installed (npm install -g gitlab-ci-local; "
                           ".ci/run installs it)")
def test_gitlab_ci_local_reads_the_same_jobs(ci):
    _, jobs = ci
    env = dict(os.environ, GCL_IGNORE_PREDEFINED_VARS="CI")
    res = subprocess.run(["gitlab-ci-local", "--file", str(CI_FILE.relative_to(ROOT)),
                          "--list-json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout
    import json
    listed = json.loads(res.stdout[res.stdout.index("["):])
    assert {j["name"] for j in listed} == set(jobs)
    for j in listed:
        theirs = sorted(n["job"] if isinstance(n, dict) else n for n in j.get("needs") or [])
        assert theirs == sorted(x["job"] for x in _needs(jobs[j["name"]])), j["name"]


@pytest.mark.skipif(not shutil.which("gitlab-ci-local"),
                    reason="gitlab-ci-local not installed (npm install -g gitlab-ci-local; "
                           ".ci/run installs it)")
def test_gitlab_ci_local_reads_the_parent():
    env = dict(os.environ, GCL_IGNORE_PREDEFINED_VARS="CI")
    res = subprocess.run(["gitlab-ci-local", "--list-json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout
    import json
    listed = json.loads(res.stdout[res.stdout.index("["):])
    assert [j["name"] for j in listed] == ["baseline: [10.2.2]"]
