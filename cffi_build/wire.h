/* Joyride compiled per-packet primitives: internet checksum, batch parse and batch
 * build of Ethernet(+802.1Q)/IPv4/TCP frames.
 *
 * This header is read twice: by the C compiler (wire.c) and by cffi's cdef parser
 * (cffi_build/wire_build.py strips the preprocessor lines). Keep it to plain
 * declarations: no macros with values, no inline functions.
 *
 * Reason codes must match joyride/wire/errors.py (class Reason); a unit test checks.
 * Codes below WIRE_SANITY_BASE (32) are integrity errors, the rest sanity errors.
 */
#ifndef JOYRIDE_WIRE_H
#define JOYRIDE_WIRE_H

#include <stddef.h>
#include <stdint.h>

enum wire_reason {
    WIRE_OK = 0,
    WIRE_ETH_TRUNCATED = 1,
    WIRE_IP_TRUNCATED = 2,
    WIRE_IP_BAD_VERSION = 3,
    WIRE_IP_BAD_HEADER_LENGTH = 4,
    WIRE_IP_BAD_TOTAL_LENGTH = 5,
    WIRE_IP_BAD_CHECKSUM = 6,
    WIRE_IP_BAD_OPTION_LENGTH = 7,
    WIRE_TCP_TRUNCATED = 8,
    WIRE_TCP_BAD_HEADER_LENGTH = 9,
    WIRE_TCP_BAD_CHECKSUM = 10,
    WIRE_TCP_BAD_OPTION_LENGTH = 11,
    WIRE_IP6_BAD_EXTENSION = 12,   /* an IPv6 extension header truncated or malformed */
    WIRE_SANITY_BASE = 32,
    WIRE_ETH_NOT_IPV4 = 32,
    WIRE_IP_FRAGMENT = 33,
    WIRE_IP_BAD_SRC_ADDR = 34,
    WIRE_IP_BAD_DST_ADDR = 35,
    WIRE_IP_NOT_TCP = 36,
    WIRE_TCP_ZERO_PORT = 37,
    WIRE_TCP_SYN_FIN = 38,
    WIRE_IP6_OPTION = 39,          /* an IPv6 option whose type says discard (RFC 8200 §4.2) */
    WIRE_IP6_ROUTING = 40,         /* a routing header with segments left */
    WIRE_IP6_HEADER_CHAIN = 41,    /* more than 8 extension headers or 255 header bytes */
    WIRE_IP6_JUMBOGRAM = 42
};

/* One parsed frame: 64 bytes, one cache line. Offsets are from the frame start.
 * Addresses are kept in network byte order (the 4 bytes as on the wire); every other
 * multi-byte field is in host order. Fields after `reason` are meaningful only as far
 * as parsing got: all are zero for a frame dropped before they were read. */
struct wire_parsed {
    uint32_t src_ip;        /* network order */
    uint32_t dst_ip;        /* network order */
    uint32_t seq;
    uint32_t ack;
    uint32_t tsval;
    uint32_t tsecr;
    uint16_t src_port;
    uint16_t dst_port;
    uint16_t window;        /* raw, unscaled */
    uint16_t urgent;
    uint16_t payload_off;
    uint16_t payload_len;
    uint16_t mss;           /* valid when has_mss */
    uint16_t vlan_tci;      /* valid when has_vlan */
    uint16_t ip_id;
    uint8_t reason;         /* enum wire_reason */
    uint8_t flags;          /* TCP flags byte (FIN..CWR) */
    uint8_t dst_mac_off;
    uint8_t src_mac_off;
    uint8_t l2_len;         /* 14, or 18 with a VLAN tag */
    uint8_t ip_hl;          /* IP header length in bytes (IPv6: with its extension headers) */
    uint8_t tcp_hl;         /* TCP header length in bytes */
    uint8_t wscale;         /* valid when has_wscale; as sent, unclamped */
    uint8_t sack_off;       /* first SACK block, from the TCP header start */
    uint8_t sack_count;     /* number of SACK blocks (0..4) */
    uint8_t ttl;            /* IPv6: the hop limit */
    uint8_t tos;            /* IPv6: the traffic class */
    uint8_t has_vlan;
    uint8_t has_ts;
    uint8_t has_sack;
    uint8_t has_mss;
    uint8_t has_wscale;
    uint8_t sack_permitted;
    uint8_t plain;          /* header-prediction candidate: ACK (+PSH) only, options only NOP/EOL/TS */
    uint8_t df;             /* IPv4 don't-fragment bit */
    uint8_t opts_plain;     /* options only NOP/EOL/TS (whatever the flags) */
    uint8_t family;         /* 4, or 6: src_ip/dst_ip are 0, the addresses in wire_addr6 */
};

/* An IPv6 frame's addresses (network order), beside its record. */
struct wire_addr6 {
    uint8_t src[16];
    uint8_t dst[16];
};

/* What a batch of built frames shares: one connection's addressing. */
struct wire_template {
    uint8_t dst_mac[6];
    uint8_t src_mac[6];
    uint8_t src_ip[16];     /* network order: an IPv4 address is the first 4 bytes */
    uint8_t dst_ip[16];
    uint32_t flow_label;    /* IPv6: 20 bits (RFC 6437) */
    uint16_t src_port;
    uint16_t dst_port;
    uint16_t vlan_tci;
    uint8_t has_vlan;
    uint8_t ttl;            /* IPv6: the hop limit */
    uint8_t tos;            /* IPv6: the traffic class */
    uint8_t df;             /* IPv4 only */
    uint8_t ipv6;           /* 1: IPv6 frames; 0 (a zeroed template): IPv4 */
};

/* One segment to build. The payload comes from payload_base + payload_off, or, when
 * the build call gets payload_base == NULL, is already in place right after the
 * headers in the output frame (zero copy). */
struct wire_seg {
    uint64_t payload_off;
    uint32_t payload_len;
    uint32_t seq;
    uint32_t ack;
    uint32_t tsval;
    uint32_t tsecr;
    uint32_t sack[8];       /* sack_count (left, right) pairs */
    uint16_t window;
    uint16_t ip_id;
    uint8_t flags;
    uint8_t has_ts;
    uint8_t sack_count;     /* at most 4, or 3 with timestamps (40 option bytes) */
    uint8_t syn_opts;       /* WIRE_SYN_*: the options only a SYN carries (RFC 9293 §3.2) */
    uint16_t mss;           /* with WIRE_SYN_MSS */
    uint8_t wscale;         /* with WIRE_SYN_WSCALE */
    uint8_t pad;
};

/* struct wire_seg.syn_opts: a SYN or SYN-ACK's options, laid out as Linux does and as
 * joyride/wire/tcp_options.py emit_options does: MSS, SACK-permitted + timestamps (or
 * NOP NOP + either), NOP + window scale. */
enum wire_syn_opt {
    WIRE_SYN_MSS = 1,
    WIRE_SYN_SACK_PERM = 2,
    WIRE_SYN_WSCALE = 4
};

/* Ones' complement sum of n bytes (RFC 1071), folded to 16 bits and returned as the
 * big-endian value; `initial` is a previous such sum to continue from. Not inverted. */
uint16_t wire_ones_sum(const uint8_t *p, size_t n, uint16_t initial);

/* Parse n frames at base + offs[i], lens[i] bytes each, into out[i]. Returns the
 * number of frames accepted (reason == WIRE_OK). verify: check IPv4 and TCP sums.
 * IPv4 only: an IPv6 frame is WIRE_ETH_NOT_IPV4, as any other type. */
uint32_t wire_parse_batch(const uint8_t *base, const uint64_t *offs, const uint32_t *lens,
                          uint32_t n, int verify, struct wire_parsed *out);

/* The same, IPv6 too (RFC 8200: extension headers walked as joyride/wire/ipv6.py
 * says): an accepted IPv6 frame has family 6 and its addresses in out6[i]. */
uint32_t wire_parse_batch6(const uint8_t *base, const uint64_t *offs, const uint32_t *lens,
                           uint32_t n, int verify, struct wire_parsed *out,
                           struct wire_addr6 *out6);

/* The end of the run of records that start at i and share record i's 4-tuple, all
 * parsed without error and IPv4 (an IPv6 record is a run of its own): the index of the first record after it, at most
 * min(n, i + max). i itself must be a valid record (i < n). One call instead of a
 * Python comparison of each following record, for an engine that gives a
 * connection's consecutive segments to its fast path together. */
uint32_t wire_run_end(const struct wire_parsed *recs, uint32_t i, uint32_t n, uint32_t max);

/* Header bytes wire_build_batch writes before the payload of segment s. */
uint32_t wire_header_len(const struct wire_template *t, const struct wire_seg *s);

/* Build n frames at out_base + out_offs[i] (capacity out_caps[i] bytes each) from the
 * template and segs[i], checksums filled in. out_lens[i] receives the frame length, or
 * 0 if the segment is invalid (too many SACK blocks, does not fit, IP length overflow).
 * Returns the number of frames built. */
uint32_t wire_build_batch(const struct wire_template *t, const struct wire_seg *segs,
                          uint32_t n, const uint8_t *payload_base, uint8_t *out_base,
                          const uint64_t *out_offs, const uint32_t *out_caps,
                          uint32_t *out_lens);

/* The virtio-net header an AF_PACKET socket with PACKET_VNET_HDR takes before each
 * frame (linux/virtio_net.h, little-endian as the kernel reads it on this host): how the
 * kernel is to checksum and segment a frame longer than the MTU, GSO's contract. */
struct wire_vnet_hdr {
    uint8_t flags;          /* WIRE_VNET_NEEDS_CSUM */
    uint8_t gso_type;       /* WIRE_VNET_GSO_*: 0 for a frame that is one segment */
    uint16_t hdr_len;       /* Ethernet + IP + TCP header bytes */
    uint16_t gso_size;      /* payload bytes of each segment but the last */
    uint16_t csum_start;    /* the TCP header's offset in the frame */
    uint16_t csum_offset;   /* the checksum field's offset in the TCP header (16) */
};

enum wire_vnet {
    WIRE_VNET_NEEDS_CSUM = 1,
    WIRE_VNET_GSO_TCPV4 = 1,
    WIRE_VNET_GSO_TCPV6 = 4
};

/* The headers of one GSO super-segment: segment s (seq, ack, window, flags, options)
 * whose payload of s->payload_len bytes follows the headers and is to be cut into
 * segments of gso_size bytes (the last shorter), each with s's headers, its sequence
 * number advanced, and FIN and PSH on the last only (as Linux's tcp_gso_segment and
 * any TSO device do). Writes the headers to out (cap bytes) with the TCP checksum
 * left partial (the pseudo-header's sum) and fills *vnet. Returns the header length, or
 * 0 when s cannot be one (a SYN or RST, SYN options, invalid, does not fit). The payload
 * is not read: it goes out beside the headers (an iovec). */
uint32_t wire_build_gso(const struct wire_template *t, const struct wire_seg *s,
                        uint16_t gso_size, uint8_t *out, uint32_t cap,
                        struct wire_vnet_hdr *vnet);

#endif
