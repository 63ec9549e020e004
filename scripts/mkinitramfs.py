#!/usr/bin/env python3
"""Pack a directory tree into a newc ("070701") cpio archive for a Linux initramfs.

Python 3 standard library only.

    mkinitramfs.py [--gzip | --no-gzip] [--node PATH:TYPE:MAJOR:MINOR[:MODE]]... SRCDIR OUT

* Every file, directory and symlink under SRCDIR becomes an archive entry with
  the same relative path and permission bits, owned by root (uid/gid 0).
  Directories precede their contents; entries are sorted, so the output is
  reproducible (mtime is SOURCE_DATE_EPOCH, default 0).
* --node adds a device node that need not exist on the host (TYPE c or b),
  e.g. --node dev/console:c:5:1:600.  Parent directories must exist in SRCDIR.
* OUT is gzip-compressed if it ends in .gz (or with --gzip), plain otherwise.
"""

import argparse
import gzip
import os
import stat
import sys

TRAILER = "TRAILER!!!"


class Writer:
    def __init__(self, fp, mtime):
        self.fp = fp
        self.ino = 721
        self.mtime = mtime
        self.count = 0

    def _entry(self, name, mode, data=b"", nlink=1, rdev=(0, 0)):
        namebytes = name.encode() + b"\0"
        fields = [
            self.ino, mode, 0, 0, nlink, self.mtime, len(data),
            0, 0, rdev[0], rdev[1], len(namebytes), 0,
        ]
        hdr = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.fp.write(hdr + namebytes)
        self.fp.write(b"\0" * (-(len(hdr) + len(namebytes)) % 4))
        self.fp.write(data)
        self.fp.write(b"\0" * (-len(data) % 4))
        self.ino += 1
        self.count += 1

    def add_dir(self, name, perm):
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def add_file(self, name, perm, data):
        self._entry(name, stat.S_IFREG | perm, data)

    def add_symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_node(self, name, kind, major, minor, perm):
        ftype = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
        self._entry(name, ftype | perm, rdev=(major, minor))

    def finish(self):
        self.ino = 0
        self._entry(TRAILER, 0, nlink=1)


def walk(writer, root, rel=""):
    path = os.path.join(root, rel) if rel else root
    for name in sorted(os.listdir(path)):
        r = f"{rel}/{name}" if rel else name
        full = os.path.join(root, r)
        st = os.lstat(full)
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            writer.add_symlink(r, os.readlink(full))
        elif stat.S_ISDIR(st.st_mode):
            writer.add_dir(r, perm)
            walk(writer, root, r)
        elif stat.S_ISREG(st.st_mode):
            with open(full, "rb") as f:
                writer.add_file(r, perm, f.read())
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
            writer.add_node(r, kind, os.major(st.st_rdev), os.minor(st.st_rdev), perm)
        else:
            print(f"mkinitramfs: skipping {full}: unsupported file type", file=sys.stderr)


def parse_node(spec):
    parts = spec.split(":")
    if len(parts) not in (4, 5) or parts[1] not in ("c", "b"):
        raise argparse.ArgumentTypeError(f"bad --node {spec!r}: want PATH:c|b:MAJOR:MINOR[:MODE]")
    perm = int(parts[4], 8) if len(parts) == 5 else 0o600
    return parts[0].strip("/"), parts[1], int(parts[2]), int(parts[3]), perm


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--gzip", dest="gz", action="store_true", default=None)
    g.add_argument("--no-gzip", dest="gz", action="store_false")
    ap.add_argument("--node", action="append", type=parse_node, default=[])
    ap.add_argument("srcdir")
    ap.add_argument("out")
    a = ap.parse_args()

    gz = a.gz if a.gz is not None else a.out.endswith(".gz")
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as raw:
        fp = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) if gz else raw
        w = Writer(fp, mtime)
        walk(w, a.srcdir)
        for name, kind, major, minor, perm in a.node:
            if os.path.lexists(os.path.join(a.srcdir, name)):
                continue
            w.add_node(name, kind, major, minor, perm)
        w.finish()
        if gz:
            fp.close()
    os.replace(tmp, a.out)
    print(f"mkinitramfs: {a.out}: {w.count - 1} entries, {os.path.getsize(a.out)} bytes")


if __name__ == "__main__":
    main()
