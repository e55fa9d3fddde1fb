"""The fuzzer's image generator (rig/reliability/fuzzimage.py) on every kind of spec its
strategies (rig/reliability/fuzzspec.py) draw, on a recorded template: each spec makes an
image whose header points where the spec says. A generator error stops a fuzz run (a full
run at 15 minutes died on a current-snapshot record whose table pointer was 2**64 - 512,
plus one cluster, packed into a u64); no QEMU is needed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from rig import qcow2
from rig.reliability import fuzzimage as fz
from rig.reliability.fuzzspec import tables

DATA = Path(__file__).resolve().parent / "data" / "rig"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> fz.Template:
    path = tmp_path_factory.mktemp("fuzz") / "template.qcow2"
    path.write_bytes(gzip.decompress((DATA / "fuzz-template.qcow2.gz").read_bytes()))
    return fz.load_template(path)


def _header_table(path: Path) -> tuple[int, int]:
    nb, offset = struct.unpack_from(">IQ", path.read_bytes(), 60)
    return nb, offset


def test_template_is_the_fuzzers(template):
    assert [s.name for s in template.image.snapshots] == ["s1", "s2"]
    assert template.image.cluster_size == 4096 and template.table_room == 4096


@pytest.mark.parametrize("bogus", [2**64 - 512, 2**64 - 1])
def test_record_pointer_past_the_end_wraps(template, tmp_path, bogus):
    spec = fz.TableSpec(entries=(), placement="bogus", bogus_offset=bogus,
                        record=fz.RecordSpec(names="entry:0", offset_matches=False,
                                             count_matches=False))
    out = fz.write(spec, template, tmp_path / "x.qcow2")
    assert _header_table(out) == (0, bogus)
    view = qcow2.read(out).current_record()
    # a stale record: its pointer and count wrapped around, one past the header's
    assert view.record is not None
    assert (view.record.snapshots_offset, view.record.nb_snapshots) == \
        ((bogus + 4096) % 2**64, 1)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=tables())
def test_every_spec_makes_an_image(template, tmp_path, spec):
    out = fz.write(spec, template, tmp_path / "x.qcow2")
    nb, offset = _header_table(out)
    assert nb == max(0, min(len(spec.entries) + spec.nb_delta, 2**32 - 1))
    if spec.placement == "bogus":
        assert offset == spec.bogus_offset
    assert out.read_bytes()[:4] == b"QFI\xfb"


def test_point_first_l2_entry_at_active_l1(template, tmp_path):
    """rig.qcow2's corruption for the corrupt-node tests, on the same recorded image."""
    path = tmp_path / "c.qcow2"
    path.write_bytes(template.path.read_bytes())
    qcow2.point_first_l2_entry_at_active_l1(path)
    data = path.read_bytes()
    l1_offset, = struct.unpack_from(">Q", data, 40)
    assert l1_offset == template.active_l1[0]
    l2_offset, = struct.unpack_from(">Q", data, l1_offset)
    entry, = struct.unpack_from(">Q", data, l2_offset & 0x00FFFFFFFFFFFE00)
    assert entry == (1 << 63) | l1_offset
