#!/usr/bin/env python3
"""Helpers that populate the guest initramfs staging tree.  Python 3 stdlib only.

  guestroot.py modules --kroot DIR --kver VER --stage DIR [--also MOD]... MOD...
      Resolve MOD... (and --also MODs, skipped when the kernel lacks them) and their
      dependencies (the depends= and softdep= entries of each module's .modinfo ELF
      section) inside DIR/usr/lib/modules/VER, write them *decompressed* (.ko) to
      STAGE/usr/lib/modules/VER/<same path>, write a matching modules.dep (so busybox
      modprobe works too), copy modules.builtin/modules.order, and write
      STAGE/usr/lib/modules/load-order: one absolute guest path per line, dependencies
      first, for MOD... and their dependencies only (--also modules are for modprobe).
      Modules built into the kernel (modules.builtin) are skipped.

  guestroot.py elf --root DIR --stage DIR PATH...
      Copy the ELF executables DIR/PATH... to STAGE/PATH together with their
      program interpreter and every shared library they need (DT_NEEDED,
      recursively), searched in DIR's standard library directories.

  guestroot.py config --kroot DIR --kver VER SYMBOL...
      Print SYMBOL=value lines ("is-not-set" / "absent") from DIR/boot/config-VER, or from
      DIR/usr/lib/modules/VER/config where the kernel is packaged that way (Debian 7.x).
"""

import argparse
import lzma
import gzip
import os
import shutil
import struct
import sys

# ---------------------------------------------------------------- ELF parsing


class Elf:
    """Minimal ELF64 little-endian reader: sections, PT_INTERP, DT_NEEDED."""

    def __init__(self, data, name="?"):
        self.data = data
        self.name = name
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise ValueError(f"{name}: not a 64-bit little-endian ELF file")
        (self.e_phoff, self.e_shoff) = struct.unpack_from("<QQ", data, 0x20)
        (self.e_phentsize, self.e_phnum, self.e_shentsize, self.e_shnum,
         self.e_shstrndx) = struct.unpack_from("<HHHHH", data, 0x36)
        self.sections = []
        for i in range(self.e_shnum):
            off = self.e_shoff + i * self.e_shentsize
            (sh_name, sh_type, _flags, _addr, sh_offset, sh_size, sh_link) = \
                struct.unpack_from("<IIQQQQI", data, off)
            self.sections.append([sh_name, sh_type, sh_offset, sh_size, sh_link, None])
        if self.sections and self.e_shstrndx < len(self.sections):
            strtab = self.sections[self.e_shstrndx]
            for s in self.sections:
                s[5] = self._cstr(strtab[2] + s[0])

    def _cstr(self, off):
        end = self.data.index(b"\0", off)
        return self.data[off:end].decode()

    def section(self, name):
        for s in self.sections:
            if s[5] == name:
                return self.data[s[2]:s[2] + s[3]]
        return None

    def interp(self):
        for i in range(self.e_phnum):
            off = self.e_phoff + i * self.e_phentsize
            p_type, _flags, p_offset, _va, _pa, p_filesz = struct.unpack_from("<IIQQQQ", self.data, off)
            if p_type == 3:  # PT_INTERP
                return self.data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
        return None

    def needed(self):
        out = []
        for s in self.sections:
            if s[1] != 6:  # SHT_DYNAMIC
                continue
            strtab = self.sections[s[4]]
            for off in range(s[2], s[2] + s[3], 16):
                tag, val = struct.unpack_from("<qQ", self.data, off)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    out.append(self._cstr(strtab[2] + val))
        return out


# ------------------------------------------------------------------ modules


def norm(name):
    return name.replace("-", "_")


def read_module(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        data = lzma.decompress(data)
    elif path.endswith(".zst"):
        raise SystemExit(f"{path}: zstd-compressed modules are not supported")
    elif path.endswith(".gz"):
        data = gzip.decompress(data)
    return data


def modinfo(data, name):
    sec = Elf(data, name).section(".modinfo") or b""
    info = {}
    for item in sec.split(b"\0"):
        if b"=" in item:
            k, v = item.decode(errors="replace").split("=", 1)
            info.setdefault(k, []).append(v)
    return info


def cmd_modules(a):
    moddir = os.path.join(a.kroot, "usr/lib/modules", a.kver)
    if not os.path.isdir(moddir):
        moddir = os.path.join(a.kroot, "lib/modules", a.kver)
    if not os.path.isdir(moddir):
        raise SystemExit(f"no module directory for {a.kver} under {a.kroot}")

    index = {}  # normalized name -> path relative to moddir (compressed)
    for dirpath, _dirs, files in os.walk(moddir):
        for f in files:
            for ext in (".ko", ".ko.xz", ".ko.gz", ".ko.zst"):
                if f.endswith(ext):
                    rel = os.path.relpath(os.path.join(dirpath, f), moddir)
                    index[norm(f[: -len(ext)])] = rel
    builtin = set()
    bpath = os.path.join(moddir, "modules.builtin")
    if os.path.exists(bpath):
        with open(bpath) as f:
            for line in f:
                builtin.add(norm(os.path.basename(line.strip()).split(".ko")[0]))

    order, state, cache = [], {}, {}

    def load(name):
        if name not in cache:
            data = read_module(os.path.join(moddir, index[name]))
            cache[name] = (data, modinfo(data, name))
        return cache[name]

    def visit(name, required, chain):
        name = norm(name)
        if name in builtin:
            print(f"  {name}: built into the kernel", file=sys.stderr)
            return
        if name not in index:
            if required:
                raise SystemExit(f"module {name} not found in {moddir} (needed by {' -> '.join(chain) or 'request'})")
            return
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            return  # dependency cycle: ignore back edge
        state[name] = "active"
        _data, info = load(name)
        deps = [d for v in info.get("depends", []) for d in v.split(",") if d]
        pre, post = [], []
        for sd in info.get("softdep", []):
            mode = None
            for tok in sd.split():
                if tok in ("pre:", "post:"):
                    mode = tok
                elif mode == "pre:":
                    pre.append(tok)
                elif mode == "post:":
                    post.append(tok)
        for d in pre:
            visit(d, False, chain + [name])
        for d in deps:
            visit(d, True, chain + [name])
        state[name] = "done"
        order.append(name)
        for d in post:
            visit(d, False, chain + [name])

    for m in a.modules:
        visit(m, True, [])
    autoload = list(order)
    for m in a.also:
        if norm(m) not in index and norm(m) not in builtin:
            print(f"  {norm(m)}: not in this kernel", file=sys.stderr)
        visit(m, False, [])

    outdir = os.path.join(a.stage, "usr/lib/modules", a.kver)
    os.makedirs(outdir, exist_ok=True)
    plain = {}
    for name in order:
        rel = index[name]
        for ext in (".xz", ".gz", ".zst"):
            if rel.endswith(ext):
                rel = rel[: -len(ext)]
        plain[name] = rel
        dst = os.path.join(outdir, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
            f.write(cache[name][0])

    def alldeps(name, seen):
        for v in cache[name][1].get("depends", []):
            for d in v.split(","):
                d = norm(d)
                if d and d in plain and d not in seen:
                    seen.append(d)
                    alldeps(d, seen)
        return seen

    with open(os.path.join(outdir, "modules.dep"), "w") as f:
        for name in order:
            deps = alldeps(name, [])
            f.write(f"{plain[name]}: {' '.join(plain[d] for d in deps)}".rstrip() + "\n")
    for extra in ("modules.builtin", "modules.order", "modules.builtin.modinfo"):
        src = os.path.join(moddir, extra)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(outdir, extra))
    with open(os.path.join(a.stage, "usr/lib/modules/load-order"), "w") as f:
        for name in autoload:
            f.write(f"/lib/modules/{a.kver}/{plain[name]}\n")
    for name in order:
        print(f"  {name}: {plain[name]}", file=sys.stderr)


# ---------------------------------------------------------------------- elf

LIBDIRS = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib64", "lib64", "usr/lib", "lib"]


def copy_real(src, dst):
    """Copy src (following symlinks) to dst, replacing whatever dst is (even a symlink)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.lexists(dst):
        os.unlink(dst)
    shutil.copy2(os.path.realpath(src), dst)


def resolve_in_root(root, path):
    """Find absolute guest path `path` inside root, allowing for merged-/usr layouts."""
    p = path.lstrip("/")
    cands = [p]
    for top in ("lib", "lib64", "bin", "sbin"):
        if p.startswith(top + "/"):
            cands.append("usr/" + p)
    for c in cands:
        full = os.path.join(root, c)
        if os.path.exists(full):
            return c
    return None


def cmd_elf(a):
    done = set()
    todo = []
    for p in a.paths:
        rel = resolve_in_root(a.root, p)
        if rel is None:
            raise SystemExit(f"{p}: not found under {a.root}")
        todo.append((rel, p))
    while todo:
        rel, why = todo.pop()
        if rel in done:
            continue
        done.add(rel)
        src = os.path.join(a.root, rel)
        copy_real(src, os.path.join(a.stage, rel))
        with open(os.path.realpath(src), "rb") as f:
            elf = Elf(f.read(), rel)
        interp = elf.interp()
        if interp:
            irel = resolve_in_root(a.root, interp)
            if irel is None:
                raise SystemExit(f"{rel}: interpreter {interp} not found under {a.root}")
            todo.append((irel, rel))
        for lib in elf.needed():
            for d in LIBDIRS:
                if os.path.exists(os.path.join(a.root, d, lib)):
                    todo.append((f"{d}/{lib}", rel))
                    break
            else:
                raise SystemExit(f"{rel}: needed library {lib} not found under {a.root}")
    for rel in sorted(done):
        print(f"  {rel}", file=sys.stderr)


# ------------------------------------------------------------------- config


def cmd_config(a):
    cfg = os.path.join(a.kroot, "boot", f"config-{a.kver}")
    if not os.path.exists(cfg):
        cfg = os.path.join(a.kroot, "usr/lib/modules", a.kver, "config")
    vals = {}
    with open(cfg) as f:
        for line in f:
            line = line.strip()
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                vals[k] = v
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                vals[line[2:-11]] = "is-not-set"
    for s in a.symbols:
        s = s if s.startswith("CONFIG_") else "CONFIG_" + s
        print(f"{s}={vals.get(s, 'absent')}")


def main():
    ap = argparse.ArgumentParser(description="guest initramfs helpers")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("modules")
    m.add_argument("--kroot", required=True)
    m.add_argument("--kver", required=True)
    m.add_argument("--stage", required=True)
    m.add_argument("--also", action="append", default=[])
    m.add_argument("modules", nargs="*")
    e = sub.add_parser("elf")
    e.add_argument("--root", required=True)
    e.add_argument("--stage", required=True)
    e.add_argument("paths", nargs="+")
    c = sub.add_parser("config")
    c.add_argument("--kroot", required=True)
    c.add_argument("--kver", required=True)
    c.add_argument("symbols", nargs="+")
    a = ap.parse_args()
    {"modules": cmd_modules, "elf": cmd_elf, "config": cmd_config}[a.cmd](a)


if __name__ == "__main__":
    main()
