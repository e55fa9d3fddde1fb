"""The snapshot-table fuzzer's strategies (hypothesis): structure-aware ``TableSpec``s that
``fuzzimage.write`` turns into images. Shared by the fuzzer (tests/reliability/test_fuzz.py)
and the generator's own unit test, which checks that every spec makes an image."""

from __future__ import annotations

from hypothesis import strategies as st

from rig.reliability import fuzzimage as fz

_text = st.sampled_from([b"", b"1", b"2", b"s1", b"s2", b"x" * 64, b"\xff\xfe", b"a b",
                         b"-d", b"1" * 300]) | st.binary(max_size=40)
_u32 = st.sampled_from([0, 1, 7, 8, 0x7FFFFFFF, 0xFFFFFFFF]) | st.integers(0, 2**32 - 1)
_ref = st.sampled_from(["nil", "entry:0", "entry:1", "entry:2", "self", "stranger"])
_extra_size = st.sampled_from([0, 8, 16, 23, 24, 39, 40, 41, 55, 56, 57, 64, 100, 1024]) | \
    st.integers(0, 2048)


@st.composite
def entries(draw, i: int):
    return fz.EntrySpec(
        l1=draw(st.sampled_from(["own", "own", "own", "active", "zero", "unaligned", "far"])),
        l1_size=draw(st.none() | st.none() | st.sampled_from([0, 1, 2, 0x2000000,
                                                              0xFFFFFFFF]) | _u32),
        ident=draw(st.just(str(i + 1).encode()) | _text),
        name=draw(st.just(f"s{i + 1}".encode()) | _text),
        date_sec=draw(_u32), date_nsec=draw(_u32),
        vm_clock=draw(st.integers(0, 2**64 - 1)),
        vm_state_size=draw(st.just(0) | _u32),
        extra_size=draw(_extra_size),
        vm_state_large=draw(st.just(0) | st.integers(0, 2**64 - 1)),
        disk_size=draw(st.none() | st.sampled_from([0, 512, 1 << 40]) | st.integers(0, 2**64 - 1)),
        icount=draw(st.sampled_from([0, 2**64 - 1]) | st.integers(0, 2**64 - 1)),
        uuid=draw(st.sampled_from(["fresh", "fresh", "fresh", "nil", "dup:0", "dup:1"])),
        parent=draw(_ref),
        tail=draw(st.binary(max_size=64)),
    )


@st.composite
def tables(draw):
    n = draw(st.integers(0, 6))
    ents = tuple(draw(entries(i)) for i in range(n))
    record = draw(st.none() | st.builds(
        fz.RecordSpec,
        names=st.sampled_from(["entry:0", "entry:1", "entry:5", "nil", "stranger"]),
        offset_matches=st.booleans(), count_matches=st.booleans(),
        reserved=st.sampled_from([bytes(4), b"\xff" * 4]),
        length=st.sampled_from([32, 32, 32, 0, 16, 31, 33, 40]),
        copies=st.sampled_from([1, 1, 1, 2])))
    return fz.TableSpec(
        entries=ents,
        placement=draw(st.sampled_from(["in_place", "in_place", "append", "bogus"])),
        bogus_offset=draw(st.sampled_from([0, 8, 512, 4096, 1 << 20, 1 << 40, 2**64 - 512])
                          | st.integers(0, 2**64 - 1)),
        nb_delta=draw(st.sampled_from([0] * 12 + [-1, 1, 1000, 65537, 2**31])),
        record=record,
        seed=draw(st.integers(0, 2**32)))
