"""The feature probe (rig/features.py) that decides which series tests are expected
failures on which build is itself a test, on every build: the patched build has every
feature of the series, the stock build none. A probe that always says "absent" (every
series test would be excused on patched) fails here on patched; one that always says
"present" fails here on stock."""

from __future__ import annotations

from rig.features import FEATURES

EXPECTED = {"patched": True, "stock": False}


def test_probe_matches_the_build(build, build_features):
    assert set(build_features) == set(FEATURES)
    want = EXPECTED[build.name]
    wrong = {f: have for f, have in build_features.items() if have != want}
    assert not wrong, (
        f"the {build.name} build {'lacks' if want else 'has'} series feature(s) "
        f"{sorted(wrong)}: {'; '.join(FEATURES[f] for f in sorted(wrong))}"
    )
