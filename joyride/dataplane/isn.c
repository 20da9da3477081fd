/* Initial sequence numbers for the connections C opens (RFC 6528), the rule of
 * joyride/tcp/isn.py, which stays the authority (tests/unit/dataplane/test_handshake.py
 * checks that both give the same ISN for the same key, 4-tuple and time):
 *
 *     ISN = M + F(localip, localport, remoteip, remoteport, secretkey)
 *
 * M is the RFC 9293 §3.4.1 4-µs clock; F is keyed BLAKE2s (RFC 7693) of the 4-tuple
 * packed as isn.pack_tuple packs it ("!4sH4sH" or, IPv6, "!16sH16sH"), truncated to 32
 * bits, read big-endian.
 * Compiled into the data plane module (dataplane_build.py includes this file).
 */
#include <stdint.h>
#include <string.h>

#include "dataplane.h"

static const uint32_t blake2s_iv[8] = {
    0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
    0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u,
};

static const uint8_t blake2s_sigma[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static inline uint32_t rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static inline uint32_t load32_le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* RFC 7693 §3.2, function F: one 64-byte block into h; t bytes hashed so far. */
static void blake2s_compress(uint32_t h[8], const uint8_t block[64], uint32_t t, int last)
{
    uint32_t m[16], v[16];
    for (int i = 0; i < 16; i++)
        m[i] = load32_le(block + 4 * i);
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = blake2s_iv[i];
    }
    v[12] ^= t; /* messages here are far shorter than 2**32 bytes: t's high word is 0 */
    if (last)
        v[14] = ~v[14];
#define G(a, b, c, d, x, y)                                                                \
    do {                                                                                   \
        v[a] = v[a] + v[b] + (x);                                                          \
        v[d] = rotr32(v[d] ^ v[a], 16);                                                    \
        v[c] = v[c] + v[d];                                                                \
        v[b] = rotr32(v[b] ^ v[c], 12);                                                    \
        v[a] = v[a] + v[b] + (y);                                                          \
        v[d] = rotr32(v[d] ^ v[a], 8);                                                     \
        v[c] = v[c] + v[d];                                                                \
        v[b] = rotr32(v[b] ^ v[c], 7);                                                     \
    } while (0)
    for (int r = 0; r < 10; r++) {
        const uint8_t *s = blake2s_sigma[r];
        G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
#undef G
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

uint32_t dp_isn_offset(const uint8_t *key, const uint8_t *local_ip, uint16_t local_port,
                       const uint8_t *remote_ip, uint16_t remote_port, uint32_t ip_len)
{
    if (ip_len != 4 && ip_len != 16)
        ip_len = 4; /* callers pass a family's length; never read past a 4-byte one */
    /* Parameter block (RFC 7693 §2.5): digest 4 bytes, key 32 bytes, fanout/depth 1. */
    uint32_t h[8];
    memcpy(h, blake2s_iv, sizeof h);
    h[0] ^= 0x01010000u ^ (32u << 8) ^ 4u;
    uint8_t block[64] = {0};
    memcpy(block, key, DP_ISN_KEY_BYTES);
    blake2s_compress(h, block, 64, 0); /* a keyed hash starts with the padded key */
    /* isn.pack_tuple: "!4sH4sH" or "!16sH16sH" (12 or 36 bytes: one block). */
    memset(block, 0, sizeof block);
    uint32_t at = 0;
    memcpy(block + at, local_ip, ip_len); /* network order already */
    at += ip_len;
    block[at++] = (uint8_t)(local_port >> 8);
    block[at++] = (uint8_t)local_port;
    memcpy(block + at, remote_ip, ip_len);
    at += ip_len;
    block[at++] = (uint8_t)(remote_port >> 8);
    block[at++] = (uint8_t)remote_port;
    blake2s_compress(h, block, 64 + at, 1);
    /* The digest's first 4 bytes (h[0] little-endian), read as a big-endian number. */
    uint32_t d = h[0];
    return (d & 0xFFu) << 24 | (d & 0xFF00u) << 8 | (d >> 8 & 0xFF00u) | d >> 24;
}

uint32_t dp_isn(const uint8_t *key, const uint8_t *local_ip, uint16_t local_port,
                const uint8_t *remote_ip, uint16_t remote_port, uint32_t ip_len, double now)
{
    /* isn.clock_ticks: RFC 9293 §3.4.1 4-µs clock, modulo 2**32. */
    uint32_t ticks = (uint32_t)(uint64_t)(now * 250000.0);
    return ticks + dp_isn_offset(key, local_ip, local_port, remote_ip, remote_port, ip_len);
}
