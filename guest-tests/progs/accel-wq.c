// SPDX-License-Identifier: MIT
/*
 * accel-wq: run the vsvm accelerator's work queue 0 through the vsvm_accel
 * guest kernel module (/dev/vsvm-accel, VSVM_ACCEL_IOC_WQ_RUN) in plain mode
 * (no IOMMU: descriptors carry guest-physical addresses) and check the
 * results: every byte of the data arena against a model of what the
 * operations must do (so a failed operation must leave memory untouched),
 * every completion record, SWERR, and the completion and error interrupts.
 *
 *   accel-wq [--seed S] [--quick] [--iommu] [--pasid-enabled]
 *
 * --quick runs only the first cases (the device and one MEMMOVE).
 * --iommu: the device sits behind an IOMMU (ours), so it reports SVM; with
 * --pasid-enabled the kernel also enabled its PASID capability, so a
 * descriptor tagged with a PASID that PASID_CTL never enabled is
 * PASID_DISABLED rather than BAD_PASID (devices/accel/README.md).
 * Prints one line per case, "wq <case>: ... OK" or "wq <case>: FAIL: <why>",
 * then "accel-wq: N cases, M failed: PASS|FAIL"; exits 1 if a case failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../module/vsvm_accel_uapi.h"
#include "pattern.h"

#define KiB		1024u
#define MiB		(1024u * KiB)
#define ARENA		VSVM_ACCEL_WQ_ARENA
#define MAX_XFER	VSVM_ACCEL_MAX_LEN
#define BAD_OPCODE	0x7f
#define PATTERN		0x0123456789abcdefull

static int fd;
/* What the device's surroundings make it report (see --iommu). */
static int behind_iommu, pasid_enabled;
static uint64_t seed = 1;
static const char *case_name;
static int cases, failed;

/* The arena image sent to the device, and what it must look like afterwards. */
static uint8_t img[ARENA], want[ARENA];
static struct vsvm_accel_wq_op ops[VSVM_ACCEL_WQ_MAX_OPS];
static unsigned int nops;
static struct vsvm_accel_wq_run run;

/* A case stops at its first failed check. */
#define CHECK(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			case_fail(__VA_ARGS__);				\
			return;						\
		}							\
	} while (0)

static void case_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void case_fail(const char *fmt, ...)
{
	va_list ap;

	printf("wq %s: FAIL: ", case_name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	failed++;
}

static void case_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void case_ok(const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	printf("wq %s: %s%sOK\n", case_name, what, *what ? " " : "");
}

/* A new case: random arena contents (the first @len bytes matter), no ops. */
static void begin(const char *name, uint32_t len)
{
	case_name = name;
	cases++;
	pattern_bytes(img, len, seed + (uint64_t)cases);
	memcpy(want, img, len);
	memset(ops, 0, sizeof(ops));
	nops = 0;
}

static struct vsvm_accel_wq_op *op(uint8_t opcode, uint32_t len, uint32_t src, uint32_t dst)
{
	struct vsvm_accel_wq_op *o = &ops[nops++];

	o->opcode = opcode;
	o->len = len;
	o->src_off = src;
	o->dst_off = dst;
	return o;
}

static struct vsvm_accel_wq_op *batch(uint32_t members)
{
	struct vsvm_accel_wq_op *o = op(VSVM_WQ_OPC_BATCH, members, 0, 0);

	o->batch_ops = members;
	return o;
}

/* Ring descriptors the ops take (a BATCH's members are not on the ring). */
static uint32_t ring_descs(void)
{
	uint32_t n = 0;

	for (unsigned int i = 0; i < nops; i += 1 + (ops[i].opcode == VSVM_WQ_OPC_BATCH ?
						     ops[i].batch_ops : 0))
		n++;
	return n;
}

/* Submits the ops with arena bytes [0, @data_len); false (case failed) on an ioctl error. */
static int submit(uint32_t flags, uint32_t data_len)
{
	memset(&run, 0, sizeof(run));
	run.user_ops = (uintptr_t)ops;
	run.user_data = (uintptr_t)img;
	run.nops = nops;
	run.data_len = data_len;
	run.flags = flags;
	if (ioctl(fd, VSVM_ACCEL_IOC_WQ_RUN, &run) < 0) {
		case_fail("VSVM_ACCEL_IOC_WQ_RUN: %s", strerror(errno));
		return 0;
	}
	return 1;
}

/* First arena byte (below @len) where the device's result and the model differ, or -1. */
static long mismatch(uint32_t len)
{
	for (uint32_t i = 0; i < len; i++)
		if (img[i] != want[i])
			return i;
	return -1;
}

static void model_fill(uint32_t dst, uint32_t len, uint64_t pattern)
{
	for (uint32_t i = 0; i < len; i++)
		want[dst + i] = (uint8_t)(pattern >> (8 * (i % 8)));
}

static const char *status_name(unsigned int st)
{
	static const char *const names[] = {
		[VSVM_WQ_ST_NONE] = "NONE",
		[VSVM_WQ_ST_SUCCESS] = "SUCCESS",
		[VSVM_WQ_ST_PAGE_FAULT] = "PAGE_FAULT",
		[VSVM_WQ_ST_ABORTED] = "ABORTED",
		[VSVM_WQ_ST_BATCH_FAIL] = "BATCH_FAIL",
		[VSVM_WQ_ST_BAD_OPCODE] = "BAD_OPCODE",
		[VSVM_WQ_ST_BAD_FLAGS] = "BAD_FLAGS",
		[VSVM_WQ_ST_BAD_SIZE] = "BAD_SIZE",
		[VSVM_WQ_ST_BAD_BATCH] = "BAD_BATCH",
		[VSVM_WQ_ST_NESTED_BATCH] = "NESTED_BATCH",
		[VSVM_WQ_ST_BAD_PASID] = "BAD_PASID",
		[VSVM_WQ_ST_PASID_DISABLED] = "PASID_DISABLED",
		[VSVM_WQ_ST_BAD_COMPLETION_ADDR] = "BAD_COMPLETION_ADDR",
		[VSVM_WQ_ST_COMPLETION_FAULT] = "COMPLETION_FAULT",
		[VSVM_WQ_ST_RING_READ_FAULT] = "RING_READ_FAULT",
		[VSVM_WQ_ST_BAD_TAIL] = "BAD_TAIL",
		[VSVM_WQ_ST_BAD_PRIVILEGE] = "BAD_PRIVILEGE",
	};

	return st < sizeof(names) / sizeof(names[0]) && names[st] ? names[st] : "?";
}

/*
 * Checks every run shares: all ring descriptors and the fence completed, the
 * completion interrupt came, the data is as modelled; with @error the error
 * interrupt came too, without it no error was reported at all.
 */
static int run_ok(uint32_t data_len, int error)
{
	long at;

	if (run.descs_done != ring_descs() + 1) {
		case_fail("WQ_DONE grew by %u, want %u (ops + fence)", run.descs_done,
			  ring_descs() + 1);
		return 0;
	}
	if (run.completion_irqs < 1) {
		case_fail("no completion interrupt");
		return 0;
	}
	if (error && run.error_irqs < 1) {
		case_fail("no error interrupt (SWERR %#" PRIx64 ")", (uint64_t)run.swerr);
		return 0;
	}
	if (!error && (run.error_irqs || run.swerr)) {
		case_fail("unexpected error: %u error interrupt(s), SWERR %#" PRIx64
			  " SWERR_ADDR %#" PRIx64, run.error_irqs, (uint64_t)run.swerr,
			  (uint64_t)run.swerr_addr);
		return 0;
	}
	at = mismatch(data_len);
	if (at >= 0) {
		case_fail("arena byte %#lx is %#04x, want %#04x", at, img[at], want[at]);
		return 0;
	}
	return 1;
}

/* Record of @o: @status, with @bytes completed (unless ~0u). */
static int record_is(const struct vsvm_accel_wq_op *o, unsigned int status, uint32_t bytes)
{
	if (o->status != status) {
		case_fail("op %ld: record status %#04x (%s), want %#04x (%s)", (long)(o - ops),
			  o->status, status_name(o->status), status, status_name(status));
		return 0;
	}
	if (bytes != ~0u && o->bytes_completed != bytes) {
		case_fail("op %ld: bytes completed %u, want %u", (long)(o - ops),
			  o->bytes_completed, bytes);
		return 0;
	}
	return 1;
}

/* SWERR holds @code for ring slot @slot, with @addr; no record was written. */
static int swerr_is(const struct vsvm_accel_wq_op *o, unsigned int code, uint64_t addr)
{
	uint64_t s = run.swerr;

	if (!(s & VSVM_WQ_SWERR_VALID) || VSVM_WQ_SWERR_CODE(s) != code) {
		case_fail("SWERR %#" PRIx64 ", want VALID with code %#04x (%s)", s, code,
			  status_name(code));
		return 0;
	}
	if (!(s & VSVM_WQ_SWERR_WQ_VALID) || VSVM_WQ_SWERR_WQ(s) != 0 ||
	    VSVM_WQ_SWERR_DESC_INDEX(s) != o->ring_slot) {
		case_fail("SWERR %#" PRIx64 " names queue %u slot %u, want queue 0 slot %u", s,
			  VSVM_WQ_SWERR_WQ(s), VSVM_WQ_SWERR_DESC_INDEX(s), o->ring_slot);
		return 0;
	}
	if (run.swerr_addr != addr) {
		case_fail("SWERR_ADDR %#" PRIx64 ", want %#" PRIx64, (uint64_t)run.swerr_addr,
			  addr);
		return 0;
	}
	if (o->status != VSVM_WQ_ST_NONE) {
		case_fail("a record was written (status %#04x)", o->status);
		return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------ cases */

static void case_device(void)
{
	struct vsvm_accel_info in;

	case_name = "device";
	cases++;
	memset(&in, 0, sizeof(in));
	CHECK(ioctl(fd, VSVM_ACCEL_IOC_INFO, &in) == 0, "VSVM_ACCEL_IOC_INFO: %s",
	      strerror(errno));
	CHECK(in.cap & VSVM_ACCEL_CAP_WQ, "CAP %#x lacks WQ", in.cap);
	CHECK(VSVM_ACCEL_CAP_WQ_COUNT(in.cap) >= 1, "CAP %#x: no work queue", in.cap);
	if (behind_iommu)
		CHECK(in.cap & VSVM_ACCEL_CAP_SVM, "CAP %#x lacks SVM behind an IOMMU", in.cap);
	else
		CHECK(!(in.cap & VSVM_ACCEL_CAP_SVM), "CAP %#x has SVM without an IOMMU", in.cap);
	case_ok("version %u.%u, cap %#x (%u work queues, %s):", in.version >> 16,
		in.version & 0xffff, in.cap, VSVM_ACCEL_CAP_WQ_COUNT(in.cap),
		behind_iommu ? "SVM behind the IOMMU" : "no SVM");
}

static void case_memmove(const char *name, uint32_t len)
{
	struct vsvm_accel_wq_op *o;
	uint32_t data = MiB + len;

	if (data < ARENA)
		data += 4 * KiB;	/* the page after the destination too */

	begin(name, data);
	o = op(VSVM_WQ_OPC_MEMMOVE, len, 0, MiB);
	memmove(want + MiB, want, len);
	if (!submit(0, data) || !run_ok(data, 0) || !record_is(o, VSVM_WQ_ST_SUCCESS, len))
		return;
	CHECK(!(o->fault_info & VSVM_WQ_FI_BACKWARD), "BACKWARD set for disjoint ranges");
	case_ok("%" PRIu64 " ns, %u completion irq(s):", (uint64_t)run.ns, run.completion_irqs);
}

static void case_memmove_overlap(void)
{
	uint32_t len = 64 * KiB, data = 96 * KiB;
	struct vsvm_accel_wq_op *o;

	begin("memmove overlapping 64 KiB", data);
	o = op(VSVM_WQ_OPC_MEMMOVE, len, 0, 4 * KiB);
	memmove(want + 4 * KiB, want, len);
	if (!submit(0, data) || !run_ok(data, 0) || !record_is(o, VSVM_WQ_ST_SUCCESS, len))
		return;
	CHECK(o->fault_info & VSVM_WQ_FI_BACKWARD, "FAULT_INFO %#x lacks BACKWARD",
	      o->fault_info);
	case_ok("copied backward:");
}

static void case_fill(void)
{
	uint32_t dst = 8 * KiB + 5, len = 10000, data = 32 * KiB;
	struct vsvm_accel_wq_op *o;

	begin("fill 10000 bytes", data);
	o = op(VSVM_WQ_OPC_FILL, len, 0, dst);
	o->pattern = PATTERN;
	model_fill(dst, len, PATTERN);
	if (!submit(0, data) || !run_ok(data, 0) || !record_is(o, VSVM_WQ_ST_SUCCESS, len))
		return;
	case_ok("pattern %#llx:", PATTERN);
}

static void case_compare(void)
{
	uint32_t len = 32 * KiB, diff = 12345, data = 4 * len;
	struct vsvm_accel_wq_op *same, *other;

	begin("compare", data);
	memcpy(img + len, img, len);		/* [0, len) == [len, 2 len) */
	memcpy(img + 3 * len, img + 2 * len, len);
	img[3 * len + diff] ^= 0x40;		/* [2 len, 3 len) differs at diff */
	memcpy(want, img, data);
	same = op(VSVM_WQ_OPC_COMPARE, len, 0, len);
	other = op(VSVM_WQ_OPC_COMPARE, len, 2 * len, 3 * len);
	if (!submit(0, data) || !run_ok(data, 0) || !record_is(same, VSVM_WQ_ST_SUCCESS, len) ||
	    !record_is(other, VSVM_WQ_ST_SUCCESS, diff))
		return;
	CHECK(same->result == 0, "equal buffers: result %" PRIu64, (uint64_t)same->result);
	CHECK(other->result == 1, "different buffers: result %" PRIu64,
	      (uint64_t)other->result);
	case_ok("equal: result 0; different: result 1 at byte %u:", diff);
}

static void case_nop(void)
{
	struct vsvm_accel_wq_op *o;

	begin("nop", 4 * KiB);
	o = op(VSVM_WQ_OPC_NOP, 0, 0, 0);
	if (!submit(0, 4 * KiB) || !run_ok(4 * KiB, 0) || !record_is(o, VSVM_WQ_ST_SUCCESS, ~0u))
		return;
	case_ok("%s", "");
}

static void case_batch(void)
{
	uint32_t data = 64 * KiB;
	struct vsvm_accel_wq_op *b, *cmp;

	begin("batch of 4", data);
	memcpy(img + 40 * KiB, img + 32 * KiB, 4 * KiB);
	memcpy(want, img, data);
	b = batch(4);
	op(VSVM_WQ_OPC_MEMMOVE, 4 * KiB, 0, 16 * KiB);
	memmove(want + 16 * KiB, want, 4 * KiB);
	op(VSVM_WQ_OPC_FILL, 4 * KiB, 0, 24 * KiB)->pattern = PATTERN;
	model_fill(24 * KiB, 4 * KiB, PATTERN);
	cmp = op(VSVM_WQ_OPC_COMPARE, 4 * KiB, 32 * KiB, 40 * KiB);
	op(VSVM_WQ_OPC_NOP, 0, 0, 0);
	if (!submit(0, data) || !run_ok(data, 0) || !record_is(b, VSVM_WQ_ST_SUCCESS, 4))
		return;
	for (unsigned int i = 1; i <= 4; i++) {
		if (!record_is(&ops[i], VSVM_WQ_ST_SUCCESS, ~0u))
			return;
		CHECK(ops[i].batch_index == i - 1 && ops[i].ring_slot == b->ring_slot,
		      "op %u: batch index %u slot %u", i, ops[i].batch_index, ops[i].ring_slot);
	}
	CHECK(cmp->result == 0, "compare in the batch: result %" PRIu64, (uint64_t)cmp->result);
	case_ok("memmove, fill, compare, nop: 4 records SUCCESS:");
}

static void case_batch_fail(void)
{
	uint32_t data = 16 * KiB;
	struct vsvm_accel_wq_op *b, *bad;

	begin("batch with a bad member", data);
	b = batch(2);
	op(VSVM_WQ_OPC_MEMMOVE, 4 * KiB, 0, 8 * KiB);
	memmove(want + 8 * KiB, want, 4 * KiB);
	bad = op(BAD_OPCODE, 4 * KiB, 0, 12 * KiB);
	if (!submit(0, data) || !run_ok(data, 1) || !record_is(b, VSVM_WQ_ST_BATCH_FAIL, 2) ||
	    !record_is(&ops[1], VSVM_WQ_ST_SUCCESS, 4 * KiB) ||
	    !record_is(bad, VSVM_WQ_ST_BAD_OPCODE, ~0u))
		return;
	CHECK(!(run.swerr & VSVM_WQ_SWERR_VALID), "SWERR %#" PRIx64 " set though records tell",
	      (uint64_t)run.swerr);
	case_ok("batch status %#04x, member status %#04x, error irq:", b->status, bad->status);
}

static void case_nested_batch(void)
{
	struct vsvm_accel_wq_op *b, *inner;

	begin("nested batch", 4 * KiB);
	b = batch(1);
	inner = op(VSVM_WQ_OPC_BATCH, 1, 0, 0);
	if (!submit(0, 4 * KiB) || !run_ok(4 * KiB, 1) || !record_is(b, VSVM_WQ_ST_BATCH_FAIL, 1) ||
	    !record_is(inner, VSVM_WQ_ST_NESTED_BATCH, ~0u))
		return;
	case_ok("inner status %#04x:", inner->status);
}

static void case_bad_batch(void)
{
	struct vsvm_accel_wq_op *b;

	begin("empty batch", 4 * KiB);
	b = batch(0);
	if (!submit(0, 4 * KiB) || !run_ok(4 * KiB, 1) || !record_is(b, VSVM_WQ_ST_BAD_BATCH, ~0u))
		return;
	case_ok("status %#04x:", b->status);
}

/* @n 4 KiB copies in one run: several ring slots, wrapping the ring over the runs. */
static void case_many(const char *name, unsigned int n, uint32_t flags)
{
	uint32_t data = MiB + n * 4 * KiB;

	begin(name, data);
	for (unsigned int i = 0; i < n; i++) {
		op(VSVM_WQ_OPC_MEMMOVE, 4 * KiB, i * 4 * KiB, MiB + i * 4 * KiB);
		/* A record but no interrupt: the fence's interrupt covers them all. */
		ops[i].flags = i % 2 ? VSVM_WQ_OP_NO_IRQ : 0;
	}
	memmove(want + MiB, want, n * 4 * KiB);
	if (!submit(flags, data) || !run_ok(data, 0))
		return;
	for (unsigned int i = 0; i < n; i++) {
		if (!record_is(&ops[i], VSVM_WQ_ST_SUCCESS, 4 * KiB))
			return;
		CHECK(ops[i].ring_slot == (ops[0].ring_slot + i) % VSVM_ACCEL_WQ_RING,
		      "op %u in slot %u after slot %u", i, ops[i].ring_slot, ops[0].ring_slot);
	}
	case_ok("slots %u..%u%s, %u completion irq(s):", ops[0].ring_slot, ops[n - 1].ring_slot,
		ops[n - 1].ring_slot < ops[0].ring_slot ? " (ring wrapped)" : "",
		run.completion_irqs);
}

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state >> 16) % n;
}

/* COMPARE as the device does it: bytes equal before the first difference, and the result. */
static void model_compare(uint32_t a, uint32_t b, uint32_t len, uint32_t *bytes, uint64_t *result)
{
	for (uint32_t i = 0; i < len; i++) {
		if (want[a + i] != want[b + i]) {
			*bytes = i;
			*result = 1;
			return;
		}
	}
	*bytes = len;
	*result = 0;
}

/*
 * @runs runs of 1..8 random MEMMOVE (overlapping or not), FILL and COMPARE
 * descriptors over one evolving 512 KiB window, every byte checked after each
 * run: shakes out lost doorbells, interrupts and ordering between runs.
 */
static void case_soak(unsigned int runs)
{
	const uint32_t window = 512 * KiB, max_len = 64 * KiB;
	uint32_t bytes[8];
	uint64_t result[8];
	uint64_t total = 0;

	begin("soak", window);
	rng_state = seed * 0x2545f4914f6cdd1dull + 7;
	for (unsigned int r = 0; r < runs; r++) {
		nops = 1 + rnd(8);
		memset(ops, 0, sizeof(ops));
		for (unsigned int i = 0; i < nops; i++) {
			uint32_t len = 1 + rnd(max_len);
			uint32_t src = rnd(window - len + 1), dst = rnd(window - len + 1);
			struct vsvm_accel_wq_op *o = &ops[i];

			o->len = len;
			o->src_off = src;
			o->dst_off = dst;
			o->flags = rnd(2) ? VSVM_WQ_OP_NO_IRQ : 0;
			switch (rnd(3)) {
			case 0:
				o->opcode = VSVM_WQ_OPC_MEMMOVE;
				memmove(want + dst, want + src, len);
				break;
			case 1:
				o->opcode = VSVM_WQ_OPC_FILL;
				o->pattern = ((uint64_t)rnd(1u << 31) << 32) | rnd(1u << 31);
				model_fill(dst, len, o->pattern);
				break;
			default:
				o->opcode = VSVM_WQ_OPC_COMPARE;
				/* Often equal: check the copy the op before made. */
				if (i && ops[i - 1].opcode == VSVM_WQ_OPC_MEMMOVE && rnd(2)) {
					o->len = ops[i - 1].len;
					o->src_off = ops[i - 1].src_off;
					o->dst_off = ops[i - 1].dst_off;
				}
				model_compare(o->src_off, o->dst_off, o->len, &bytes[i], &result[i]);
				break;
			}
			total += o->len;
		}
		if (!submit(rnd(2) ? VSVM_WQ_RUN_DOORBELL_EACH : 0, window) || !run_ok(window, 0))
			return;
		for (unsigned int i = 0; i < nops; i++) {
			if (ops[i].opcode == VSVM_WQ_OPC_COMPARE) {
				CHECK(ops[i].status == VSVM_WQ_ST_SUCCESS && ops[i].result == result[i] &&
				      ops[i].bytes_completed == bytes[i],
				      "run %u op %u: COMPARE status %#04x result %" PRIu64
				      " bytes %u, want result %" PRIu64 " bytes %u", r, i,
				      ops[i].status, (uint64_t)ops[i].result, ops[i].bytes_completed,
				      result[i], bytes[i]);
			} else if (!record_is(&ops[i], VSVM_WQ_ST_SUCCESS, ops[i].len)) {
				return;
			}
		}
	}
	case_ok("%u runs, %" PRIu64 " bytes, every byte checked:", runs, total);
}

/* The driver disables and re-enables the queue: HEAD and TAIL start over at 0. */
static void case_restart(void)
{
	uint32_t data = 16 * KiB;
	struct vsvm_accel_wq_op *o;

	begin("queue disabled and enabled again", data);
	o = op(VSVM_WQ_OPC_MEMMOVE, 4 * KiB, 0, 8 * KiB);
	memmove(want + 8 * KiB, want, 4 * KiB);
	if (!submit(VSVM_WQ_RUN_RESTART, data) || !run_ok(data, 0) ||
	    !record_is(o, VSVM_WQ_ST_SUCCESS, 4 * KiB))
		return;
	CHECK(o->ring_slot == 0, "first descriptor in slot %u after the restart", o->ring_slot);
	case_ok("ring restarted at slot 0:");
}

/* A doorbell beyond the ring is refused (BAD_TAIL in SWERR); the queue works on. */
static void case_bad_doorbell(void)
{
	uint32_t data = 16 * KiB;
	struct vsvm_accel_wq_op *o;
	uint64_t s;

	begin("doorbell beyond the ring", data);
	o = op(VSVM_WQ_OPC_MEMMOVE, 4 * KiB, 0, 8 * KiB);
	memmove(want + 8 * KiB, want, 4 * KiB);
	if (!submit(VSVM_WQ_RUN_BAD_DOORBELL, data) || !run_ok(data, 1) ||
	    !record_is(o, VSVM_WQ_ST_SUCCESS, 4 * KiB))
		return;
	s = run.swerr;
	CHECK((s & VSVM_WQ_SWERR_VALID) && VSVM_WQ_SWERR_CODE(s) == VSVM_WQ_ST_BAD_TAIL,
	      "SWERR %#" PRIx64 ", want BAD_TAIL", s);
	CHECK(run.swerr_addr == VSVM_ACCEL_WQ_RING, "SWERR_ADDR %#" PRIx64 ", want the TAIL %u",
	      (uint64_t)run.swerr_addr, VSVM_ACCEL_WQ_RING);
	case_ok("SWERR %#" PRIx64 " code %#04x (%s), TAIL %" PRIu64 " ignored, then the run went on:",
		s, VSVM_WQ_SWERR_CODE(s), status_name(VSVM_WQ_SWERR_CODE(s)),
		(uint64_t)run.swerr_addr);
}

/* One failing descriptor with a record: the record carries the error. */
static void case_record_error(const char *name, struct vsvm_accel_wq_op o, unsigned int status)
{
	uint32_t data = 2 * MiB;
	struct vsvm_accel_wq_op *p;

	begin(name, data);
	p = &ops[nops++];
	*p = o;
	if (!submit(0, data) || !run_ok(data, 1) || !record_is(p, status, ~0u))
		return;
	CHECK(!(run.swerr & VSVM_WQ_SWERR_VALID), "SWERR %#" PRIx64 " set though the record tells",
	      (uint64_t)run.swerr);
	case_ok("status %#04x (%s), error irq:", p->status, status_name(p->status));
}

/* One failing descriptor the device can only report in SWERR. */
static void case_swerr(const char *name, struct vsvm_accel_wq_op o, unsigned int code,
		       int addr_is_record)
{
	uint32_t data = 64 * KiB;
	struct vsvm_accel_wq_op *p;

	begin(name, data);
	p = &ops[nops++];
	*p = o;
	if (!submit(0, data) || !run_ok(data, 1) ||
	    !swerr_is(p, code, addr_is_record ? p->completion_addr : 0))
		return;
	CHECK(!(run.swerr & VSVM_WQ_SWERR_OVERFLOW), "SWERR %#" PRIx64 ": OVERFLOW",
	      (uint64_t)run.swerr);
	case_ok("SWERR %#" PRIx64 " code %#04x (%s) slot %u, no record, data untouched, error irq:",
		(uint64_t)run.swerr, code, status_name(code), p->ring_slot);
}

static void case_swerr_overflow(void)
{
	uint32_t data = 16 * KiB;
	struct vsvm_accel_wq_op *first;

	begin("two software errors", data);
	first = op(BAD_OPCODE, 0, 0, 0);
	first->flags = VSVM_WQ_OP_NO_RECORD;
	op(VSVM_WQ_OPC_MEMMOVE, 4 * KiB, 0, 8 * KiB)->flags = VSVM_WQ_OP_MISALIGN_RECORD;
	if (!submit(0, data) || !run_ok(data, 1) || !swerr_is(first, VSVM_WQ_ST_BAD_OPCODE, 0))
		return;
	CHECK(run.swerr & VSVM_WQ_SWERR_OVERFLOW, "SWERR %#" PRIx64 " lacks OVERFLOW",
	      (uint64_t)run.swerr);
	case_ok("first kept (slot %u), OVERFLOW set:", first->ring_slot);
}

static struct vsvm_accel_wq_op mk(uint8_t opcode, uint32_t len, uint32_t src, uint32_t dst,
				  uint32_t flags)
{
	struct vsvm_accel_wq_op o;

	memset(&o, 0, sizeof(o));
	o.opcode = opcode;
	o.len = len;
	o.src_off = src;
	o.dst_off = dst;
	o.flags = flags;
	o.pasid = 1;
	return o;
}

int main(int argc, char **argv)
{
	int quick = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
			seed = strtoull(argv[++i], NULL, 0);
		} else if (!strcmp(argv[i], "--iommu")) {
			behind_iommu = 1;
		} else if (!strcmp(argv[i], "--pasid-enabled")) {
			pasid_enabled = 1;
		} else if (!strcmp(argv[i], "--quick")) {
			quick = 1;
		} else {
			fprintf(stderr, "usage: accel-wq [--seed S] [--quick] [--iommu] [--pasid-enabled]\n");
			return 2;
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = open(VSVM_ACCEL_DEV, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("accel-wq: FAIL: open %s: %s (is vsvm_accel loaded and bound?)\n",
		       VSVM_ACCEL_DEV, strerror(errno));
		return 1;
	}

	case_device();
	case_memmove("memmove 64 KiB", 64 * KiB);
	if (quick)
		goto out;
	case_memmove("memmove 1 MiB (MAX_XFER)", MAX_XFER);
	case_memmove_overlap();
	case_fill();
	case_compare();
	case_nop();
	case_batch();
	case_batch_fail();
	case_nested_batch();
	case_bad_batch();
	case_many("60 descriptors, one doorbell", 60, 0);
	case_many("60 descriptors, a doorbell each", 60, VSVM_WQ_RUN_DOORBELL_EACH);
	case_soak(100);
	case_record_error("bad opcode", mk(BAD_OPCODE, 4 * KiB, 0, 8 * KiB, 0),
			  VSVM_WQ_ST_BAD_OPCODE);
	case_record_error("memmove length 0", mk(VSVM_WQ_OPC_MEMMOVE, 0, 0, 8 * KiB, 0),
			  VSVM_WQ_ST_BAD_SIZE);
	case_record_error("memmove above MAX_XFER", mk(VSVM_WQ_OPC_MEMMOVE, MAX_XFER + 1, 0,
						       MAX_XFER - 1, 0), VSVM_WQ_ST_BAD_SIZE);
	case_record_error("reserved control bit",
			  mk(VSVM_WQ_OPC_NOP, 0, 0, 0, VSVM_WQ_OP_RESERVED_BIT),
			  VSVM_WQ_ST_BAD_FLAGS);
	case_record_error("privileged without PASID",
			  mk(VSVM_WQ_OPC_MEMMOVE, 4 * KiB, 0, 8 * KiB, VSVM_WQ_OP_PRIV),
			  VSVM_WQ_ST_BAD_PRIVILEGE);
	case_swerr("bad opcode without record",
		   mk(BAD_OPCODE, 4 * KiB, 0, 8 * KiB, VSVM_WQ_OP_NO_RECORD),
		   VSVM_WQ_ST_BAD_OPCODE, 0);
	case_swerr("misaligned completion record",
		   mk(VSVM_WQ_OPC_MEMMOVE, 4 * KiB, 0, 8 * KiB, VSVM_WQ_OP_MISALIGN_RECORD),
		   VSVM_WQ_ST_BAD_COMPLETION_ADDR, 1);
	case_swerr("PASID-tagged descriptor",
		   mk(VSVM_WQ_OPC_MEMMOVE, 4 * KiB, 0, 8 * KiB, VSVM_WQ_OP_PASID),
		   pasid_enabled ? VSVM_WQ_ST_PASID_DISABLED : VSVM_WQ_ST_BAD_PASID, 1);
	case_swerr_overflow();
	case_bad_doorbell();
	case_restart();
	case_memmove("memmove 64 KiB after the errors", 64 * KiB);

out:
	printf("accel-wq: %d cases, %d failed: %s\n", cases, failed, failed ? "FAIL" : "PASS");
	close(fd);
	return failed ? 1 : 0;
}
