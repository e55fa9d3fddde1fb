"""snaptree/tree.py on recorded data: no QEMU (a fake qemu-img and a fake QMP server)."""

from __future__ import annotations

import json
import socket
import stat
import struct
import threading
import uuid as uuidlib
import xml.etree.ElementTree as ET

import pytest

from snaptree import tree as snaptree

U = {k: f"{i:08x}-2a5b-4fd3-8b0e-4e2c1d0a7a64" for i, k in enumerate("abcdefgh", 1)}

# qemu-img info --output=json (patched build) of an image after: snapshot -c a, -c b, -a a,
# -c c, -c d, -a b, -c e, -d a  (recorded; only "snapshots" is used). Deleting a made its
# children b and c roots (a was a root); the record names e.
IMAGE_SNAPSHOTS = json.loads("""[
 {"icount": 0, "vm-clock-nsec": 0, "name": "b", "date-sec": 1796284751,
  "uuid": "a52db2eb-5f70-4fe4-9361-ca3c65a9fcc9", "date-nsec": 76002000, "vm-clock-sec": 0,
  "id": "2", "vm-state-size": 0},
 {"icount": 0, "vm-clock-nsec": 0, "name": "c", "date-sec": 1796284751,
  "uuid": "ed885d61-64fa-4811-a691-ba8abefa97c9", "date-nsec": 90020000, "vm-clock-sec": 0,
  "id": "3", "vm-state-size": 0},
 {"icount": 0, "vm-clock-nsec": 0, "name": "d", "date-sec": 1796284751,
  "uuid": "7ca7a517-c264-46b0-ae7f-fa0ca32da424", "date-nsec": 99799000, "vm-clock-sec": 0,
  "id": "4", "parent-uuid": "ed885d61-64fa-4811-a691-ba8abefa97c9", "vm-state-size": 0},
 {"icount": 0, "vm-clock-nsec": 0, "name": "e", "date-sec": 1796284751,
  "uuid": "eada752c-76d5-4a83-bf86-43e904188e55", "date-nsec": 115307000, "vm-clock-sec": 0,
  "id": "5", "parent-uuid": "a52db2eb-5f70-4fe4-9361-ca3c65a9fcc9", "vm-state-size": 0}
]""")
IMAGE_CURRENT = "eada752c-76d5-4a83-bf86-43e904188e55"
# The same image when Debian's qemu-img 7.2 (no series) deleted a instead: b and c keep a
# as their parent (dangling), and the record is stale (the table moved), so no current.
A_UUID = "bde064cf-0210-406c-a33f-bebd218d51c9"
IMAGE_SNAPSHOTS_OLD_DELETE = [
    dict(s, **({"parent-uuid": A_UUID} if s["name"] in ("b", "c") else {}))
    for s in IMAGE_SNAPSHOTS
]

# query-vm-snapshots of a VM with two disks (shape of the QAPI example): s1 on both,
# s2 (child of s1) partial, s3 (child of s1) current, an old snapshot without UUID.
VM_SNAPSHOTS = {
    "current": U["c"],
    "snapshots": [
        {"id": "1", "name": "s1", "uuid": U["a"], "vm-state-size": 3178496,
         "date-sec": 1749462021, "date-nsec": 0, "vm-clock-sec": 12, "vm-clock-nsec": 0,
         "devices": ["disk0", "disk1"], "partial": False},
        {"id": "2", "name": "s2", "uuid": U["b"], "parent-uuid": U["a"], "vm-state-size": 3178496,
         "date-sec": 1749462080, "date-nsec": 0, "vm-clock-sec": 70, "vm-clock-nsec": 0,
         "devices": ["disk0"], "partial": True},
        {"id": "3", "name": "s3", "uuid": U["c"], "parent-uuid": U["a"], "vm-state-size": 3178496,
         "date-sec": 1749462090, "date-nsec": 0, "vm-clock-sec": 80, "vm-clock-nsec": 0,
         "devices": ["disk0", "disk1"], "partial": False},
        {"id": "4", "name": "old", "vm-state-size": 3178496,
         "date-sec": 1749462000, "date-nsec": 0, "vm-clock-sec": 1, "vm-clock-nsec": 0,
         "devices": ["disk0", "disk1"], "partial": False},
    ],
}


# query-vm-snapshots recorded from a patched QEMU (tests/qemu/test_vm_lineage.py, two disks):
# "part" was saved on disk0 only, so the disks disagree and there is no current snapshot.
RECORDED_VM = json.loads("""{"snapshots": [
 {"vm-clock-nsec": 889097631, "name": "both", "date-sec": 1795644296,
  "uuid": "780a20be-0e39-468f-9277-639dbd00bca4", "devices": ["disk0", "disk1"],
  "date-nsec": 985059000, "partial": false, "vm-clock-sec": 12, "id": "1",
  "vm-state-size": 85816108},
 {"vm-clock-nsec": 920694277, "name": "part", "date-sec": 1795644297,
  "uuid": "22db712a-c127-4c80-8fd7-9436a640891a", "devices": ["disk0"],
  "date-nsec": 173029000, "partial": true, "vm-clock-sec": 12, "id": "2",
  "parent-uuid": "780a20be-0e39-468f-9277-639dbd00bca4", "vm-state-size": 85812031}]}""")

def _shape(tree: snaptree.Tree) -> list[tuple[int, str]]:
    return [(d, n.snap["name"]) for d, n in tree.walk()]


def test_vm_tree_structure_current_partial_and_flat():
    tree = snaptree.build(VM_SNAPSHOTS)
    assert _shape(tree) == [(0, "s1"), (1, "s2"), (1, "s3")]
    assert [s["name"] for s in tree.flat] == ["old"]
    assert not any(n.dangling for _, n in tree.walk())
    out = snaptree.render(VM_SNAPSHOTS)
    lines = out.splitlines()
    assert lines[0] == f"s1  {U['a']}"
    assert lines[1] == f"|-- s2  {U['b']}  [partial: on disk0 only]"
    assert lines[2] == f"`-- s3  {U['c']} *"
    assert lines[3:] == ["without UUID:", "  old  (id 4)", "* = current snapshot"]
    assert sum(line.count(" *") for line in lines[:3]) == 1


def test_image_tree_after_delete_reparents():
    data = {"current": IMAGE_CURRENT, "snapshots": IMAGE_SNAPSHOTS}
    tree = snaptree.build(data)
    assert _shape(tree) == [(0, "b"), (1, "e"), (0, "c"), (1, "d")]
    assert not any(n.dangling for _, n in tree.walk()), "the series reparents on delete"
    out = snaptree.render(data)
    assert "dangling" not in out
    assert f"`-- e  {IMAGE_CURRENT} *" in out.splitlines()


def test_image_tree_dangling_roots():
    """An older QEMU deleted a: its children keep a as parent, shown as dangling roots."""
    data = {"snapshots": IMAGE_SNAPSHOTS_OLD_DELETE}
    tree = snaptree.build(data)
    assert _shape(tree) == [(0, "b"), (1, "e"), (0, "c"), (1, "d")]
    roots = [n for d, n in tree.walk() if d == 0]
    assert all(n.dangling for n in roots), "parent a was deleted: both roots are dangling"
    out = snaptree.render(data)
    assert f"(parent {A_UUID} not in the list: dangling)" in out
    assert out.splitlines()[-1] == "no current snapshot" and " *" not in out


def test_deep_tree_prefixes():
    snaps = [
        {"name": "a", "uuid": U["a"]},
        {"name": "b", "uuid": U["b"], "parent-uuid": U["a"]},
        {"name": "c", "uuid": U["c"], "parent-uuid": U["b"]},
        {"name": "d", "uuid": U["d"], "parent-uuid": U["a"]},
        {"name": "e", "uuid": U["e"], "parent-uuid": U["c"]},
    ]
    out = snaptree.render({"snapshots": snaps})
    assert out.splitlines() == [
        f"a  {U['a']}",
        f"|-- b  {U['b']}",
        f"|   `-- c  {U['c']}",
        f"|       `-- e  {U['e']}",
        f"`-- d  {U['d']}",
        "no current snapshot",
    ]


def test_parent_cycle_and_self_parent_do_not_hang():
    snaps = [
        {"name": "x", "uuid": U["a"], "parent-uuid": U["b"]},
        {"name": "y", "uuid": U["b"], "parent-uuid": U["a"]},
        {"name": "z", "uuid": U["c"], "parent-uuid": U["c"]},
    ]
    tree = snaptree.build({"snapshots": snaps})
    assert sorted(n.snap["name"] for _, n in tree.walk()) == ["x", "y", "z"]
    out = snaptree.render(tree)
    assert "(parent cycle)" in out


def test_empty_and_unknown_current():
    assert snaptree.render({"snapshots": []}) == "(no snapshots)\n"
    out = snaptree.render({"current": U["h"], "snapshots": [{"name": "a", "uuid": U["a"]}]})
    assert f"current snapshot {U['h']} is not in the list" in out and " *" not in out


TABLE_OFFSET, NB_SNAPSHOTS = 0x90000, 4


def _qcow2_header(path, current: str | None, *, length: int = 32, twice=False, version=3,
                  autoclear: int = 0, record_offset=TABLE_OFFSET, record_nb=NB_SNAPSHOTS):
    """A qcow2 header (first cluster only) whose snapshot table pointer is TABLE_OFFSET /
    NB_SNAPSHOTS, with an optional current snapshot record (as the first extension) that
    names ``current`` for the table at ``record_offset`` / ``record_nb``, cut or padded to
    ``length`` bytes."""
    hdr = bytearray(104 if version >= 3 else 72)
    hdr[0:4] = b"QFI\xfb"
    struct.pack_into(">I", hdr, 4, version)
    struct.pack_into(">I", hdr, 20, 16)  # cluster_bits
    struct.pack_into(">IQ", hdr, 60, NB_SNAPSHOTS, TABLE_OFFSET)
    if version >= 3:
        struct.pack_into(">Q", hdr, 88, autoclear)
        struct.pack_into(">I", hdr, 100, 112)  # header_length
        hdr += bytes(8)
    exts = b""
    if current is not None:
        record = uuidlib.UUID(current).bytes + struct.pack(">QI4x", record_offset, record_nb)
        data = record[:length].ljust(length, b"\0")
        ext = struct.pack(">II", snaptree.QCOW2_EXT_CURRENT, length) + data
        ext += bytes(-len(ext) % 8)
        exts += ext * (2 if twice else 1)
    hdr += exts + bytes(8)  # end of extensions
    path.write_bytes(bytes(hdr).ljust(65536, b"\0"))
    return path


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"current": U["e"]}, U["e"]),
        ({"current": U["e"], "version": 2}, U["e"]),  # v2 images have the record too
        ({"current": U["e"], "autoclear": 4}, U["e"]),  # no feature bit has a say
        # stale: an older QEMU created or deleted a snapshot, the table moved
        ({"current": U["e"], "record_offset": TABLE_OFFSET + 0x10000}, None),
        ({"current": U["e"], "record_nb": NB_SNAPSHOTS - 1}, None),
        # the first design's 16-byte extension (under autoclear bit 2) is not a record
        ({"current": U["e"], "length": 16, "autoclear": 4}, None),
        ({"current": U["e"], "length": 31}, None),
        ({"current": U["e"], "length": 33}, None),
        ({"current": U["e"], "twice": True}, None),
        ({"current": str(uuidlib.UUID(int=0))}, None),
        ({"current": None}, None),
    ],
)
def test_qcow2_current(tmp_path, kwargs, expected):
    assert snaptree.qcow2_current(_qcow2_header(tmp_path / "x.qcow2", **kwargs)) == expected


def _fake_qemu_img(tmp_path, info: dict):
    script = tmp_path / "qemu-img"
    payload = tmp_path / "info.json"
    payload.write_text(json.dumps(info))
    script.write_text(f"#!/bin/sh\n[ \"$1 $2 $3\" = 'info --output=json -U' ] || exit 2\n"
                      f"cat '{payload}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_from_image_reads_table_and_current(tmp_path):
    img = _qcow2_header(tmp_path / "d.qcow2", IMAGE_CURRENT)
    qemu_img = _fake_qemu_img(tmp_path, {"format": "qcow2", "snapshots": IMAGE_SNAPSHOTS})
    data = snaptree.from_image(qemu_img, img)
    assert data["current"] == IMAGE_CURRENT and data["snapshots"] == IMAGE_SNAPSHOTS
    # a current UUID that is not in the table is ignored (spec: "must be ignored")
    _qcow2_header(img, U["h"])
    assert "current" not in snaptree.from_image(qemu_img, img)


def test_from_image_failure_is_an_error(tmp_path):
    with pytest.raises(snaptree.SnapTreeError, match="failed"):
        snaptree.from_image("/bin/false", tmp_path / "none.qcow2")


def _fake_qmp(path, reply):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    seen = []

    def serve():
        conn, _ = srv.accept()
        f = conn.makefile("rwb")
        f.write(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
        f.flush()
        for line in f:
            msg = json.loads(line)
            seen.append(msg["execute"])
            if msg["execute"] == "qmp_capabilities":
                f.write(b'{"return": {}}\r\n')
            else:
                f.write(b'{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}\n')
                f.write(json.dumps(reply).encode() + b"\r\n")
            f.flush()
        conn.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t, seen


def test_from_qmp_socket(tmp_path):
    sock = tmp_path / "q"
    t, seen = _fake_qmp(sock, {"return": VM_SNAPSHOTS})
    assert snaptree.from_qmp_socket(sock, timeout=5) == VM_SNAPSHOTS
    t.join(5)
    assert seen == ["qmp_capabilities", "query-vm-snapshots"]


def test_from_qmp_socket_error_and_cli(tmp_path, capsys):
    sock = tmp_path / "q"
    t, _ = _fake_qmp(sock, {"error": {"class": "CommandNotFound", "desc": "no such command"}})
    assert snaptree.main(["--qmp", str(sock)]) == 3
    t.join(5)
    err = capsys.readouterr().err
    assert "CommandNotFound" in err and "\n  next: " in err
    assert snaptree.main(["--qmp", str(tmp_path / "missing")]) == 3
    assert "next: check the image path" in capsys.readouterr().err


def test_cli_image(tmp_path, capsys):
    """The CLI prints the tree (or, --json, the data) and only reads the image: it may be
    in use by a running QEMU."""
    img = _qcow2_header(tmp_path / "d.qcow2", IMAGE_CURRENT)
    before = img.read_bytes(), img.stat().st_mtime_ns
    qemu_img = _fake_qemu_img(tmp_path, {"format": "qcow2", "snapshots": IMAGE_SNAPSHOTS})
    assert snaptree.main(["--image", str(img), "--qemu-img", str(qemu_img)]) == 0
    out = capsys.readouterr().out
    assert out == snaptree.render({"current": IMAGE_CURRENT, "snapshots": IMAGE_SNAPSHOTS})
    assert snaptree.main(["--image", str(img), "--qemu-img", str(qemu_img), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"current": IMAGE_CURRENT,
                                                   "snapshots": IMAGE_SNAPSHOTS}
    assert snaptree.main(["--image", str(img), "--qemu-img", str(qemu_img), "--svg"]) == 0
    svg = ET.fromstring(capsys.readouterr().out)
    assert len([g for g in svg.iter("{http://www.w3.org/2000/svg}g")
                if "node" in g.get("class", "")]) == len(IMAGE_SNAPSHOTS)
    assert (img.read_bytes(), img.stat().st_mtime_ns) == before, "the image was written"


def test_recorded_vm_partial_without_current():
    assert snaptree.render(RECORDED_VM).splitlines() == [
        "both  780a20be-0e39-468f-9277-639dbd00bca4",
        "`-- part  22db712a-c127-4c80-8fd7-9436a640891a  [partial: on disk0 only]",
        "no current snapshot",
    ]
