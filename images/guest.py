"""Build the test guest (kernel + initramfs) from Debian packages, cached by content hash.

Stdlib only: `build.py images` runs this on the system python3.

Steps (each logged through ``log``):
  resolve   apt-cache: exact versions of linux-image-amd64 -> linux-image-6.x, busybox-static
            (remembered in packages.json while apt's lists and configuration are unchanged)
  key       sha256 over package versions + init script + module list + BUILDER_VERSION
  download  apt-get download into a temporary directory
  extract   dpkg-deb -x
  assemble  busybox, the virtio modules (dependency order from modules.dep), /init
  pack      cpio -o -H newc (argument lists only, file list on stdin)
  publish   write manifest.json, then rename the directory into the cache atomically
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Bump when the way the guest is assembled changes (invalidates every cache entry).
BUILDER_VERSION = "2"

KERNEL_META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"

# Modules the guest needs; their dependencies are added from modules.dep.
MODULES = ("virtio_pci", "virtio_blk", "virtio_net")

# init_on_free=1: the kernel zeroes what it frees (the unpacked initramfs archive, boot-time
# memory), so a saved VM state skips those pages: 57 MB instead of 85, a fast start loads
# it about 15 ms sooner
CMDLINE = "console=ttyS0,115200 panic=-1 quiet init_on_free=1"

# Printed by init once the modules are loaded; the workload follows.
READY_MARKER = "HARNESS-READY"
COUNTER_RE = r"COUNTER (\d+)"

INIT_SCRIPT = Path(__file__).with_name("init.sh")

Log = Callable[[str], None]


class ImageError(Exception):
    """Building the guest failed; the message names the next step."""


@dataclasses.dataclass(frozen=True)
class Guest:
    kernel: Path
    initrd: Path
    cmdline: str
    manifest: dict
    directory: Path
    ready_marker: str = READY_MARKER
    counter_re: str = COUNTER_RE

    def to_json(self) -> dict:
        return {
            "kernel": str(self.kernel),
            "initrd": str(self.initrd),
            "cmdline": self.cmdline,
            "directory": str(self.directory),
            "ready_marker": self.ready_marker,
            "counter_re": self.counter_re,
            "manifest": self.manifest,
        }


@dataclasses.dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qemu-snap-harness" / "images"


def _run(args: list[str], log: Log, **kwargs) -> subprocess.CompletedProcess:
    log("$ " + shlex.join(args))
    try:
        return subprocess.run(args, check=True, text=True, capture_output=True, **kwargs)
    except FileNotFoundError as exc:
        raise ImageError(
            f"{args[0]} not found: install it (apt-get install {_tool_package(args[0])})"
        ) from exc
    except subprocess.CalledProcessError as exc:
        raise ImageError(
            f"command failed ({exc.returncode}): {shlex.join(args)}\n{exc.stdout}{exc.stderr}"
        ) from exc


def _tool_package(tool: str) -> str:
    return {
        "cpio": "cpio",
        "dpkg-deb": "dpkg",
        "apt-get": "apt",
        "apt-cache": "apt",
        "depmod": "kmod",
    }.get(tool, tool)


def _apt_show(name: str, log: Log) -> dict[str, str]:
    """Fields of the candidate version of a package (apt-cache show --no-all-versions)."""
    try:
        out = _run(["apt-cache", "show", "--no-all-versions", name], log).stdout
    except ImageError as exc:
        raise ImageError(
            f"apt does not know {name}: run `apt-get update` and retry\n{exc}"
        ) from exc
    fields: dict[str, str] = {}
    for line in out.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        m = re.match(r"^([A-Za-z0-9-]+):\s*(.*)$", line)
        if m:
            fields[m.group(1)] = m.group(2)
    if "Version" not in fields:
        raise ImageError(f"apt has no installable {name}: run `apt-get update` and retry")
    return fields


def resolve_packages(log: Log = print) -> tuple[Package, Package, Package]:
    """Return (kernel meta package, concrete kernel image package, busybox-static)."""
    meta = _apt_show(KERNEL_META_PACKAGE, log)
    m = re.search(r"(linux-image-[0-9][^\s,|(]*)", meta.get("Depends", ""))
    if not m:
        raise ImageError(
            f"cannot find the kernel package in {KERNEL_META_PACKAGE} "
            f"Depends: {meta.get('Depends')!r}"
        )
    image = _apt_show(m.group(1), log)
    bb = _apt_show(BUSYBOX_PACKAGE, log)
    return (
        Package(KERNEL_META_PACKAGE, meta["Version"], meta.get("SHA256", "")),
        Package(m.group(1), image["Version"], image.get("SHA256", "")),
        Package(BUSYBOX_PACKAGE, bb["Version"], bb.get("SHA256", "")),
    )


# What `apt-cache show` answers from: the package lists and apt's configuration
APT_STATE = (Path("/var/lib/apt/lists"), Path("/etc/apt"))
RESOLVED = "packages.json"  # the last resolution and the apt state it was made in


def apt_state(roots: tuple[Path, ...] | None = None) -> str:
    """A fingerprint of apt's lists and configuration (names, sizes, mtimes): it changes with
    `apt-get update`, a new source or a pin, whenever `apt-cache` could answer otherwise."""
    h = hashlib.sha256()
    for root in roots or APT_STATE:
        for path in sorted(root.rglob("*")) if root.is_dir() else ():
            if path.is_file() and "partial" not in path.parts and path.name != "lock":
                st = path.stat()
                h.update(f"{path} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resolve_packages_cached(cache_dir: Path, log: Log = print) -> tuple[Package, ...]:
    """resolve_packages(), remembered in ``cache_dir/packages.json`` while apt's state is
    unchanged: three `apt-cache show` runs cost seconds on a busy machine, and every test
    session (every pytest-xdist worker) asks."""
    state = apt_state()
    memo = cache_dir / RESOLVED
    try:
        saved = json.loads(memo.read_text())
        if saved["apt_state"] == state:
            log(f"packages as resolved before (apt's lists unchanged): {memo}")
            return tuple(Package(**p) for p in saved["packages"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    packages = resolve_packages(log)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{RESOLVED}.", dir=cache_dir)
    with os.fdopen(fd, "w") as f:
        json.dump({"apt_state": state,
                   "packages": [dataclasses.asdict(p) for p in packages]}, f, indent=2)
    os.replace(tmp, memo)  # readers see the old or the new file, never half of one
    return packages


def content_key(packages: tuple[Package, ...]) -> str:
    h = hashlib.sha256()
    h.update(f"builder={BUILDER_VERSION}\n".encode())
    for p in packages:
        h.update(f"pkg={p.name}={p.version}={p.sha256}\n".encode())
    h.update(f"modules={','.join(MODULES)}\ncmdline={CMDLINE}\n".encode())
    h.update(INIT_SCRIPT.read_bytes())
    return h.hexdigest()[:16]


def module_load_order(modules_dep: str, wanted: tuple[str, ...]) -> list[str]:
    """Relative .ko paths for ``wanted`` and their dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        mod, rest = line.split(":", 1)
        deps[mod] = rest.split()
        name = re.sub(r"\.ko(\.\w+)?$", "", os.path.basename(mod)).replace("-", "_")
        by_name[name] = mod

    order: list[str] = []

    def visit(mod: str, stack: tuple[str, ...] = ()) -> None:
        if mod in order:
            return
        if mod in stack:
            raise ImageError(f"module dependency cycle: {' -> '.join(stack + (mod,))}")
        # modprobe loads the listed dependencies last-to-first.
        for dep in reversed(deps.get(mod, [])):
            visit(dep, stack + (mod,))
        order.append(mod)

    for name in wanted:
        if name not in by_name:
            raise ImageError(f"module {name} not in modules.dep (built into the kernel?)")
        visit(by_name[name])
    return order


def _depmod() -> str:
    for cand in ("depmod", "/sbin/depmod", "/usr/sbin/depmod"):
        found = shutil.which(cand)
        if found:
            return found
    raise ImageError("depmod not found: install it (apt-get install kmod)")


def _pack_cpio(root: Path, out: Path, log: Log) -> None:
    # Same inputs, same bytes: fixed mtimes (cpio --reproducible fixes inodes and devices).
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            os.utime(os.path.join(dirpath, n), (0, 0), follow_symlinks=False)
    os.utime(root, (0, 0))
    names = ["."]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        for n in sorted(dirnames) + sorted(filenames):
            names.append(str(rel / n) if str(rel) != "." else n)
    args = ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0", "--reproducible"]
    log("$ " + shlex.join(args) + f" < (file list) > {out}")
    with open(out, "wb") as f:
        try:
            proc = subprocess.run(
                args,
                cwd=root,
                input="\n".join(names).encode() + b"\n",
                stdout=f,
                stderr=subprocess.PIPE,
                check=False,
            )
        except FileNotFoundError as exc:
            raise ImageError("cpio not found: install it (apt-get install cpio)") from exc
    if proc.returncode != 0:
        raise ImageError(f"cpio failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")


def _cached(directory: Path) -> Guest | None:
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text())
    kernel, initrd = directory / "vmlinuz", directory / "initrd.cpio"
    if not (kernel.is_file() and initrd.is_file()):
        return None
    return Guest(
        kernel=kernel,
        initrd=initrd,
        cmdline=manifest["cmdline"],
        manifest=manifest,
        directory=directory,
    )


def ensure_guest(cache_dir: Path | None = None, log: Log = print) -> Guest:
    """Return the cached guest for the current package versions, building it if needed."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    packages = resolve_packages_cached(cache_dir, log)
    key = content_key(packages)
    final = cache_dir / key
    guest = _cached(final)
    if guest:
        log(f"guest image up to date: {final}")
        return guest

    log(f"building guest image {key} into {final}")
    started = time.monotonic()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="guest-build-", dir=cache_dir) as tmp_s:
        tmp = Path(tmp_s)
        debs, extract, root, out = tmp / "debs", tmp / "extract", tmp / "root", tmp / "out"
        for d in (debs, extract, root, out):
            d.mkdir()
        _, kernel_pkg, bb_pkg = packages
        _run(["apt-get", "download", kernel_pkg.spec, bb_pkg.spec], log, cwd=debs)
        deb_files = sorted(debs.glob("*.deb"))
        if len(deb_files) != 2:
            raise ImageError(f"expected 2 .deb files after apt-get download, got {deb_files}")
        deb_sha = {}
        for deb in deb_files:
            deb_sha[deb.name] = hashlib.sha256(deb.read_bytes()).hexdigest()
            _run(["dpkg-deb", "-x", str(deb), str(extract)], log)

        vmlinuz = sorted(extract.glob("boot/vmlinuz-*"))
        if len(vmlinuz) != 1:
            raise ImageError(f"expected one kernel in {kernel_pkg.name}, found {vmlinuz}")
        kver = vmlinuz[0].name[len("vmlinuz-") :]
        moddir = None
        for prefix in ("lib/modules", "usr/lib/modules"):
            if (extract / prefix / kver).is_dir():
                moddir = extract / prefix / kver
        if moddir is None:
            raise ImageError(f"no modules for {kver} in {kernel_pkg.name}")
        if not (moddir / "modules.dep").is_file():
            # The package ships no modules.dep (its postinst runs depmod): make it.
            base = moddir.parents[3] if moddir.parents[2].name == "usr" else moddir.parents[2]
            _run([_depmod(), "-b", str(base), kver], log)
        order = module_load_order((moddir / "modules.dep").read_text(), MODULES)

        # Assemble the initramfs tree.
        for d in ("bin", "dev", "proc", "sys", "tmp", "lib/modules"):
            (root / d).mkdir(parents=True, exist_ok=True)
        busybox = extract / "bin" / "busybox"
        if not busybox.is_file():
            busybox = extract / "usr" / "bin" / "busybox"
        shutil.copy2(busybox, root / "bin" / "busybox")
        os.symlink("busybox", root / "bin" / "sh")
        names = []
        for rel in order:
            src = moddir / rel
            name = re.sub(r"\.ko(\.\w+)?$", "", src.name)
            data = src.read_bytes()
            if src.name.endswith(".xz"):
                import lzma

                data = lzma.decompress(data)
            elif src.name.endswith(".gz"):
                import gzip

                data = gzip.decompress(data)
            elif src.name.endswith(".zst"):
                raise ImageError(f"{src.name}: zstd-compressed modules are not supported")
            (root / "lib" / "modules" / f"{name}.ko").write_bytes(data)
            names.append(name)
        (root / "lib" / "modules" / "load-order").write_text("\n".join(names) + "\n")
        shutil.copyfile(INIT_SCRIPT, root / "init")
        os.chmod(root / "init", 0o755)

        shutil.copyfile(vmlinuz[0], out / "vmlinuz")
        _pack_cpio(root, out / "initrd.cpio", log)

        manifest = {
            "key": key,
            "builder_version": BUILDER_VERSION,
            "packages": [dataclasses.asdict(p) for p in packages],
            "deb_sha256": deb_sha,
            "kernel_release": kver,
            "modules": names,
            "cmdline": CMDLINE,
            "ready_marker": READY_MARKER,
            "init_sha256": hashlib.sha256(INIT_SCRIPT.read_bytes()).hexdigest(),
            "kernel_sha256": hashlib.sha256((out / "vmlinuz").read_bytes()).hexdigest(),
            "initrd_sha256": hashlib.sha256((out / "initrd.cpio").read_bytes()).hexdigest(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.rename(out, final)
        except OSError:
            # Another process published the same key first; use theirs.
            if _cached(final) is None:
                raise
    guest = _cached(final)
    assert guest is not None
    log(f"guest image built in {time.monotonic() - started:.1f}s: {final}")
    return guest
