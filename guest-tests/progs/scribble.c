/*
 * scribble: a hostile guest program. Maps a PCI memory BAR through its sysfs
 * resource file and writes random values at random aligned offsets (32- and
 * 64-bit), printing each write before it makes it, so the console shows the
 * sequence even if the guest dies from it. Used on the remap unit's BAR0 (the
 * VT-d registers) while translation is on: the guest may fall over; the server
 * must not.
 *
 *   scribble RESOURCE_FILE [--writes N] [--seed S]
 *
 * Needs iomem=relaxed on the kernel command line when a driver claimed the
 * range (intel-iommu does, for dmar0).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t state;

/* xorshift64*: deterministic for a seed, so a run can be replayed. */
static uint64_t next(void)
{
	state ^= state >> 12;
	state ^= state << 25;
	state ^= state >> 27;
	return state * 0x2545f4914f6cdd1dull;
}

int main(int argc, char **argv)
{
	unsigned long writes = 1000;
	uint64_t seed = 1;

	if (argc < 2) {
		fprintf(stderr, "usage: scribble RESOURCE_FILE [--writes N] [--seed S]\n");
		return 2;
	}
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--writes"))
			writes = strtoul(argv[i + 1], NULL, 0);
		else if (!strcmp(argv[i], "--seed"))
			seed = strtoull(argv[i + 1], NULL, 0);
	}
	state = seed ? seed : 1;

	int fd = open(argv[1], O_RDWR | O_SYNC);
	if (fd < 0) {
		fprintf(stderr, "scribble: open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size < 8) {
		fprintf(stderr, "scribble: %s: no size\n", argv[1]);
		return 1;
	}
	size_t size = (size_t)st.st_size;
	volatile uint8_t *bar = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (bar == MAP_FAILED) {
		fprintf(stderr, "scribble: mmap %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	printf("scribble: %s, %zu bytes, %lu writes, seed %#" PRIx64 "\n", argv[1], size,
	       writes, seed);
	fflush(stdout);
	for (unsigned long n = 0; n < writes; n++) {
		uint64_t r = next(), value = next();
		int wide = r & 1;
		size_t off = (size_t)(r >> 8) % size & ~(size_t)(wide ? 7 : 3);
		printf("scribble: %lu: %s 0x%zx <- %#" PRIx64 "\n", n, wide ? "q" : "l", off,
		       wide ? value : (uint32_t)value);
		fflush(stdout);
		if (wide)
			*(volatile uint64_t *)(bar + off) = value;
		else
			*(volatile uint32_t *)(bar + off) = (uint32_t)value;
	}
	printf("scribble: done, %lu writes\n", writes);
	return 0;
}
