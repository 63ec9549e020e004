#!/usr/bin/env python3
# Writes the fuzz targets' seed inputs (fuzz/seeds/<target>/): vfio_stream's from a real QEMU
# 11.1.3 session (research/qemu-11.1.3-wire-log.txt), the others hand-made, Linux-like.
"""Seed corpora for the fuzz targets.

Each target reads its input as a series of choices (fuzz/src/lib.rs `Input`, on top of
arbitrary 1.x `Unstructured`): integers little endian, `below(n)` as the fewest big-endian
bytes that hold n - 1, taken modulo n. `Enc` writes the same encoding, so a seed spells out
the operations a target runs. Usage: fuzz/make_seeds.py [path/to/qemu-11.1.3-wire-log.txt]
"""

import json
import os
import re
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
PAGE = 4096


class Enc:
    """The choices of one input, encoded as `Input` decodes them."""

    def __init__(self):
        self.out = bytearray()

    def u8(self, v):
        self.out += struct.pack("<B", v & 0xFF)
        return self

    def u16(self, v):
        self.out += struct.pack("<H", v & 0xFFFF)
        return self

    def u32(self, v):
        self.out += struct.pack("<I", v & 0xFFFFFFFF)
        return self

    def u64(self, v):
        self.out += struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)
        return self

    def bool(self, v):
        return self.u8(1 if v else 0)

    def below(self, n, v):
        assert 0 <= v < n
        delta, size = n - 1, 0
        while size < 8 and delta >> (8 * size):
            size += 1
        self.out += v.to_bytes(size, "big") if size else b""
        return self

    def word_raw(self, v):
        """`Input::word` as a raw u64."""
        return self.u8(0).u64(v)

    def word_ptr(self, pages, page, low):
        """`Input::word` as a pointer into page `page` with low bits `low`."""
        return self.u8(1).below(pages, page).u16(low)

    def addr_in(self, pages, a):
        return self.bool(True).below(pages * PAGE, a)

    def access(self, read=True, write=False):
        return self.u8((1 if read else 0) | (2 if write else 0))

    def pasid(self, p=None):
        return self.u8(0) if p is None else self.u8(1).u8(p)


def write(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(bytes(data))


# --- vfio_stream: real traffic -----------------------------------------------------------------

COMMANDS = {"VERSION": 1, "DMA_MAP": 2, "DMA_UNMAP": 3, "GET_INFO": 4, "GET_REGION_INFO": 5,
            "GET_IRQ_INFO": 7, "SET_IRQS": 8, "REGION_READ": 9, "REGION_WRITE": 10, "RESET": 13}
FD_NONE, FD_LARGE_MEMFD, FD_EVENTFD = 0, 2, 4


def frame(msg_id, command, body, flags=0):
    return struct.pack("<HHIII", msg_id, command, 16 + len(body), flags, 0) + body


def qemu_session(log):
    """[(fd choice, message)] of the client's requests in the log, in order."""
    out = []
    text = open(log).read()
    caps = re.search(r"caps=(\{.*\})", text).group(1)
    for m in re.finditer(r"^REQ id=(\S+) cmd=(\S+) size=(\d+) flags=(\S+) fds=\[(.*?)\] body=(\S*)",
                         text, re.M):
        msg_id, cmd, size, flags, fds, body = m.groups()
        body = bytes.fromhex(body)
        if cmd == "VERSION":  # the log cuts long bodies: rebuild it from the decoded caps
            body = struct.pack("<HH", 0, 0) + json.dumps(json.loads(caps)).encode() + b"\0"
        else:
            body = body.ljust(int(size) - 16, b"\0")
        choice = FD_LARGE_MEMFD if fds else FD_NONE
        out.append((choice, frame(int(msg_id, 16), COMMANDS[cmd], body, int(flags, 16))))
    return out


def stream(messages):
    return b"".join(bytes([choice]) + msg for choice, msg in messages)


def region_write(msg_id, region, offset, data, posted=False):
    body = struct.pack("<QII", offset, region, len(data)) + data
    return (FD_NONE, frame(msg_id, COMMANDS["REGION_WRITE"], body, 0x10 if posted else 0))


def vfio_stream_seeds(log):
    session = qemu_session(log)
    write("vfio_stream", "qemu-11.1.3-session", stream(session))
    write("vfio_stream", "qemu-11.1.3-realize", stream(session[:20]))
    version = session[0]
    # Hand-made: a 1 MiB memfd mapped at 0, MSI-X vectors as eventfds, bus mastering, a copy
    # job of the plain engine with its interrupt, then an IRQ_RAISE (accel README, BAR0).
    dma_map = (1, frame(1, COMMANDS["DMA_MAP"], struct.pack("<IIQQQ", 32, 3, 0, 0, 1 << 20)))
    irqs = (FD_EVENTFD | (3 << 3),
            frame(2, COMMANDS["SET_IRQS"], struct.pack("<IIIII", 20, 0x24, 2, 0, 4)))
    job = [
        region_write(3, 7, 0x04, struct.pack("<H", 6)),
        region_write(4, 0, 0x10, struct.pack("<Q", 0x1000)),
        region_write(5, 0, 0x18, struct.pack("<Q", 0x2000)),
        region_write(6, 0, 0x20, struct.pack("<I", 0x100)),
        region_write(7, 0, 0x24, struct.pack("<I", 3), posted=True),
        region_write(8, 0, 0x30, struct.pack("<I", 0)),
    ]
    write("vfio_stream", "copy-job-with-irq", stream([version, dma_map, irqs] + job))
    # The same with a saturated, blocking eventfd as the vector (the hang the issue found).
    saturated = (5, irqs[1])
    write("vfio_stream", "saturated-eventfd", stream([version, dma_map, saturated] + job))


# --- remap_stream: the remap unit's function over the same stream --------------------------------

FD_MIXED = 0x20  # fuzz/src/stream.rs: bit 5 mixes fd kinds


def remap_stream_seeds(log):
    session = qemu_session(log)
    version = session[0]
    write("remap_stream", "qemu-11.1.3-realize", stream(session[:20]))
    # Linux bringing the unit up (intel-iommu: dmar_enable_qi, iommu_set_root_entry, the
    # fault and page request events), over a 1 MiB sealed memfd mapped at 0.
    dma_map = (1, frame(1, COMMANDS["DMA_MAP"], struct.pack("<IIQQQ", 32, 3, 0, 0, 1 << 20)))
    bar = lambda i, off, fmt, v, posted=True: region_write(i, 0, off, struct.pack(fmt, v), posted)
    read = lambda i, off, n: (FD_NONE, frame(i, COMMANDS["REGION_READ"],
                                             struct.pack("<QII", off, 0, n)))
    boot = [
        region_write(2, 7, 0x04, struct.pack("<H", 6)),              # memory + bus master
        region_write(3, 7, 0x10, struct.pack("<I", 0xfeb00000)),     # BAR0 placed
        read(4, 0x00, 4), read(5, 0x08, 8), read(6, 0x10, 8),        # VER, CAP, ECAP
        bar(7, 0x3c, "<I", 0x21), bar(8, 0x40, "<I", 0xfee00000),    # FEDATA, FEADDR
        bar(9, 0x38, "<I", 0),                                       # FECTL unmasked
        bar(10, 0x88, "<I", 0), bar(11, 0x90, "<Q", 0x20000 | (1 << 11)),  # IQT, IQA wide
        bar(12, 0x18, "<I", 1 << 26),                                # GCMD.QIE
        bar(13, 0x20, "<Q", 0x10000 | (1 << 10)),                    # RTADDR, scalable
        bar(14, 0x18, "<I", (1 << 26) | (1 << 30)),                  # GCMD.SRTP
        bar(15, 0xd0, "<Q", 0x30000), bar(16, 0xc0, "<Q", 0),        # PQA, PQH
        bar(17, 0xe4, "<I", 0x22), bar(18, 0xe8, "<I", 0xfee00000), bar(19, 0xe0, "<I", 0),
        bar(20, 0x88, "<I", 0x20),                                   # one descriptor (zero)
        read(21, 0x34, 4), bar(22, 0x34, "<I", 0x10),                # FSTS, clear IQE
        bar(23, 0x18, "<I", (1 << 26) | (1 << 31)),                  # GCMD.TE
        read(24, 0x1c, 4),
    ]
    write("remap_stream", "linux-bring-up", stream([version, dma_map] + boot))
    # Mixed fds: SET_IRQS with four fds of four kinds, a DMA_MAP with two.
    irqs = (FD_MIXED | FD_EVENTFD | (3 << 3),
            frame(30, COMMANDS["SET_IRQS"], struct.pack("<IIIII", 20, 0x24, 2, 0, 4)))
    mixed_map = (FD_MIXED | 1 | (1 << 3), dma_map[1])
    write("remap_stream", "mixed-fds", stream([version, irqs, mixed_map, dma_map] + boot[:12]))
    write("vfio_stream", "mixed-fds", stream([version, irqs, mixed_map, dma_map]))
    # The client gone in the middle of a message.
    cut = stream([version, dma_map] + boot)
    write("remap_stream", "cut-message", cut[:-5])


# --- VT-d remapping unit and vIOMMU: Linux-like queued invalidation ------------------------------

def qi_seed(pages, smts, with_records):
    """Config, the programmed start, then descriptors Linux sends at boot, a translation."""
    e = Enc()
    e.bool(smts)
    if with_records:  # vtd_unit: fault_records, prs, caching_mode, pasid_bits
        e.below(256, 7).bool(True).bool(True).below(21, 20)
    else:  # viommu: fault_records, pasid_bits, fl_5level
        e.below(16, 3).below(21, 20).bool(False)
    if not smts:
        e.bool(False)  # 128-bit descriptors
    e.u8(1)  # programmed start
    wide = smts
    words = 4 if wide else 2
    # context-cache global (type 1, G = 01b at bits 5:4), IOTLB global (type 2, G = 01b),
    # PASID-cache (type 7), then an invalidation wait (type 5, SW, status 1 at 0x5000).
    descs = [[0x1 | (1 << 4)], [0x2 | (1 << 4)]]
    if smts:
        descs.append([0x7])
    descs.append([0x5 | (1 << 5) | (1 << 32), 0x5000])
    for chunk_start in range(0, len(descs), 4):
        chunk = descs[chunk_start:chunk_start + 4]
        e.u8(4).below(4, len(chunk) - 1)
        for d in chunk:
            kind = d[0]
            e.u64(kind & ~0xE0F).below(16, kind & 0xF)
            rest = d[1:] + [0] * (words - len(d))
            for w in rest[: words - 1]:
                e.word_raw(w)
    # A translation: vtd_unit names the source, viommu picks one of its two devices.
    e.u8(6)
    if with_records:
        e.u16(0x18)
    else:
        e.below(2, 0)
    e.pasid(None).addr_in(pages, 0x3000).access()
    return e.out


def vtd_unit_seeds():
    write("vtd_unit", "scalable-boot", qi_seed(16, True, True))
    write("vtd_unit", "legacy-boot", qi_seed(16, False, True))


def viommu_seeds():
    write("viommu", "scalable-boot", qi_seed(16, True, False))
    write("viommu", "legacy-boot", qi_seed(16, False, False))


# --- VT-d walks: a legacy context entry over a second-stage table --------------------------------

def vtd_walk_seeds():
    e = Enc()
    # mgaw 48, sagaw 0b0110, fl_5level, sl_2m, sl_1g, fl_1g, pasid_bits, slads, ers, srs,
    # nest, pt.
    e.below(3, 1).u8(0b0110).bool(True).bool(True).bool(True).bool(True).below(21, 20)
    e.bool(False).bool(False).bool(False).bool(True).bool(True)

    def ram(slot_addr, word_op):
        e.u8(0).below(16 * PAGE // 8, slot_addr // 8)
        word_op()

    # Root table at page 1: bus 0 -> context table at page 2 (present).
    ram(0x1000, lambda: e.word_ptr(16, 2, 1))
    # Context entry of 00:03.0 (devfn 0x18): present, SLPTPTR page 3, AW 010b (4-level), DID 1.
    ram(0x2000 + 0x18 * 16, lambda: e.word_ptr(16, 3, 1))
    ram(0x2000 + 0x18 * 16 + 8, lambda: e.word_raw(2 | (1 << 8)))
    # Second stage: page 3 -> 4 -> 5 -> 6 -> 4 KiB page 7, R/W.
    for level, page in enumerate([3, 4, 5, 6]):
        ram(page * PAGE, lambda p=page: e.word_ptr(16, p + 1, 3))
    # Translate (legacy root at page 1) IOVA 0x123 for 00:03.0.
    e.u8(2).bool(False).word_ptr(16, 1, 0).u16(0x18).pasid(None).addr_in(16, 0x123).access()
    # The walks on their own: a first-stage 4-level table at page 3.
    e.u8(5).u8(1).word_ptr(16, 3, 0).bool(False).addr_in(16, 0x456).access()
    write("vtd_walk", "legacy-second-stage", e.out)


# --- page requests: enable, requests, answers in and out of order --------------------------------

def page_requests_seeds():
    e = Enc()
    e.below(1024, 511)  # capacity 512
    e.u8(0).bool(True).bool(False).u16(8)  # enable, allocation 8
    for i in range(4):
        e.u8(1).access(True, i & 1).pasid(i if i else None).u64(0x1000 * (i + 1))
    e.u8(4).below(4, 2).u8(0)  # the OS answers the third, Success
    e.u8(4).below(4, 2).u8(0)  # and again: a duplicate
    e.u8(6).bool(True).pasid(None).u16(300).u8(0).bool(True)  # a group never requested
    e.u8(4).below(4, 0).u8(3)  # Response Failure
    e.u8(0).bool(False).bool(False).u16(8)  # disable
    e.u8(0).bool(True).bool(False).u16(8)  # re-enable
    e.u8(8).pasid(1)  # drain PASID 1
    write("page_requests", "requests-and-answers", e.out)


# --- accel: a MEMMOVE, a FILL and a BATCH on queue 0 ----------------------------------------------

def accel_desc(e, opcode, src, dst, length, pattern=0):
    # shaped: control = opcode | flags (CRAV|RCI), completion, src, dst, len, pattern.
    e.bool(False).below(6, opcode).u8(0x3)
    e.below(2 * PAGE + 1 - 1, length)
    e.addr_in(16, 0x8000).addr_in(16, src).addr_in(16, dst).u64(pattern)


def accel_queue_seeds():
    e = Enc()
    e.u8(1)  # bus mastering on
    e.u8(1).u8(0).u8(0)  # both queues enabled, no block-on-fault
    e.u8(0).below(2, 0).below(4, 1)
    accel_desc(e, 1, 0x4000, 0x5000, 256)
    accel_desc(e, 2, 0, 0x6000, 512, 0x0102030405060708)
    e.u8(1)  # doorbell at the tail
    # A BATCH list of two at 0x9000, then the BATCH descriptor on queue 1.
    e.u8(3).below(16 * PAGE // 64, 0x9000 // 64).below(8, 1)
    accel_desc(e, 1, 0x4000, 0xA000, 64)
    accel_desc(e, 3, 0x4000, 0xA000, 64)
    e.u8(0).below(2, 1).below(4, 0)
    accel_desc(e, 4, 0x9000, 0, 2)
    e.u8(1)
    e.u8(6)  # wait until idle
    write("accel_queue", "memmove-fill-batch", e.out)


# --- accel_svm: the accelerator behind the VT-d model (fuzz/src/svm_guest.rs layout) -----------

SVM_PASIDS = [1, 2]
SVM_WINDOW_VA = 0x7F00_0000_0000
SVM_WINDOW_PAGES = 16
SVM_MAPPED = (64 + 2) * PAGE
SVM_OPS = {"submit": 0, "list": 4, "answer": 5, "respond": 7, "settle": 8, "timer": 10,
           "invalidate": 11, "pte": 12, "damage": 13, "bind": 14, "domain": 15, "pasid_ctl": 16,
           "configure": 17, "plain": 18, "disturb": 19}
SUCCESS, INVALID, FAILURE = 0, 6, 7


class Svm(Enc):
    """accel_svm's choices (fuzz/fuzz_targets/accel_svm.rs): 0 is the common path."""

    def setup(self, five=True, present=(0xFFFF, 0xFFFF), queues=((True, 1), (False, 2))):
        self.u8(0 if five else 3).u16(~present[0]).u16(~present[1])
        self.u8(0).u8(0)  # Linux-like setup, 512 credits
        for bof, vector in queues:
            self.u8(0 if bof else 3).below(4, vector)
        return self

    def op(self, name):
        return self.u8(SVM_OPS[name])

    def pasid(self, p=1):
        if p in SVM_PASIDS:
            return self.u8(SVM_PASIDS.index(p))
        return self.u8(6) if p == 3 else self.u8(7).u32(p)

    def addr(self, tagged, a):
        base, span = (SVM_WINDOW_VA, (SVM_WINDOW_PAGES + 1) * PAGE) if tagged else (0, SVM_MAPPED + PAGE)
        if base <= a < base + span:
            return self.u8(0).below(span, a - base)
        return self.u8(7).u64(a)

    def va(self, page, offset=0):
        return SVM_WINDOW_VA + page * PAGE + offset

    def desc(self, opcode, src=0, dst=0, length=64, pattern=0, tagged=True, pasid=1,
             record=None, rci=False, count=1, pick=0):
        self.u8(0).u8(0 if tagged else 3)
        for mode, limit in enumerate([256, 2 * PAGE, 5 * PAGE]):
            if length <= limit:
                self.u8(mode).below(limit, length - 1)
                break
        else:
            self.u8(3).u32(length)
        self.below(6, opcode)
        if opcode in (1, 3):
            self.addr(tagged, src).addr(tagged, dst)
        elif opcode == 2:
            self.addr(tagged, dst).u64(pattern)
        elif opcode == 4:
            self.below(10, count).u8(pick)  # pick: index of a list written before
        elif opcode == 5:
            self.u8(0xFF)
        if record is None:
            self.u8(7)
        else:
            self.u8(0).addr(tagged, record).u8(0)
        self.bool(rci)
        if tagged:
            self.pasid(pasid)
        return self.u8(0)  # not privileged

    def submit(self, wq, descs):
        self.op("submit").below(2, wq).below(4, len(descs) - 1)
        for d in descs:
            self.desc(**d)
        return self.u8(0)  # doorbell at the tail

    def write_list(self, process, page, slot, descs):
        self.op("list").u8(0).below(2, process).below(16, page).below(64, slot)
        self.below(8, len(descs) - 1)
        for d in descs:
            self.desc(**d)
        return self

    def answer(self, index, code=SUCCESS, fault_in=True):
        return self.op("answer").u8(index).u8(0 if fault_in else 3).bool(False).u8(code)

    def pte(self, process, page, kind, invalidate=True):
        # kind: 0 unmap, 1 read-only, 3 read-write
        return self.op("pte").below(2, process).below(16, page).u8(kind).u8(0 if invalidate else 3)

    def caps(self, pasid=True, ats=True, pri=True):
        return self.op("configure").u8(3).bool(not pasid).bool(not ats).bool(not pri).u8(0)


def accel_svm_seeds():
    va = lambda page, offset=0: SVM_WINDOW_VA + page * PAGE + offset
    rec = lambda n: va(15, 32 * n)
    # Jobs of both processes through nested translation, a fault resolved through PRI, a BATCH
    # in a process's memory, untagged work through the identity domain, an munmap.
    e = Svm().setup(present=(0x00FF, 0xFFFF))
    e.submit(0, [dict(opcode=1, src=va(0), dst=va(1), length=512, record=rec(0), rci=True),
                 dict(opcode=2, dst=va(2, 100), length=1000, pattern=0x1122334455667788, record=rec(1)),
                 dict(opcode=3, src=va(0), dst=va(1), length=512, record=rec(2))])
    e.op("settle")
    e.submit(0, [dict(opcode=1, src=va(0), dst=va(9), length=2 * PAGE, record=rec(3))])
    e.op("settle").answer(0).op("settle").answer(1).op("settle").answer(2).op("settle")
    e.write_list(0, 3, 0, [dict(opcode=1, src=va(0), dst=va(4), length=64, record=rec(4)),
                           dict(opcode=2, dst=va(5), length=100, record=rec(5))])
    e.submit(1, [dict(opcode=4, count=2, pick=0, record=rec(6), rci=True),
                 dict(opcode=2, dst=0x30000, length=256, tagged=False, record=0x100),
                 dict(opcode=1, src=va(0), dst=va(10), length=300, pasid=2, record=rec(7))])
    e.op("settle").pte(0, 1, 0)
    e.submit(1, [dict(opcode=1, src=va(0), dst=va(1), length=64, record=rec(8))])
    e.op("invalidate").below(3, 0).pasid(1).addr(True, va(0)).u8(0).below(16, 0).u8(1)
    e.op("settle")
    write("accel_svm", "linux-sva-jobs", e.out)

    # Page requests nobody answers (the timer), Invalid Request, Response Failure and its
    # duplicate, a response for a group never requested, PRI re-enabled, a drain and unbind,
    # a second-stage DMA domain and the plain engine.
    e = Svm().setup(present=(0x8000, 0xFFFF))
    e.submit(0, [dict(opcode=1, src=va(0), dst=va(1), length=64, record=rec(0))])
    e.op("settle").op("timer").op("settle")
    e.submit(0, [dict(opcode=2, dst=va(2), length=64, record=rec(1))])
    e.op("settle").answer(1, INVALID).op("settle")
    e.submit(0, [dict(opcode=2, dst=va(3), length=64, record=rec(2)),
                 dict(opcode=2, dst=va(3), length=64, record=rec(3))])
    e.op("settle").answer(2, FAILURE).answer(2, FAILURE)
    e.op("respond").pasid(1).u16(300).u8(SUCCESS)
    e.caps(pri=False).caps()
    e.submit(0, [dict(opcode=2, dst=va(4), length=PAGE + 10, record=rec(4))])
    e.op("settle").answer(3).op("settle").answer(4).op("settle")
    e.op("pasid_ctl").pasid(1).bool(False)
    e.op("bind").pasid(1).u8(0).below(2, 0).bool(False).u8(0).u8(3)  # unbind
    e.op("domain").u8(3).below(4, 0)  # second stage, 3 levels
    e.op("plain").addr(False, 0x30000).addr(False, 0x31000).below(3 * PAGE, PAGE - 1)
    e.submit(1, [dict(opcode=0, tagged=False, record=0x180, rci=True)])
    e.op("settle")
    write("accel_svm", "faults-timeouts-drain", e.out)

    # The guest's PASID table bound instead of one table per PASID, a 5-level rebind, the DMA
    # domain as a first-stage table, and a damaged page table.
    e = Svm().setup(present=(0xFFFF, 0xFFFF))
    e.op("bind").pasid(2).u8(0).below(2, 1).bool(True).u8(0).u8(2)  # rebind 2, 5-level
    e.op("domain").u8(0)
    e.submit(0, [dict(opcode=1, src=va(0), dst=va(1), length=128, pasid=2, record=rec(1)),
                 dict(opcode=2, dst=0x31000, length=64, tagged=False, record=0x100)])
    e.op("settle")
    for p in (1, 2):
        e.op("bind").pasid(p).u8(0).below(2, 0).bool(False).u8(0).u8(3)  # unbind
    e.op("bind").pasid(1).u8(0).below(2, 0).bool(False).u8(3).bool(False).bool(False).u8(0)
    e.submit(0, [dict(opcode=1, src=va(0), dst=va(1), length=3 * PAGE, record=rec(0))])
    e.op("settle")
    e.op("damage").below(19 * 512, 1 * 512 + 254).word_ptr(64, 9, 0x7)  # PML4 of process 1
    e.op("invalidate").below(3, 1).pasid(1).addr(True, va(0)).u8(0).below(16, 0).u8(1)
    e.submit(0, [dict(opcode=1, src=va(0), dst=va(1), length=64, record=rec(2))])
    e.op("settle")
    write("accel_svm", "pasid-table-nested", e.out)


if __name__ == "__main__":
    log = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/research/qemu-11.1.3-wire-log.txt"
    vfio_stream_seeds(log)
    remap_stream_seeds(log)
    vtd_unit_seeds()
    viommu_seeds()
    vtd_walk_seeds()
    page_requests_seeds()
    accel_queue_seeds()
    accel_svm_seeds()
