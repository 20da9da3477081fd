/* Joyride compiled per-packet primitives; see wire.h for the contract.
 *
 * The parser mirrors joyride/wire (ethernet.py, ipv4.py, tcp_options.py, tcp.py,
 * frame.py) check for check and in the same order, so that both agree on the drop
 * reason of any input; the Python side is the readable reference and the hypothesis
 * tests compare the two on random and mutated frames.
 *
 * All loads go through memcpy: frames come from UMEM at arbitrary offsets and the
 * compiler turns these into plain (unaligned-safe) loads on x86-64.
 */
#include "wire.h"

#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define WIRE_BE 1
#else
#define WIRE_BE 0
#endif

#define ETH_HLEN 14
#define VLAN_HLEN 4
#define ETHERTYPE_IPV4 0x0800
#define ETHERTYPE_IPV6 0x86DD
#define ETHERTYPE_VLAN 0x8100
#define IPPROTO_TCP_ 6

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOPT_WS 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_SACK 5
#define TCPOPT_TS 8

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static inline uint32_t ld32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return WIRE_BE ? v : __builtin_bswap32(v);
}

static inline uint32_t ld32n(const uint8_t *p) /* native, no swap */
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline void st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void st32(uint8_t *p, uint32_t v)
{
    v = WIRE_BE ? v : __builtin_bswap32(v);
    memcpy(p, &v, 4);
}

static inline uint16_t bswap16_if_le(uint16_t v) { return WIRE_BE ? v : __builtin_bswap16(v); }

/* ---- internet checksum (RFC 1071) -------------------------------------------------
 * The ones' complement sum is byte-order independent (RFC 1071 §2(B)): sum native
 * 32-bit words into 64-bit accumulators, which cannot overflow for any frame, fold at
 * the end, and store the folded value natively. Four independent accumulators keep the
 * adds off one dependency chain. */

static inline uint64_t sum_native(const uint8_t *p, size_t n, uint64_t acc)
{
    uint64_t a0 = acc, a1 = 0, a2 = 0, a3 = 0;
    while (n >= 32) {
        uint32_t w[8];
        memcpy(w, p, 32);
        a0 += (uint64_t)w[0] + w[4];
        a1 += (uint64_t)w[1] + w[5];
        a2 += (uint64_t)w[2] + w[6];
        a3 += (uint64_t)w[3] + w[7];
        p += 32;
        n -= 32;
    }
    while (n >= 4) {
        a0 += ld32n(p);
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t h;
        memcpy(&h, p, 2);
        a1 += h;
        p += 2;
        n -= 2;
    }
    if (n) /* a trailing odd byte is the high-order byte of a zero-padded word */
        a2 += WIRE_BE ? ((uint32_t)p[0] << 8) : p[0];
    return a0 + a1 + a2 + a3;
}

static inline uint16_t fold(uint64_t s)
{
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    s = (s & 0xffffu) + (s >> 16);
    return (uint16_t)s;
}

uint16_t wire_ones_sum(const uint8_t *p, size_t n, uint16_t initial)
{
    uint64_t acc = bswap16_if_le(initial);
    return bswap16_if_le(fold(sum_native(p, n, acc)));
}

/* Native-order partial sum of the TCP pseudo-header (RFC 9293 §3.1). */
static inline uint64_t pseudo_sum(const uint8_t *src_ip, const uint8_t *dst_ip, uint32_t tcp_len)
{
    return (uint64_t)ld32n(src_ip) + ld32n(dst_ip) + bswap16_if_le(IPPROTO_TCP_) +
           bswap16_if_le((uint16_t)tcp_len);
}

/* Native-order partial sum of the IPv6 pseudo-header (RFC 8200 §8.1): the addresses
 * (32 bytes from src, dst following it in the header), the 32-bit upper-layer length
 * (below 2^16 here: no jumbograms), three zero bytes and the next header. */
static inline uint64_t pseudo_sum6(const uint8_t *addrs, uint32_t tcp_len)
{
    return sum_native(addrs, 32, 0) + bswap16_if_le(IPPROTO_TCP_) +
           bswap16_if_le((uint16_t)tcp_len);
}

/* ---- parsing ----------------------------------------------------------------------- */

/* RFC 1122 §3.2.1.3: 0/8 "this network", 127/8 loopback, and class D/E (224/3, which
 * includes the limited broadcast) never appear as the source of a TCP segment; a TCP
 * SYN to broadcast or multicast MUST be discarded (RFC 1122 §4.2.3.10). */
static inline int martian(const uint8_t *a) { return a[0] == 0 || a[0] == 127 || a[0] >= 224; }

/* Walk TCP options (RFC 9293 §3.2): EOL ends, NOP is one byte, every other kind has a
 * length byte that must be >= 2 and fit; the known kinds must have their exact lengths
 * (RFC 9293 §3.2 MSS=4, RFC 7323 §2.2 WS=3, §3.2 TS=10, RFC 2018 §2 SACK-permitted=2,
 * §3 SACK = 2 + 8n). Duplicates: the last occurrence wins. */
static inline int parse_tcp_options(const uint8_t *tcp, uint32_t hl, struct wire_parsed *r)
{
    uint32_t i = 20;
    int plain = 1;
    while (i < hl) {
        uint8_t kind = tcp[i];
        if (kind == TCPOPT_EOL)
            break;
        if (kind == TCPOPT_NOP) {
            i++;
            continue;
        }
        if (i + 1 >= hl)
            return WIRE_TCP_BAD_OPTION_LENGTH;
        uint8_t olen = tcp[i + 1];
        if (olen < 2 || i + olen > hl)
            return WIRE_TCP_BAD_OPTION_LENGTH;
        const uint8_t *o = tcp + i;
        switch (kind) {
        case TCPOPT_MSS:
            if (olen != 4)
                return WIRE_TCP_BAD_OPTION_LENGTH;
            r->has_mss = 1;
            r->mss = ld16(o + 2);
            plain = 0;
            break;
        case TCPOPT_WS:
            if (olen != 3)
                return WIRE_TCP_BAD_OPTION_LENGTH;
            r->has_wscale = 1;
            r->wscale = o[2];
            plain = 0;
            break;
        case TCPOPT_SACK_PERM:
            if (olen != 2)
                return WIRE_TCP_BAD_OPTION_LENGTH;
            r->sack_permitted = 1;
            plain = 0;
            break;
        case TCPOPT_SACK:
            if (olen < 10 || (olen - 2) % 8 != 0)
                return WIRE_TCP_BAD_OPTION_LENGTH;
            r->has_sack = 1;
            r->sack_off = (uint8_t)(i + 2);
            r->sack_count = (uint8_t)((olen - 2) / 8);
            plain = 0;
            break;
        case TCPOPT_TS:
            if (olen != 10)
                return WIRE_TCP_BAD_OPTION_LENGTH;
            r->has_ts = 1;
            r->tsval = ld32(o + 2);
            r->tsecr = ld32(o + 6);
            break;
        default: /* unknown: skipped by length */
            plain = 0;
            break;
        }
        i += olen;
    }
    r->opts_plain = (uint8_t)plain;
    r->plain = (uint8_t)(plain && (r->flags & ~TCP_PSH) == TCP_ACK);
    return WIRE_OK;
}

/* TCP, RFC 9293 §3.1: the segment of seglen bytes at tcp, l4_off bytes into the
 * frame; pseudo: the IP layer's pseudo-header sum (used when verify). */
static inline int parse_tcp_part(const uint8_t *tcp, uint32_t seglen, uint32_t l4_off,
                                 uint64_t pseudo, int verify, struct wire_parsed *r)
{
    if (seglen < 20)
        return WIRE_TCP_TRUNCATED;
    uint32_t thl = (uint32_t)(tcp[12] >> 4) * 4;
    if (thl < 20 || thl > seglen)
        return WIRE_TCP_BAD_HEADER_LENGTH;
    if (verify && fold(sum_native(tcp, seglen, pseudo)) != 0xffff)
        return WIRE_TCP_BAD_CHECKSUM;
    r->src_port = ld16(tcp);
    r->dst_port = ld16(tcp + 2);
    r->seq = ld32(tcp + 4);
    r->ack = ld32(tcp + 8);
    r->flags = tcp[13];
    r->window = ld16(tcp + 14);
    r->urgent = ld16(tcp + 18);
    r->tcp_hl = (uint8_t)thl;
    r->payload_off = (uint16_t)(l4_off + thl);
    r->payload_len = (uint16_t)(seglen - thl);
    int rc = parse_tcp_options(tcp, thl, r);
    if (rc != WIRE_OK)
        return rc;
    if (r->src_port == 0 || r->dst_port == 0)
        return WIRE_TCP_ZERO_PORT;
    if ((r->flags & (TCP_SYN | TCP_FIN)) == (TCP_SYN | TCP_FIN))
        return WIRE_TCP_SYN_FIN;
    return WIRE_OK;
}

/* joyride/wire/ipv6.py is_martian6: ::, ::1, ff00::/8, ::ffff:0:0/96. */
static inline int martian6(const uint8_t *a)
{
    static const uint8_t zero[10];
    if (a[0] == 0xff)
        return 1;
    if (memcmp(a, zero, 10) != 0)
        return 0;
    if (a[10] == 0xff && a[11] == 0xff)
        return 1;
    return a[10] == 0 && a[11] == 0 && a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] <= 1;
}

#define IP6_HLEN 40
#define IP6_MAX_EXT 8
#define IP6_MAX_CHAIN 255
#define NEXT_HOP_BY_HOP 0
#define NEXT_ROUTING 43
#define NEXT_FRAGMENT 44
#define NEXT_DEST_OPTIONS 60

/* RFC 8200 §4.2: options of a hop-by-hop or destination options header of len bytes. */
static inline int walk_ip6_options(const uint8_t *ext, uint32_t len)
{
    for (uint32_t i = 2; i < len;) {
        uint8_t opt = ext[i];
        if (opt == 0) { /* Pad1 */
            i++;
            continue;
        }
        if (i + 1 >= len || i + 2u + ext[i + 1] > len)
            return WIRE_IP6_BAD_EXTENSION;
        if (opt != 1 && (opt >> 6) != 0) /* not PadN, and its action says discard */
            return WIRE_IP6_OPTION;
        i += 2u + ext[i + 1];
    }
    return WIRE_OK;
}

/* IPv6 (RFC 8200), in the order of joyride/wire/ipv6.py parse_ipv6, then TCP. */
static inline int parse_ip6(const uint8_t *ip, uint32_t avail, uint32_t l2, int verify,
                            struct wire_parsed *r, struct wire_addr6 *a6)
{
    if (avail < IP6_HLEN)
        return WIRE_IP_TRUNCATED;
    if ((ip[0] >> 4) != 6)
        return WIRE_IP_BAD_VERSION;
    uint32_t total = IP6_HLEN + ld16(ip + 4);
    if (total > avail) /* bytes beyond are Ethernet padding and ignored */
        return WIRE_IP_TRUNCATED;
    uint8_t nxt = ip[6];
    if (total == IP6_HLEN && nxt == NEXT_HOP_BY_HOP)
        return WIRE_IP6_JUMBOGRAM; /* RFC 2675 §2 */
    r->family = 6;
    r->tos = (uint8_t)(((ip[0] & 0x0f) << 4) | (ip[1] >> 4));
    r->ttl = ip[7];
    uint32_t at = IP6_HLEN;
    int walked = 0;
    for (;; walked++) {
        int is_opts = nxt == NEXT_HOP_BY_HOP || nxt == NEXT_DEST_OPTIONS;
        if (!is_opts && nxt != NEXT_ROUTING && nxt != NEXT_FRAGMENT)
            break;
        if (walked == IP6_MAX_EXT)
            return WIRE_IP6_HEADER_CHAIN;
        if (nxt == NEXT_HOP_BY_HOP && at != IP6_HLEN) /* §4.1: only first */
            return WIRE_IP6_BAD_EXTENSION;
        if (at + 2 > total)
            return WIRE_IP6_BAD_EXTENSION;
        uint32_t len = nxt == NEXT_FRAGMENT ? 8u : ((uint32_t)ip[at + 1] + 1) * 8;
        if (at + len > total)
            return WIRE_IP6_BAD_EXTENSION;
        const uint8_t *ext = ip + at;
        if (is_opts) {
            int rc = walk_ip6_options(ext, len);
            if (rc != WIRE_OK)
                return rc;
        } else if (nxt == NEXT_ROUTING && ext[3] != 0) { /* §4.4: segments left */
            return WIRE_IP6_ROUTING;
        } else if (nxt == NEXT_FRAGMENT && (ld16(ext + 2) & 0xfff9)) {
            return WIRE_IP_FRAGMENT; /* offset or M; an atomic fragment reads on (RFC 6946) */
        }
        nxt = ext[0];
        at += len;
        if (at > IP6_MAX_CHAIN)
            return WIRE_IP6_HEADER_CHAIN;
    }
    if (martian6(ip + 8))
        return WIRE_IP_BAD_SRC_ADDR;
    if (martian6(ip + 24))
        return WIRE_IP_BAD_DST_ADDR;
    memcpy(a6->src, ip + 8, 16);
    memcpy(a6->dst, ip + 24, 16);
    if (nxt != IPPROTO_TCP_)
        return WIRE_IP_NOT_TCP;
    r->ip_hl = (uint8_t)at;
    return parse_tcp_part(ip + at, total - at, l2 + at,
                          verify ? pseudo_sum6(ip + 8, total - at) : 0, verify, r);
}

static inline int parse_one(const uint8_t *f, uint32_t len, int verify, struct wire_parsed *r,
                            struct wire_addr6 *a6)
{
    memset(r, 0, sizeof(*r));
    /* Ethernet II, with at most one 802.1Q tag. */
    if (len < ETH_HLEN)
        return WIRE_ETH_TRUNCATED;
    r->src_mac_off = 6;
    uint32_t l2 = ETH_HLEN;
    uint16_t type = ld16(f + 12);
    if (type == ETHERTYPE_VLAN) {
        if (len < ETH_HLEN + VLAN_HLEN)
            return WIRE_ETH_TRUNCATED;
        r->has_vlan = 1;
        r->vlan_tci = ld16(f + 14);
        type = ld16(f + 16);
        l2 += VLAN_HLEN;
    }
    r->l2_len = (uint8_t)l2;
    if (type == ETHERTYPE_IPV6 && a6 != NULL)
        return parse_ip6(f + l2, len - l2, l2, verify, r, a6);
    if (type != ETHERTYPE_IPV4)
        return WIRE_ETH_NOT_IPV4;
    r->family = 4;

    /* IPv4, RFC 791 §3.1. */
    const uint8_t *ip = f + l2;
    uint32_t avail = len - l2;
    if (avail < 20)
        return WIRE_IP_TRUNCATED;
    if ((ip[0] >> 4) != 4)
        return WIRE_IP_BAD_VERSION;
    uint32_t ihl = (uint32_t)(ip[0] & 0x0f) * 4;
    if (ihl < 20 || ihl > avail)
        return WIRE_IP_BAD_HEADER_LENGTH;
    uint32_t total = ld16(ip + 2);
    if (total < ihl)
        return WIRE_IP_BAD_TOTAL_LENGTH;
    if (total > avail) /* bytes beyond total are Ethernet padding and ignored */
        return WIRE_IP_TRUNCATED;
    if (verify && fold(sum_native(ip, ihl, 0)) != 0xffff)
        return WIRE_IP_BAD_CHECKSUM;
    for (uint32_t i = 20; i < ihl;) { /* options: skipped, but their lengths must hold */
        uint8_t kind = ip[i];
        if (kind == 0)
            break;
        if (kind == 1) {
            i++;
            continue;
        }
        if (i + 1 >= ihl || ip[i + 1] < 2 || i + ip[i + 1] > ihl)
            return WIRE_IP_BAD_OPTION_LENGTH;
        i += ip[i + 1];
    }
    r->ip_hl = (uint8_t)ihl;
    r->tos = ip[1];
    r->ip_id = ld16(ip + 4);
    uint16_t frag = ld16(ip + 6);
    r->df = (uint8_t)((frag >> 14) & 1);
    r->ttl = ip[8];
    memcpy(&r->src_ip, ip + 12, 4);
    memcpy(&r->dst_ip, ip + 16, 4);
    if (frag & 0x3fff) /* MF or a fragment offset: we do not reassemble */
        return WIRE_IP_FRAGMENT;
    if (martian(ip + 12))
        return WIRE_IP_BAD_SRC_ADDR;
    if (martian(ip + 16))
        return WIRE_IP_BAD_DST_ADDR;
    if (ip[9] != IPPROTO_TCP_)
        return WIRE_IP_NOT_TCP;

    return parse_tcp_part(ip + ihl, total - ihl, l2 + ihl,
                          verify ? pseudo_sum(ip + 12, ip + 16, total - ihl) : 0, verify, r);
}

uint32_t wire_parse_batch6(const uint8_t *base, const uint64_t *offs, const uint32_t *lens,
                           uint32_t n, int verify, struct wire_parsed *out,
                           struct wire_addr6 *out6)
{
    uint32_t ok = 0;
    for (uint32_t i = 0; i < n; i++) {
        /* Any length is safe: the IP total or payload length (<= 65535, plus 40 and the
         * tag for IPv6) bounds every offset stored, and a payload_off past 65535 cannot
         * happen (the header chain is at most 255 bytes, TCP's at most 60). */
        int rc = parse_one(base + offs[i], lens[i], verify, &out[i],
                           out6 != NULL ? &out6[i] : NULL);
        out[i].reason = (uint8_t)rc;
        ok += rc == WIRE_OK;
    }
    return ok;
}

uint32_t wire_parse_batch(const uint8_t *base, const uint64_t *offs, const uint32_t *lens,
                          uint32_t n, int verify, struct wire_parsed *out)
{
    return wire_parse_batch6(base, offs, lens, n, verify, out, NULL);
}

/* ---- building ---------------------------------------------------------------------- */

static inline uint32_t tcp_opt_len(const struct wire_seg *s)
{
    uint32_t syn = (s->syn_opts & WIRE_SYN_MSS ? 4u : 0u) +
                   (s->syn_opts & WIRE_SYN_WSCALE ? 4u : 0u) +
                   (s->syn_opts & WIRE_SYN_SACK_PERM && !s->has_ts ? 4u : 0u);
    return syn + (s->has_ts ? 12u : 0u) + (s->sack_count ? 4u + 8u * s->sack_count : 0u);
}

uint32_t wire_header_len(const struct wire_template *t, const struct wire_seg *s)
{
    return (t->has_vlan ? ETH_HLEN + VLAN_HLEN : ETH_HLEN) + (t->ipv6 ? 40u : 20u) + 20u +
           tcp_opt_len(s);
}

/* The Ethernet, IP and TCP headers of segment s into f (hl bytes, the TCP checksum
 * field zero); *tcp_out and *pseudo_out receive the TCP header and the native-order
 * pseudo-header sum its checksum starts from. 0 when the segment is invalid or its
 * headers and `room` payload bytes do not fit in cap. */
static inline uint32_t build_headers(const struct wire_template *t, const struct wire_seg *s,
                                     uint8_t *f, uint32_t cap, uint32_t room,
                                     uint8_t **tcp_out, uint64_t *pseudo_out)
{
    uint32_t max_sack = s->has_ts ? 3 : 4; /* 40 option bytes, RFC 2018 §3 */
    if (s->sack_count > max_sack || (s->syn_opts && s->sack_count))
        return 0;
    uint32_t hl = wire_header_len(t, s);
    uint32_t l2 = t->has_vlan ? ETH_HLEN + VLAN_HLEN : ETH_HLEN;
    uint32_t thl = 20 + tcp_opt_len(s);
    uint32_t seglen = thl + s->payload_len;
    /* IPv4's total length counts its header, IPv6's payload length does not. */
    uint32_t ip_len = t->ipv6 ? seglen : 20 + seglen;
    if (s->payload_len > 0xffff || ip_len > 0xffff || hl + room > cap ||
        (t->ipv6 && t->flow_label > 0xfffff))
        return 0;

    memcpy(f, t->dst_mac, 6);
    memcpy(f + 6, t->src_mac, 6);
    uint16_t type = t->ipv6 ? ETHERTYPE_IPV6 : ETHERTYPE_IPV4;
    if (t->has_vlan) {
        st16(f + 12, ETHERTYPE_VLAN);
        st16(f + 14, t->vlan_tci);
        st16(f + 16, type);
    } else {
        st16(f + 12, type);
    }

    uint8_t *ip = f + l2;
    uint8_t *tcp;
    uint64_t pseudo;
    if (t->ipv6) { /* RFC 8200 §3; no extension headers */
        st32(ip, (6u << 28) | ((uint32_t)t->tos << 20) | t->flow_label);
        st16(ip + 4, (uint16_t)seglen);
        ip[6] = IPPROTO_TCP_;
        ip[7] = t->ttl;
        memcpy(ip + 8, t->src_ip, 16);
        memcpy(ip + 24, t->dst_ip, 16);
        tcp = ip + 40;
        pseudo = pseudo_sum6(ip + 8, seglen);
    } else {
        ip[0] = 0x45;
        ip[1] = t->tos;
        st16(ip + 2, (uint16_t)ip_len);
        st16(ip + 4, s->ip_id);
        st16(ip + 6, t->df ? 0x4000 : 0);
        ip[8] = t->ttl;
        ip[9] = IPPROTO_TCP_;
        ip[10] = ip[11] = 0;
        memcpy(ip + 12, t->src_ip, 4);
        memcpy(ip + 16, t->dst_ip, 4);
        uint16_t ipsum = (uint16_t)~fold(sum_native(ip, 20, 0));
        memcpy(ip + 10, &ipsum, 2);
        tcp = ip + 20;
        pseudo = pseudo_sum(t->src_ip, t->dst_ip, seglen);
    }

    st16(tcp, t->src_port);
    st16(tcp + 2, t->dst_port);
    st32(tcp + 4, s->seq);
    st32(tcp + 8, s->ack);
    tcp[12] = (uint8_t)((thl / 4) << 4);
    tcp[13] = s->flags;
    st16(tcp + 14, s->window);
    tcp[16] = tcp[17] = 0;
    tcp[18] = tcp[19] = 0;
    uint8_t *o = tcp + 20;
    if (s->syn_opts & WIRE_SYN_MSS) { /* RFC 9293 §3.7.1 */
        o[0] = TCPOPT_MSS;
        o[1] = 4;
        st16(o + 2, s->mss);
        o += 4;
    }
    if (s->syn_opts & WIRE_SYN_SACK_PERM && !s->has_ts) { /* RFC 2018 §2 */
        o[0] = TCPOPT_NOP;
        o[1] = TCPOPT_NOP;
        o[2] = TCPOPT_SACK_PERM;
        o[3] = 2;
        o += 4;
    }
    if (s->has_ts) { /* NOP NOP TS, the layout Linux uses (RFC 7323 Appendix A); in a
                      * SYN, SACK-permitted takes the two NOPs' place */
        int sack_perm = (s->syn_opts & WIRE_SYN_SACK_PERM) != 0;
        o[0] = sack_perm ? TCPOPT_SACK_PERM : TCPOPT_NOP;
        o[1] = sack_perm ? 2 : TCPOPT_NOP;
        o[2] = TCPOPT_TS;
        o[3] = 10;
        st32(o + 4, s->tsval);
        st32(o + 8, s->tsecr);
        o += 12;
    }
    if (s->syn_opts & WIRE_SYN_WSCALE) { /* RFC 7323 §2.2 */
        o[0] = TCPOPT_NOP;
        o[1] = TCPOPT_WS;
        o[2] = 3;
        o[3] = s->wscale;
        o += 4;
    }
    if (s->sack_count) {
        o[0] = TCPOPT_NOP;
        o[1] = TCPOPT_NOP;
        o[2] = TCPOPT_SACK;
        o[3] = (uint8_t)(2 + 8 * s->sack_count);
        o += 4;
        for (uint32_t b = 0; b < 2u * s->sack_count; b++, o += 4)
            st32(o, s->sack[b]);
    }
    *tcp_out = tcp;
    *pseudo_out = pseudo;
    return hl;
}

static inline uint32_t build_one(const struct wire_template *t, const struct wire_seg *s,
                                 const uint8_t *payload_base, uint8_t *f, uint32_t cap)
{
    uint8_t *tcp;
    uint64_t pseudo;
    uint32_t hl = build_headers(t, s, f, cap, s->payload_len, &tcp, &pseudo);
    if (hl == 0)
        return 0;
    if (payload_base != NULL && s->payload_len)
        memcpy(f + hl, payload_base + s->payload_off, s->payload_len);
    uint32_t seglen = (uint32_t)(f + hl - tcp) + s->payload_len;
    uint16_t tsum = (uint16_t)~fold(sum_native(tcp, seglen, pseudo));
    memcpy(tcp + 16, &tsum, 2);
    return hl + s->payload_len;
}

uint32_t wire_build_gso(const struct wire_template *t, const struct wire_seg *s,
                        uint16_t gso_size, uint8_t *out, uint32_t cap,
                        struct wire_vnet_hdr *vnet)
{
    if (gso_size == 0 || s->syn_opts || (s->flags & (TCP_SYN | TCP_RST)))
        return 0;
    uint8_t *tcp;
    uint64_t pseudo;
    uint32_t hl = build_headers(t, s, out, cap, 0, &tcp, &pseudo);
    if (hl == 0)
        return 0;
    /* CHECKSUM_PARTIAL: the field holds the pseudo-header's sum, not inverted, which the
     * device (or the kernel's software fallback) completes over csum_start onwards; a
     * segmenting device adjusts it for each segment's length (tcp_gso_segment). */
    uint16_t partial = fold(pseudo);
    memcpy(tcp + 16, &partial, 2);
    uint32_t l4 = (uint32_t)(tcp - out);
    memset(vnet, 0, sizeof *vnet);
    vnet->flags = WIRE_VNET_NEEDS_CSUM;
    vnet->csum_start = (uint16_t)l4;
    vnet->csum_offset = 16;
    vnet->hdr_len = (uint16_t)hl;
    if (s->payload_len > gso_size) {
        vnet->gso_type = t->ipv6 ? WIRE_VNET_GSO_TCPV6 : WIRE_VNET_GSO_TCPV4;
        vnet->gso_size = gso_size;
    }
    return hl;
}

uint32_t wire_run_end(const struct wire_parsed *recs, uint32_t i, uint32_t n, uint32_t max)
{
    const struct wire_parsed *r = &recs[i];
    uint32_t limit = n - i > max ? i + max : n;
    uint32_t j = i + 1;
    if (r->family != 4)
        return j;
    while (j < limit && recs[j].reason == WIRE_OK && recs[j].family == 4 &&
           recs[j].src_ip == r->src_ip &&
           recs[j].dst_ip == r->dst_ip && recs[j].src_port == r->src_port &&
           recs[j].dst_port == r->dst_port)
        j++;
    return j;
}

uint32_t wire_build_batch(const struct wire_template *t, const struct wire_seg *segs,
                          uint32_t n, const uint8_t *payload_base, uint8_t *out_base,
                          const uint64_t *out_offs, const uint32_t *out_caps,
                          uint32_t *out_lens)
{
    uint32_t built = 0;
    for (uint32_t i = 0; i < n; i++) {
        out_lens[i] = build_one(t, &segs[i], payload_base, out_base + out_offs[i], out_caps[i]);
        built += out_lens[i] != 0;
    }
    return built;
}
