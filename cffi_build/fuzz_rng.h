/* The fuzz drivers' random numbers (wire_fuzz.c, joyride/dataplane/dataplane_fuzz.c):
 * xorshift64*, seeded by the driver through rng_state; reproducible from the seed. */
#ifndef JOYRIDE_FUZZ_RNG_H
#define JOYRIDE_FUZZ_RNG_H

#include <stdint.h>

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

#endif
