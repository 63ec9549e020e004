/* Reproducible test data for the guest programs. */
#ifndef VSVM_PATTERN_H
#define VSVM_PATTERN_H

#include <stddef.h>
#include <stdint.h>

/* xorshift64 bytes: cheap, reproducible, and different for every seed. */
static inline void pattern_bytes(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)(x >> 32);
	}
}

#endif
