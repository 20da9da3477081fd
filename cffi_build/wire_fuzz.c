/* Sanitizer fuzz driver for wire.c (not part of the module): built by
 * tests/unit/wire/test_wire_sanitize.py with -fsanitize=address,undefined.
 *
 * Reads seed frames from stdin (each: 4-byte little-endian length, then the bytes),
 * then for `iterations` rounds mutates a seed into a heap buffer of *exactly* its
 * length, so that any read past the frame is caught by ASan (the Python-level fuzzing
 * packs frames side by side, where an over-read would go unnoticed), parses it, checks
 * the record's invariants, and builds random segments into exact-size buffers.
 *
 * usage: wire_fuzz ITERATIONS SEED < seeds.bin ; prints "ok <accepted> <built>".
 */
#include "wire.c"

#include <stdio.h>
#include <stdlib.h>

#include "fuzz_rng.h"

#define MAX_SEEDS 256
#define MAX_FRAME 70000

static int check_record(const struct wire_parsed *r, uint32_t len)
{
    if (r->reason != WIRE_OK)
        return (r->reason <= WIRE_IP6_BAD_EXTENSION) ||
               (r->reason >= WIRE_SANITY_BASE && r->reason <= WIRE_IP6_JUMBOGRAM);
    if (r->family != 4 && r->family != 6)
        return 0;
    uint32_t end = (uint32_t)r->payload_off + r->payload_len;
    if (end > len || r->payload_off != r->l2_len + r->ip_hl + r->tcp_hl)
        return 0;
    if (r->has_sack && (uint32_t)r->sack_off + 8u * r->sack_count > r->tcp_hl)
        return 0;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    long iterations = atol(argv[1]);
    rng_state = (uint64_t)atoll(argv[2]) * 2654435761u + 1;
    static uint8_t *seeds[MAX_SEEDS];
    static uint32_t seed_len[MAX_SEEDS];
    int nseeds = 0;
    uint32_t l;
    while (nseeds < MAX_SEEDS && fread(&l, 4, 1, stdin) == 1) {
        if (l > MAX_FRAME)
            return 3;
        seeds[nseeds] = malloc(l ? l : 1);
        if (fread(seeds[nseeds], 1, l, stdin) != l)
            return 3;
        seed_len[nseeds++] = l;
    }
    if (nseeds == 0)
        return 4;

    unsigned long accepted = 0, built = 0;
    for (long it = 0; it < iterations; it++) {
        int s = (int)(rnd() % (uint64_t)nseeds);
        uint32_t len = seed_len[s];
        uint32_t op = (uint32_t)(rnd() % 4);
        if (op == 1 && len) /* truncate */
            len = (uint32_t)(rnd() % len);
        else if (op == 2) /* extend with random bytes */
            len += (uint32_t)(rnd() % 16);
        uint8_t *f = malloc(len ? len : 1);
        uint32_t keep = len < seed_len[s] ? len : seed_len[s];
        memcpy(f, seeds[s], keep);
        for (uint32_t i = keep; i < len; i++)
            f[i] = (uint8_t)rnd();
        for (uint32_t k = (uint32_t)(rnd() % 4); len && k > 0; k--) /* byte edits */
            f[rnd() % len] = (uint8_t)rnd();
        if (op == 3 && len > 60) /* aim at the lengths that matter most */
            f[14 + rnd() % 47] = (uint8_t)rnd();
        uint64_t off = 0;
        struct wire_parsed r;
        struct wire_addr6 a6;
        accepted += wire_parse_batch6(f, &off, &len, 1, (int)(rnd() & 1), &r, &a6);
        if (!check_record(&r, len)) {
            fprintf(stderr, "bad record: reason %u len %u\n", r.reason, len);
            return 1;
        }
        free(f);

        /* Build: random fields, random capacity, exact-size output buffer. */
        struct wire_template t;
        struct wire_seg g;
        uint8_t *tb = (uint8_t *)&t, *gb = (uint8_t *)&g;
        for (size_t i = 0; i < sizeof t; i++)
            tb[i] = (uint8_t)rnd();
        for (size_t i = 0; i < sizeof g; i++)
            gb[i] = (uint8_t)rnd();
        g.payload_len %= 2000;
        g.payload_off = 0;
        g.sack_count %= 6;
        g.has_ts &= 1;
        t.has_vlan &= 1;
        t.ipv6 &= 1;
        if (rnd() % 8) /* mostly a valid flow label; now and then one the build refuses */
            t.flow_label &= 0xfffff;
        uint32_t cap = (uint32_t)(rnd() % 2200);
        uint8_t *out = malloc(cap ? cap : 1);
        uint8_t *payload = malloc(g.payload_len ? g.payload_len : 1);
        memset(payload, 0x5a, g.payload_len);
        uint64_t ooff = 0;
        uint32_t olen = 0;
        built += wire_build_batch(&t, &g, 1, payload, out, &ooff, &cap, &olen);
        if (olen) {
            uint64_t o2 = 0;
            struct wire_parsed r2;
            struct wire_addr6 a2;
            wire_parse_batch6(out, &o2, &olen, 1, 1, &r2, &a2);
            /* Our own frames always pass integrity checks (addresses may be martian). */
            if (r2.reason != WIRE_OK && r2.reason < WIRE_SANITY_BASE) {
                fprintf(stderr, "built frame rejected: reason %u\n", r2.reason);
                return 1;
            }
        }
        free(out);
        free(payload);
    }
    printf("ok %lu %lu\n", accepted, built);
    return 0;
}
