"""The peer matrix as data: the image the writer makes, what each peer does to it, and what
must hold afterwards. Expectations live here and nowhere else (``expected_current``,
``known_loss``); tests/peers/test_matrix.py only runs and compares.

Pure data and pure functions (no pytest, no QEMU): tests/unit/test_peers_matrix.py checks it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

MiB = 1 << 20
CHUNK = 64 * 1024  # every write is one 64 KiB cluster
SIZE = 16 * MiB
REGIONS = tuple(i * MiB for i in range(8))  # the offsets whose content the model tracks


# -- the image model: steps and their effect -------------------------------------------------


@dataclass(frozen=True)
class Write:
    offset: int
    pattern: int | None  # None: `write -z` (a zero cluster in a v3 image)


@dataclass(frozen=True)
class Snap:
    name: str  # `snapshot -c` / savevm: the new snapshot descends from the current one


@dataclass(frozen=True)
class Apply:
    name: str  # `snapshot -a` / loadvm


@dataclass(frozen=True)
class Delete:
    name: str  # `snapshot -d` / delvm


@dataclass(frozen=True)
class Grow:
    by: int  # resize


Step = Write | Snap | Apply | Delete | Grow

# Made by the writer (the patched build, or a stand-in): a tree s1 -> s2 -> {s3, s4}, the
# current snapshot s4, data in the active layer after it, a zero cluster (6M) in s3.
BASE: tuple[Step, ...] = (
    Write(0, 0x11), Write(1 * MiB, 0xA1), Snap("s1"),
    Write(0, 0x22), Write(2 * MiB, 0xA2), Write(6 * MiB, 0xB6), Snap("s2"),
    Write(0, 0x33), Write(3 * MiB, 0xA3), Write(6 * MiB, None), Snap("s3"),
    Apply("s2"),
    Write(0, 0x44), Write(4 * MiB, 0xA4), Snap("s4"),
    Write(0, 0x55), Write(5 * MiB, 0xA5),
)  # fmt: skip


@dataclass
class State:
    """What the image must contain: each snapshot's regions, the active layer's, lineage."""

    snapshots: dict[str, dict[int, int]] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    active: dict[int, int] = field(default_factory=lambda: dict.fromkeys(REGIONS, 0))
    current: str | None = None
    size: int = SIZE

    def copy(self) -> State:
        return replace(
            self,
            snapshots={k: dict(v) for k, v in self.snapshots.items()},
            parents=dict(self.parents),
            sizes=dict(self.sizes),
            active=dict(self.active),
        )


def simulate(steps: tuple[Step, ...], state: State | None = None) -> State:
    """Apply ``steps`` to ``state`` (a fresh image when None) as QEMU would."""
    st = state.copy() if state else State()
    for step in steps:
        if isinstance(step, Write):
            st.active[step.offset] = step.pattern or 0
        elif isinstance(step, Snap):
            st.snapshots[step.name] = dict(st.active)
            st.parents[step.name] = st.current
            st.sizes[step.name] = st.size
            st.current = step.name
        elif isinstance(step, Apply):
            st.active = dict(st.snapshots[step.name])
            st.current = step.name
        elif isinstance(step, Delete):
            del st.snapshots[step.name]
            if st.current == step.name:
                st.current = st.parents[step.name]
            del st.parents[step.name]
        elif isinstance(step, Grow):
            st.size += step.by
        else:  # pragma: no cover - Step is closed
            raise TypeError(step)
    return st


BASE_STATE = simulate(BASE)


# -- how the writer marks identity: the designs ----------------------------------------------


class Design(enum.Enum):
    """How an image carries the current snapshot."""

    RECORD32 = "record32"  # the issue 11 redesign: 32-byte extension with the table pointer
    AUTOCLEAR16 = "autoclear16"  # the first design: 16-byte extension under autoclear bit 2
    NONE = "none"  # no identity at all (a build without the series)


# The autoclear bit the first design set (AUTOCLEAR16); the series sets no feature bit now.
AUTOCLEAR16_BIT = 1 << 2


class Current(enum.Enum):
    """What a reader of the design makes of the current snapshot after the peer's op."""

    RIGHT = "right"  # valid, and names the snapshot the active layer descends from
    STALE = "stale"  # recognised as out of date: ignored (no current snapshot)
    WRONG = "wrong"  # looks valid but names another snapshot: an undetectable stale record
    ABSENT = "absent"  # the extension is gone
    MALFORMED = "malformed"


# -- what a peer does: operations ------------------------------------------------------------


@dataclass(frozen=True)
class Img:
    """qemu-img of the peer; {img} is the image, {ws} the workspace directory (as the peer
    sees them). Files an image refers to are named relative to it, so that the host and the
    chroot resolve them alike."""

    args: tuple[str, ...]


@dataclass(frozen=True)
class Io:
    args: tuple[str, ...]


@dataclass(frozen=True)
class Vm:
    """One qemu-system-x86_64 session of the peer on the image: HMP commands in order."""

    hmp: tuple[str, ...]


class Prep(enum.Enum):
    """What the writer adds to the image before the peer's op (the upstream-bug triggers)."""

    NONE = "none"
    BITMAP = "bitmap"  # a persistent dirty bitmap (qemu-img bitmap --add, autoclear bit 0)
    BITMAP_INCONSISTENT = "bitmap-inconsistent"  # ... with autoclear bit 0 cleared
    AUTOCLEAR_UNKNOWN = "autoclear-unknown"  # an autoclear bit no QEMU knows (bit 7)


AUTOCLEAR_UNKNOWN_BIT = 1 << 7


@dataclass(frozen=True)
class Op:
    name: str
    doc: str
    steps: tuple[Img | Io | Vm, ...]
    effect: tuple[Step, ...] = ()  # on the model; the peer's own snapshots carry no UUID
    prep: Prep = Prep.NONE
    since: tuple[int, int] = (0, 0)  # the first QEMU release that has the command
    # qcow2_do_open() read-write, which clears unknown autoclear bits (commit only reopens
    # its base read-write; convert reads its source)
    opens_rw: bool = True
    check_repair: bool = False  # `qemu-img check -r`: the image is opened in check mode
    output: str | None = None  # a new image the op makes in the workspace ({ws}/output)
    bug: str | None = None  # a key of BUGS: this op loses data in every peer, series or not

    @property
    def rewrites_table(self) -> bool:
        return any(isinstance(s, Snap | Delete) for s in self.effect)

    @property
    def count_changes(self) -> bool:
        """The number of snapshots differs afterwards."""
        net = sum(1 if isinstance(s, Snap) else -1 if isinstance(s, Delete) else 0
                  for s in self.effect)  # fmt: skip
        return net != 0


def _img(*args: str) -> Img:
    return Img(tuple(args))


OPS: tuple[Op, ...] = (
    Op("check-leaks", "qemu-img check -r leaks", (_img("check", "-r", "leaks", "{img}"),),
       check_repair=True),
    Op("check-all", "qemu-img check -r all", (_img("check", "-r", "all", "{img}"),),
       check_repair=True),
    Op("amend-lazy-refcounts", "amend -o lazy_refcounts=on, then =off",
       (_img("amend", "-f", "qcow2", "-o", "lazy_refcounts=on", "{img}"),
        _img("amend", "-f", "qcow2", "-o", "lazy_refcounts=off", "{img}"))),
    Op("amend-compat", "amend -o compat=0.10 (v2), then compat=1.1",
       (_img("amend", "-f", "qcow2", "-o", "compat=0.10", "{img}"),
        _img("amend", "-f", "qcow2", "-o", "compat=1.1", "{img}")),
       bug="zero-expansion"),
    Op("resize", "resize +16M (snapshots keep their size)", (_img("resize", "{img}", "+16M"),),
       effect=(Grow(16 * MiB),)),
    Op("rebase-u", "rebase -u onto an empty backing file",
       (_img("create", "-q", "-f", "qcow2", "{ws}/backing.qcow2", "16M"),
        _img("rebase", "-u", "-b", "backing.qcow2", "-F", "qcow2", "{img}"))),
    Op("commit", "commit an overlay into the image",
       (_img("create", "-q", "-f", "qcow2", "-b", "img.qcow2", "-F", "qcow2",
             "{ws}/overlay.qcow2"),
        Io(("-f", "qcow2", "-c", "write -P 0xc7 7M 64k", "{ws}/overlay.qcow2")),
        _img("commit", "-f", "qcow2", "{ws}/overlay.qcow2")),
       effect=(Write(7 * MiB, 0xC7),), opens_rw=False),
    Op("convert", "convert to a new qcow2 (internal snapshots are not copied, by design)",
       (_img("convert", "-f", "qcow2", "-O", "qcow2", "{img}", "{ws}/output.qcow2"),),
       opens_rw=False, output="output.qcow2"),
    Op("snapshot-create", "snapshot -c p1", (_img("snapshot", "-c", "p1", "{img}"),),
       effect=(Snap("p1"),)),
    Op("snapshot-apply", "snapshot -a s1", (_img("snapshot", "-a", "s1", "{img}"),),
       effect=(Apply("s1"),)),
    Op("snapshot-delete", "snapshot -d s3 (a leaf, not current)",
       (_img("snapshot", "-d", "s3", "{img}"),), effect=(Delete("s3"),)),
    Op("snapshot-delete-create", "snapshot -d s3, then -c p1 (as many snapshots as before)",
       (_img("snapshot", "-d", "s3", "{img}"), _img("snapshot", "-c", "p1", "{img}")),
       effect=(Delete("s3"), Snap("p1"))),
    Op("bitmap", "bitmap --add b0, then --remove b0",
       (_img("bitmap", "--add", "{img}", "b0"), _img("bitmap", "--remove", "{img}", "b0")),
       since=(5, 1)),
    Op("vm-savevm", "qemu-system: savevm p1", (Vm(("savevm p1",)),), effect=(Snap("p1"),)),
    Op("vm-save-load-del", "qemu-system: savevm p1, loadvm p1, delvm p1",
       (Vm(("savevm p1", "loadvm p1", "delvm p1")),),
       effect=(Snap("p1"), Apply("p1"), Delete("p1"))),
    # The upstream bug: check mode does not read the snapshot table, so a header rewrite
    # during open (bitmaps, unknown autoclear bits) writes nb_snapshots = 0.
    Op("check-leaks+bitmap", "check -r leaks, image with a persistent bitmap",
       (_img("check", "-r", "leaks", "{img}"),), prep=Prep.BITMAP, check_repair=True),
    Op("check-all+bitmap", "check -r all, image with a persistent bitmap",
       (_img("check", "-r", "all", "{img}"),), prep=Prep.BITMAP, check_repair=True),
    Op("check-leaks+bitmap-inconsistent",
       "check -r leaks, bitmap extension without autoclear bit 0",
       (_img("check", "-r", "leaks", "{img}"),), prep=Prep.BITMAP_INCONSISTENT,
       check_repair=True),
    Op("check-leaks+autoclear-unknown", "check -r leaks, an unknown autoclear bit (7) set",
       (_img("check", "-r", "leaks", "{img}"),), prep=Prep.AUTOCLEAR_UNKNOWN,
       check_repair=True),
)  # fmt: skip

OPS_BY_NAME = {op.name: op for op in OPS}


def after(op: Op, base: State = BASE_STATE) -> State:
    """The image as it must be after ``op`` (snapshots, data, and the true current)."""
    return simulate(op.effect, base)


# -- expectations: the one place ---------------------------------------------------------------

UPSTREAM_FIX = "qcow2: Do not drop the snapshot table when updating the header in check mode"
# The first release with the upstream fix; None: no released QEMU has it yet.
UPSTREAM_FIX_RELEASE: tuple[int, int] | None = None

CHECK_MODE_BUG = (
    "known upstream bug (every QEMU up to {version}): check mode does not read the snapshot "
    "table, so rewriting the header while opening ({trigger}) writes nb_snapshots=0 and "
    "`check -r` frees every snapshot; fixed by the series' '" + UPSTREAM_FIX + "'"
)
# Upstream bugs an op hits whatever the writer did (Op.bug): no fix in the series yet.
BUGS = {
    "zero-expansion": (
        "known upstream bug (every QEMU up to {version}; found by this matrix, not yet "
        "reported or fixed): downgrading to compat=0.10 turns a preallocated zero cluster "
        "into data by writing zeroes to its host cluster in place, even when a snapshot "
        "shares that cluster (expand_zero_clusters_in_l1 does not look at the data "
        "cluster's refcount), so the snapshot reads zeroes there (s2, s4 and the active "
        "layer at 6M)"
    ),
}
TRIGGERS = {
    Prep.BITMAP: "storing bitmap flags",
    Prep.BITMAP_INCONSISTENT: "dropping an inconsistent bitmap extension",
    Prep.AUTOCLEAR_UNKNOWN: "clearing an unknown autoclear bit",
}


def expected_current(op: Op, design: Design) -> frozenset[Current]:
    """What the current snapshot must look like after ``op`` for a reader of ``design``."""
    if design is Design.NONE:
        return frozenset({Current.ABSENT})
    if design is Design.AUTOCLEAR16:
        # A read-write open by a QEMU without the series clears autoclear bit 2.
        return frozenset({Current.STALE if op.opens_rw else Current.RIGHT})
    # RECORD32: an older QEMU keeps unknown header extensions as they are, so the record
    # is right unless the table moved under it or the active layer changed its origin.
    truth = after(op).current
    if not op.rewrites_table:
        if truth == BASE_STATE.current:
            return frozenset({Current.RIGHT})
        # `snapshot -a` / loadvm leave the table where it is: nothing to detect. The worst
        # outcome SPEC.md §1 allows: a wrong parent for the next snapshot, never lost data.
        return frozenset({Current.WRONG})
    if op.count_changes:
        return frozenset({Current.STALE})
    # As many snapshots as before: the table may land where it was (the record matches
    # again) or elsewhere (stale, detected).
    same = Current.RIGHT if truth == BASE_STATE.current else Current.WRONG
    return frozenset({same, Current.STALE})


def known_loss(op: Op, peer_version: tuple[int, ...], design: Design) -> str | None:
    """Why ``op`` by a peer of ``peer_version`` loses snapshots, when that is a known bug
    (a strict xfail); None when nothing may be lost."""
    fixed = UPSTREAM_FIX_RELEASE is not None and tuple(peer_version[:2]) >= UPSTREAM_FIX_RELEASE
    version = ".".join(map(str, peer_version)) or "?"
    if op.bug:
        return BUGS[op.bug].format(version=version)
    if not op.check_repair or fixed:
        return None
    if op.prep in TRIGGERS:
        return CHECK_MODE_BUG.format(version=version, trigger=TRIGGERS[op.prep])
    if design is Design.AUTOCLEAR16:
        return CHECK_MODE_BUG.format(
            version=version, trigger="clearing autoclear bit 2, which today's series sets"
        )
    return None


def applies(op: Op, peer_version: tuple[int, ...]) -> bool:
    return tuple(peer_version[:2]) >= op.since
