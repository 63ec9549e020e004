/*
 * accel-bench: time MMIO round trips to the vsvm accelerator from inside the
 * guest (the timing itself runs in the vsvm_accel driver, around each access).
 *
 *   accel-bench OP ITERS [WORK]     OP: read | write | irq | mixed
 *
 * Prints one line the host benchmark parses:
 *   BENCH op=read iters=2000 median_ns=... p90_ns=... min_ns=... total_ns=...
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../module/vsvm_accel_uapi.h"

static const char *const ops[] = { "read", "write", "irq", "mixed" };

int main(int argc, char **argv)
{
	struct vsvm_accel_bench b = { 0 };
	unsigned op;
	int fd;

	if (argc < 3) {
		fprintf(stderr, "usage: %s read|write|irq|mixed ITERS [WORK]\n", argv[0]);
		return 2;
	}
	for (op = 0; op < 4 && strcmp(argv[1], ops[op]); op++)
		;
	if (op == 4) {
		fprintf(stderr, "accel-bench: unknown op %s\n", argv[1]);
		return 2;
	}
	b.op = op;
	b.iters = (uint32_t)strtoul(argv[2], NULL, 0);
	b.work = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 0) : 0;
	fd = open(VSVM_ACCEL_DEV, O_RDWR);
	if (fd < 0 || ioctl(fd, VSVM_ACCEL_IOC_BENCH, &b) < 0) {
		printf("accel-bench: FAIL: %s: %s\n", fd < 0 ? "open" : "ioctl", strerror(errno));
		return 1;
	}
	printf("BENCH op=%s iters=%u work=%u median_ns=%llu p90_ns=%llu min_ns=%llu total_ns=%llu\n",
	       ops[op], b.iters, b.work, (unsigned long long)b.median_ns,
	       (unsigned long long)b.p90_ns, (unsigned long long)b.min_ns,
	       (unsigned long long)b.total_ns);
	close(fd);
	return 0;
}
