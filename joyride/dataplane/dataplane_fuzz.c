/* Sanitizer fuzz driver for the data plane's round (not part of the module): built by
 * tests/unit/dataplane/test_dataplane_sanitize.py with -fsanitize=address,undefined.
 *
 * A live flow table of FLOWS connections, each with a real application socket pair,
 * receives frames built for those flows (in window and not, every flag, with and
 * without timestamps, payloads up to the MSS) and random or mutated bytes. Each frame
 * sits in a slot whose bytes past its length are poisoned, so a read past a frame's
 * end aborts. Between rounds the driver writes and reads the application ends, closes
 * some (the application vanishing), releases flows (their handles then stale) and
 * adopts new ones in their slots, and moves the clock so that timers fire.
 *
 * Beside them, port BORN_PORT is a listener whose connections C opens itself: SYNs,
 * handshake ACKs, data, FINs and RSTs for a few dozen 4-tuples, plausible and not,
 * drive flows through SYN-RECEIVED, delivery to a real unix listener, both closes and
 * TIME-WAIT; the driver accepts, writes, reads and closes their application ends, and
 * releases the flows C hands back as Python would.
 *
 * And the active side: the driver opens connections C runs from their SYN (dp_connect)
 * to a peer whose SYN-ACKs, RSTs and data, with right and wrong numbers, drive them
 * through SYN-SENT (retransmissions, refusals, timeouts: dp_failures) into the born
 * flows' life, while their application ends write, read and close.
 *
 * And the sessions (sessions.c): clients of a real SOCK_SEQPACKET listener the loop
 * accepts ask with well-formed, mutated, random or late requests, or none, and leave
 * before or after the answer; C answers the connects it may (a policy, routes that come
 * and go, ports held and let go) on the active side's 4-tuples, and the rest wait for
 * Python, which here closes them.
 *
 * usage: dataplane_fuzz ITERATIONS SEED ; prints "ok <rounds> <fast> <declined>".
 */
#define _GNU_SOURCE /* accept4 */
#include "wire.c"
#include "isn.c"
#include "capture.c"
#include "dataplane.c"
#include "chanapp.c" /* compiled under the sanitizers too (their tests: test_channels.py) */
#include "hub.c"

#include <sanitizer/asan_interface.h>
#include <signal.h>
#include <stdio.h>

#define FLOWS 16
#define BORN_FLOWS 16              /* room for flows born in C, beside the FLOWS */
#define BORN_PORT 9090
#define BORN_PEERS 40              /* 4-tuples the born side's frames come from */
#define BORN_APPS 32               /* accepted application ends the driver holds */
#define ACTIVE_PEERS 6             /* active opens: local ports ACTIVE_LPORT + k */
#define ACTIVE_LPORT 45000
#define ACTIVE_RPORT 7000
#define SESSION_CLIENTS 8          /* sessions the driver holds open at once */
#define SLOTS 64
#define SLOT_SIZE 2048

#include "fuzz_rng.h"

/* The fuzz port: a FIFO of frames, each in a slot poisoned past its length. */
struct fuzzport {
    uint8_t *slab;
    uint32_t lens[SLOTS];
    uint32_t head, count, held;
    uint64_t produced, consumed; /* frames placed and completed: completion lags at random */
};

static int fz_rx(void *ctx, struct dp_desc *out, uint32_t max, int timeout_ms)
{
    (void)timeout_ms;
    struct fuzzport *p = ctx;
    uint32_t n = p->count < max ? p->count : max;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t s = (p->head + i) % SLOTS;
        out[i].addr = (uint64_t)s * SLOT_SIZE;
        out[i].len = p->lens[s];
        out[i].options = 0;
    }
    p->held = n;
    return (int)n;
}

static int fz_release(void *ctx, const struct dp_desc *d, uint32_t n)
{
    (void)d;
    struct fuzzport *p = ctx;
    n = n < p->held ? n : p->held;
    p->head = (p->head + n) % SLOTS;
    p->count -= n;
    p->held = 0;
    return (int)n;
}

static uint64_t transmitted;

static int fz_tx(void *ctx, uint8_t *umem, uint64_t off, const uint8_t *src,
                 const uint64_t *offs, const uint32_t *lens, uint32_t n, int kick)
{
    struct fuzzport *p = ctx;
    (void)umem;
    (void)off;
    (void)kick;
    /* A NIC that is sometimes full: it takes a prefix (maybe none) and the data plane
     * must keep the rest, in order, for a later round. */
    if (rnd() % 4 == 0)
        n = (uint32_t)(rnd() % (n + 1));
    for (uint32_t i = 0; i < n; i++) {
        /* Every built frame must parse as one of ours (what the peer would get). */
        struct wire_parsed r;
        struct wire_addr6 a6;
        uint64_t zero = 0;
        uint32_t len = lens[i];
        if (wire_parse_batch6(src + offs[i], &zero, &len, 1, 1, &r, &a6) != 1) {
            fprintf(stderr, "built an unparseable frame (reason %u)\n", r.reason);
            abort();
        }
        transmitted++;
    }
    p->produced += n;
    return (int)n;
}

/* The GSO socket's datagrams: each a virtio-net header the kernel would accept (the
 * checks of virtio_net_hdr_to_skb and tcp_gso_segment) before a frame of ours whose
 * headers parse once its checksum is completed (the payload is not checked: it is the
 * send ring's, which the peer frames never saw). Some rounds leave them unread, so the
 * socket fills and the data plane falls back to frames. */
static uint64_t gso_datagrams;

static void drain_gso(int fd)
{
    static uint8_t d[70000];
    ssize_t n;
    while ((n = recv(fd, d, sizeof d, MSG_DONTWAIT)) > 0) {
        struct wire_vnet_hdr v;
        memcpy(&v, d, sizeof v);
        uint8_t *f = d + sizeof v;
        uint32_t len = (uint32_t)n - (uint32_t)sizeof v;
        uint32_t payload = len - v.hdr_len;
        if ((size_t)n < sizeof v + 54 || v.flags != WIRE_VNET_NEEDS_CSUM ||
            v.csum_offset != 16 || v.csum_start + 20u > v.hdr_len || v.hdr_len > len ||
            len > 65535 + 14 + 40 ||
            (v.gso_type != 0 && v.gso_type != WIRE_VNET_GSO_TCPV4 &&
             v.gso_type != WIRE_VNET_GSO_TCPV6) ||
            (v.gso_type && (v.gso_size == 0 || payload <= v.gso_size)) ||
            (!v.gso_type && v.gso_size != 0)) {
            fprintf(stderr, "GSO datagram with a bad virtio-net header\n");
            abort();
        }
        /* Complete the checksum as the kernel would, then parse it whole. */
        uint16_t sum = (uint16_t)~wire_ones_sum(f + v.csum_start, len - v.csum_start, 0);
        f[v.csum_start + v.csum_offset] = (uint8_t)(sum >> 8); /* big-endian, as returned */
        f[v.csum_start + v.csum_offset + 1] = (uint8_t)sum;
        struct wire_parsed r;
        struct wire_addr6 a6;
        uint64_t zero = 0;
        int parsed = wire_parse_batch6(f, &zero, &len, 1, 1, &r, &a6) == 1;
        /* A super-segment's GSO type names its family (tcp_gso_segment's check). */
        int family_ok = v.gso_type == 0 || (v.gso_type == WIRE_VNET_GSO_TCPV6) == (r.family == 6);
        if (!parsed || r.payload_len != payload || !family_ok) {
            fprintf(stderr, "GSO datagram does not parse (reason %u)\n", r.reason);
            abort();
        }
        gso_datagrams++;
    }
}

static int fz_kick(void *ctx)
{
    (void)ctx;
    return 0;
}

static void push(struct fuzzport *p, const uint8_t *frame, uint32_t len)
{
    if (p->count == SLOTS || len > SLOT_SIZE)
        return;
    uint32_t s = (p->head + p->count) % SLOTS;
    uint8_t *slot = p->slab + (size_t)s * SLOT_SIZE;
    ASAN_UNPOISON_MEMORY_REGION(slot, SLOT_SIZE);
    memcpy(slot, frame, len);
    ASAN_POISON_MEMORY_REGION(slot + len, SLOT_SIZE - len);
    p->lens[s] = len;
    p->count++;
}

struct fuzzflow {
    int64_t handle;
    int app;                   /* the application's end (-1: closed) */
    int ours;                  /* the service's end, given to the data plane */
    struct dp_tcb t;
};

static void make_tcb(struct dp_tcb *t, uint32_t k, int fd)
{
    memset(t, 0, sizeof *t);
    if (k % 2) { /* every other flow IPv6: 2001:db8::1 and 2001:db8::2:k */
        static const uint8_t prefix[4] = {0x20, 0x01, 0x0d, 0xb8};
        t->ipv6 = 1;
        memcpy(t->local_ip, prefix, 4);
        memcpy(t->remote_ip, prefix, 4);
        t->local_ip[15] = 1;
        t->remote_ip[13] = 2;
        t->remote_ip[15] = (uint8_t)k;
    } else {
        const uint8_t lip[4] = {10, 0, 0, 1}, rip[4] = {10, 0, 0, (uint8_t)(2 + k)};
        memcpy(t->local_ip, lip, 4);
        memcpy(t->remote_ip, rip, 4);
    }
    t->local_port = 8080;
    t->remote_port = (uint16_t)(40000 + k);
    t->rcv_nxt = (uint32_t)rnd();
    t->rcv_adv = t->rcv_nxt + 65535;
    t->last_ack_rcv_nxt = t->last_ack_sent = t->rcv_nxt;
    t->ts_recent = (uint32_t)rnd();
    t->rcv_mss = 536 + (uint32_t)(rnd() % 913);
    t->cfg_mss = 1460;
    t->rcv_cap = 1024u << (rnd() % 7);
    t->rcv_slack = 127;
    t->rcv_max = t->rcv_cap << (rnd() % 4); /* autotuning room, sometimes none */
    t->rcv_epoch_start = -1.0;
    t->rcv_shift = (uint8_t)(rnd() % 15);
    t->snd_shift = (uint8_t)(rnd() % 15);
    t->ts_ok = (uint8_t)(rnd() & 1);
    t->sack_ok = (uint8_t)(rnd() & 1);
    t->dupthresh = 3;
    t->reo_wnd_mult = 1;
    t->reordering_seen = (uint8_t)(rnd() & 1);
    t->rack_xmit_ts = t->rack_min_rtt = -1.0;
    t->nodelay = (uint8_t)(rnd() & 1);
    t->snd_una = t->snd_nxt = (uint32_t)rnd();
    t->snd_wnd = t->max_snd_wnd = (uint32_t)(rnd() % 200000);
    t->snd_wl1 = t->rcv_nxt;
    t->snd_wl2 = t->snd_una;
    t->smss = 88 + (uint32_t)(rnd() % 1361);
    t->snd_cap = 1024u << (rnd() % 8);
    t->ts_offset = (uint32_t)rnd();
    t->srtt = (rnd() & 1) ? -1.0 : 0.001;
    t->rttvar = 0.0005;
    t->base_rto = 1.0;
    t->min_rto = 0.2;
    t->max_rto = 60.0;
    t->rto_granularity = 0.001;
    t->cc_kind = (uint32_t)(rnd() & 1);
    t->cwnd = t->cc_iw = 14600;
    t->ssthresh = (rnd() & 1) ? 0x7FFFFFFF : 20000;
    t->abc_limit = 2;
    t->cc_pristine = 1;
    t->cubic_epoch_start = -1;
    t->cubic_last_rtt = -1;
    hystart_reset(t);
    t->delack_timeout = 0.04;
    t->keepalive_idle = (rnd() & 1) ? 5.0 : 0.0;
    t->app_fd = fd;
}

static void adopt(struct dp *dp, struct fuzzflow *ff, uint32_t k)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        abort();
    ff->ours = sv[0];
    ff->app = sv[1];
    make_tcb(&ff->t, k, ff->ours);
    uint8_t bytes[4096];
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)rnd();
    uint32_t snd = (uint32_t)(rnd() % (ff->t.snd_cap < 4096 ? ff->t.snd_cap : 4096));
    uint32_t rcv = (uint32_t)(rnd() % (ff->t.rcv_cap < 4096 ? ff->t.rcv_cap : 4096));
    if (rnd() % 4 == 0) {
        /* Python gives some flows back holding out-of-order data: up to three ranges
         * above the in-order bytes, inside the ring, their bytes after those. */
        uint32_t at = ff->t.rcv_nxt, extent = rcv, held = 0, n = (uint32_t)(rnd() % 4);
        uint32_t cap = ff->t.rcv_cap + ff->t.rcv_slack;
        ff->t.ooo_count = 0;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t gap = 1 + (uint32_t)(rnd() % 600), len = 1 + (uint32_t)(rnd() % 600);
            if (extent + gap + len > cap || rcv + held + len > sizeof bytes)
                break;
            struct dp_ooo *r = &ff->t.ooo[ff->t.ooo_count++];
            r->start = at + gap;
            r->end = r->start + len;
            r->stamp = (uint32_t)(rnd() % 3) + 1; /* ties allowed: order among them is free */
            at = r->end;
            extent += gap + len;
            held += len;
        }
        ff->t.ooo_clock = 3;
        rcv += held;
    }
    ff->handle = dp_flow_adopt(dp, &ff->t, bytes, rcv, bytes, snd);
    if (ff->handle > 0 && ff->t.ooo_count && rnd() % 2 == 0) {
        /* What C took comes back as it was given: the in-order bytes, then each held
         * range's, packed (dp_flow_release); then the flow is adopted again. */
        static uint8_t back[1 << 18], sback[1 << 18];
        struct dp_tcb out;
        if (dp_flow_release(dp, ff->handle, &out, back, sizeof back, sback, sizeof sback) != 0 ||
            out.ooo_count != ff->t.ooo_count || memcmp(back, bytes, rcv) != 0 ||
            memcmp(sback, bytes, snd) != 0) {
            fprintf(stderr, "adopted bytes did not come back intact\n");
            abort();
        }
        ff->handle = dp_flow_adopt(dp, &ff->t, bytes, rcv, bytes, snd);
    }
    if (ff->handle <= 0) {
        fprintf(stderr, "adopt failed: %lld\n", (long long)ff->handle);
        abort();
    }
}

static void release(struct dp *dp, struct fuzzflow *ff)
{
    static uint8_t rcv[1 << 18], snd[1 << 18];
    struct dp_tcb out;
    if (dp_flow_release(dp, ff->handle, &out, rcv, sizeof rcv, snd, sizeof snd) != 0) {
        fprintf(stderr, "release of a live handle failed\n");
        abort();
    }
    /* The handle is stale now: every entry point must refuse it. */
    if (dp_flow_release(dp, ff->handle, &out, rcv, sizeof rcv, snd, sizeof snd) != -EBADF ||
        dp_flow_rcv_len(dp, ff->handle) != -EBADF || dp_flow_peek(dp, ff->handle, &out) != -EBADF)
        abort();
    close(ff->ours);
    if (ff->app >= 0)
        close(ff->app);
}

/* Every flow's out-of-order ranges after a round: sorted, disjoint and not touching,
 * above RCV.NXT and inside the ring, whose held region ends at the last one. */
static void check_ooo(const struct dp *dp)
{
    for (uint32_t k = 0; k < dp->n_live; k++) {
        const struct flow *f = &dp->flows[dp->live[k]];
        const struct dp_tcb *t = &f->t;
        if (t->ooo_count > DP_OOO_RANGES)
            abort();
        uint32_t prev = t->rcv_nxt;
        for (uint32_t i = 0; i < t->ooo_count; i++) {
            const struct dp_ooo *r = &t->ooo[i];
            if (sdiff(r->start, prev) <= 0 || sdiff(r->end, r->start) <= 0 ||
                r->stamp == 0 || r->stamp > t->ooo_clock)
                abort();
            prev = r->end;
        }
        uint32_t hold = t->ooo_count ? prev - t->rcv_nxt : 0;
        if (f->rcv.hold != hold || (uint64_t)f->rcv.len + hold > f->rcv.cap ||
            (hold && (uint64_t)f->rcv.len + hold > f->rcv.size))
            abort();
    }
}

/* Frame s from template tm into out, with a random payload: its length (0: none). */
static uint32_t build_frame(const struct wire_template *tm, struct wire_seg *s, uint8_t *out)
{
    static uint8_t payload[2048];
    for (uint32_t i = 0; i < s->payload_len; i++)
        payload[i] = (uint8_t)rnd();
    uint64_t off = 0;
    uint32_t cap = SLOT_SIZE, len = 0;
    wire_build_batch(tm, s, 1, payload, out, &off, &cap, &len);
    return len;
}

/* The frame template of a peer at rip:sport sending to lip:dport (16-byte addresses). */
static void toward(struct wire_template *tm, const uint8_t *rip, const uint8_t *lip, int ipv6,
                   uint16_t sport, uint16_t dport)
{
    memset(tm, 0, sizeof *tm);
    memcpy(tm->src_ip, rip, 16);
    memcpy(tm->dst_ip, lip, 16);
    tm->ipv6 = (uint8_t)ipv6;
    tm->src_port = sport;
    tm->dst_port = dport;
    tm->ttl = 64;
}

/* A frame from flow k's peer: mostly plausible, sometimes anything. */
static uint32_t peer_frame(struct dp *dp, const struct fuzzflow *ff, uint8_t *out)
{
    struct dp_tcb now;
    const struct dp_tcb *t = &ff->t;
    if (dp_flow_peek(dp, ff->handle, &now) == 0)
        t = &now;
    struct wire_template tm;
    toward(&tm, t->remote_ip, t->local_ip, t->ipv6, t->remote_port, t->local_port);
    struct wire_seg s;
    memset(&s, 0, sizeof s);
    uint32_t r = (uint32_t)rnd();
    s.seq = t->rcv_nxt + ((r & 3) ? 0 : (uint32_t)(rnd() % 5000) - 2500);
    s.ack = t->snd_una + (uint32_t)(rnd() % (t->snd_nxt - t->snd_una + 2));
    if ((r >> 2 & 7) == 0)
        s.ack = (uint32_t)rnd();
    s.window = (uint16_t)rnd();
    s.flags = (r >> 5 & 7) ? 0x10 | (r >> 8 & 0x08) : (uint8_t)rnd();
    s.has_ts = (r >> 9 & 3) ? t->ts_ok : !t->ts_ok;
    s.tsval = t->ts_recent + (uint32_t)(rnd() % 100) - 10;
    s.tsecr = (uint32_t)rnd();
    s.payload_len = (r >> 11 & 1) ? 0 : (uint32_t)(rnd() % 1449);
    if ((r >> 12 & 15) == 0) {
        s.sack_count = (uint8_t)(rnd() % 4);
        for (int i = 0; i < 8; i++)
            s.sack[i] = t->snd_una + (uint32_t)(rnd() % 10000);
    }
    if ((r >> 16 & 3) == 0 || (t->ooo_count && (r >> 16 & 3) != 3)) {
        /* Plausible data at or past RCV.NXT, so that a flow holds out-of-order data for
         * a while: */
        s.flags = 0x10;
        s.has_ts = t->ts_ok;
        s.tsval = t->ts_recent;
        s.ack = t->snd_una;
        s.sack_count = 0;
        s.seq = t->rcv_nxt + (uint32_t)(rnd() % 6000);
        s.payload_len = (uint32_t)(1 + rnd() % 1448);
    }
    if (t->ooo_count && (r >> 16 & 3) != 3 && (r >> 19 & 1)) {
        /* ... and around held data: the hole's filling (exactly, or past it), a
         * segment that touches a range's end or start, or one that overlaps it. */
        const struct dp_ooo *o = &t->ooo[rnd() % t->ooo_count];
        uint32_t which = (uint32_t)(rnd() % 4);
        uint32_t gap = t->ooo[0].start - t->rcv_nxt;
        s.seq = which == 0 ? t->rcv_nxt : which == 1 ? o->end
                : which == 2 ? o->start - (uint32_t)(1 + rnd() % 1448) : o->start + 1;
        s.payload_len = which == 0 && (r >> 18 & 1) ? (gap < 1448 ? gap : 1448)
                        : which == 2 ? o->start - s.seq : (uint32_t)(1 + rnd() % 1448);
    }
    return build_frame(&tm, &s, out);
}

static uint64_t born6_known; /* frames toward an IPv6 flow born in C: they were born */

/* A segment near what C holds of the flow t (r: random bits): at RCV.NXT or off it,
 * acknowledging up to one past SND.NXT, an ACK (with FIN or PSH) or any flags now and
 * then, with or without payload. */
static void near_flow(struct wire_seg *s, const struct dp_tcb *t, uint32_t r)
{
    s->seq = t->rcv_nxt + ((r >> 6 & 3) ? 0 : (uint32_t)(rnd() % 5000) - 2500);
    s->ack = t->snd_una + (uint32_t)(rnd() % (t->snd_nxt - t->snd_una + 2));
    s->flags = (r >> 8 & 7) ? 0x10 | (r >> 11 & 0x09) : (uint8_t)rnd();
}

/* A frame toward BORN_PORT from peer k (every other peer over IPv6): a SYN, or a
 * segment near the flow C holds for that 4-tuple (if any), with any flags now and then. */
static uint32_t born_frame(struct dp *dp, uint32_t k, uint8_t *out)
{
    uint8_t lip[16] = {10, 0, 0, 1}, rip[16] = {10, 0, 0, (uint8_t)(3 + k % 4)};
    int ipv6 = k & 1;
    if (ipv6) { /* 2001:db8::1 and 2001:db8::<3..6> */
        const uint8_t prefix[4] = {0x20, 0x01, 0x0d, 0xb8};
        memset(lip, 0, 16);
        memset(rip, 0, 16);
        memcpy(lip, prefix, 4);
        memcpy(rip, prefix, 4);
        lip[15] = 1;
        rip[15] = (uint8_t)(3 + k % 4);
    }
    uint16_t rport = (uint16_t)(50000 + k);
    struct dp_tcb t;
    memset(&t, 0, sizeof t);
    int64_t h = dp_flow_find(dp, lip, BORN_PORT, rip, rport, ipv6 ? 16 : 4);
    int known = h > 0 && dp_flow_peek(dp, h, &t) == 0;
    born6_known += known && ipv6;
    struct wire_template tm;
    toward(&tm, rip, lip, ipv6, rport, BORN_PORT);
    tm.src_mac[5] = (uint8_t)k;
    struct wire_seg s;
    memset(&s, 0, sizeof s);
    uint32_t r = (uint32_t)rnd();
    s.window = (uint16_t)rnd();
    s.has_ts = (r & 3) != 0;
    s.tsval = (known ? t.ts_recent : 1000) + (uint32_t)(rnd() % 100) - 10;
    s.tsecr = (uint32_t)rnd();
    if (!known || (r >> 2 & 15) == 0) {
        s.flags = 0x02; /* SYN, with whatever options */
        s.seq = known && (r & 16) ? t.irs : (uint32_t)rnd();
        s.syn_opts = (uint8_t)(rnd() & 7);
        s.mss = (uint16_t)(rnd() % 2000);
        s.wscale = (uint8_t)(rnd() % 20);
    } else {
        near_flow(&s, &t, r);
        if ((r >> 12 & 15) == 0)
            s.flags = 0x04; /* RST */
        s.payload_len = (r >> 16 & 1) ? 0 : (uint32_t)(rnd() % 1449);
    }
    if (s.flags & 0x02 && s.payload_len)
        s.payload_len = 0;
    return build_frame(&tm, &s, out);
}

/* Active open k's addresses (every other one IPv6), 16-byte form. */
static void active_addrs(uint32_t k, uint8_t lip[16], uint8_t rip[16])
{
    memset(lip, 0, 16);
    memset(rip, 0, 16);
    if (k & 1) { /* 2001:db8::1 and 2001:db8::9 */
        const uint8_t prefix[4] = {0x20, 0x01, 0x0d, 0xb8};
        memcpy(lip, prefix, 4);
        memcpy(rip, prefix, 4);
        lip[15] = 1;
        rip[15] = 9;
    } else {
        lip[0] = rip[0] = 10;
        lip[3] = 1;
        rip[3] = 9;
    }
}

/* What a connect to active peer k's family offers (dp_connect_cfg), its 4-tuple
 * aside: the active side's opens and the sessions' policy. */
static void active_cfg(struct dp_connect_cfg *cfg, uint32_t k)
{
    memset(cfg, 0, sizeof *cfg);
    make_tcb(&cfg->tcb, 0, -1);
    struct dp_tcb *t = &cfg->tcb;
    active_addrs(k, t->local_ip, t->remote_ip);
    t->ipv6 = (uint8_t)(k & 1);
    t->remote_port = ACTIVE_RPORT;
    t->keepalive_idle = 0;
    t->srtt = -1;
    cfg->max_syn_retries = 2;
    cfg->offer.default_peer_mss = 536;
    cfg->offer.min_peer_mss = 88;
    cfg->offer.window_scaling = cfg->offer.timestamps = cfg->offer.sack = (uint8_t)(rnd() & 1);
    cfg->offer.window_scale_shift = 7;
    cfg->claim_wait_ms = 100;
}

/* A connect C runs (dp_connect), its application's end in *app; -errno from C. */
static int64_t active_open(struct dp *dp, uint32_t k, int *app, double now)
{
    struct dp_connect_cfg cfg;
    active_cfg(&cfg, k);
    struct dp_tcb *t = &cfg.tcb;
    t->local_port = (uint16_t)(ACTIVE_LPORT + k);
    t->iss = (uint32_t)rnd();
    t->claim_check = t->claim_wait = (uint8_t)(rnd() & 1);
    int32_t end;
    int64_t h = dp_connect(dp, &cfg, now, &end);
    if (h < 0)
        return h;
    if (fcntl(end, F_SETFL, O_NONBLOCK) != 0)
        abort();
    *app = end;
    return h;
}

/* The sessions' listener (a SOCK_SEQPACKET socket in the abstract namespace), watched
 * by the loop, and a policy under which C answers connects to the active peers from
 * the active side's ports. */
static int sessions_setup(struct dp *dp)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int n = snprintf(sun.sun_path + 1, sizeof sun.sun_path - 1, "jr-fuzz-sessions-%d",
                     (int)getpid());
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)) != 0 ||
        listen(fd, SESSION_CLIENTS) != 0 || dp_sessions_listen(dp, fd) != 0)
        abort();
    struct dp_connect_policy policy;
    memset(&policy, 0, sizeof policy);
    active_cfg(&policy.v4, 0);
    active_cfg(&policy.v6, 1);
    for (size_t i = 0; i < sizeof policy.isn_key; i++)
        policy.isn_key[i] = policy.ts_key[i] = (uint8_t)rnd();
    policy.port_lo = ACTIVE_LPORT;
    policy.port_hi = ACTIVE_LPORT + ACTIVE_PEERS - 1;
    policy.gid = -1;
    policy.channels = (uint8_t)(rnd() & 1);
    if (dp_connect_policy(dp, &policy) != 0)
        abort();
    return fd;
}

/* A route to each active peer (both families), some already expired. */
static void sessions_routes(struct dp *dp, double now)
{
    static const uint8_t mac[6] = {2, 0, 0, 0, 0, 9};
    for (uint32_t k = 0; k < 2; k++) {
        uint8_t lip[16], rip[16];
        active_addrs(k, lip, rip);
        uint32_t len = k ? 16 : 4;
        if (dp_connect_route(dp, rip, len, lip, mac, now + (rnd() % 4 ? 1e9 : -1.0)) != 0)
            abort();
    }
}

/* A session's request: a non-blocking connect to an active peer (ring mode asked or
 * not), mutated or not, or random bytes. Its length. */
static uint32_t session_request(uint8_t *out)
{
    uint32_t how = (uint32_t)(rnd() % 8);
    if (how == 0) {
        uint32_t len = (uint32_t)(rnd() % (DP_REQUEST_BYTES + 2));
        for (uint32_t i = 0; i < len; i++)
            out[i] = (uint8_t)rnd();
        return len;
    }
    uint32_t k = (uint32_t)(rnd() & 1);
    uint8_t lip[16], rip[16];
    active_addrs(k, lip, rip);
    struct jr_request q = {.op = JR_OP_CONNECT,
                           .flags = (uint16_t)(JR_FLAG_NONBLOCK |
                                               (rnd() & 1 ? JR_FLAG_CHANNELS : 0)),
                           .family = k ? AF_INET6 : AF_INET, .port = ACTIVE_RPORT};
    memcpy(q.magic, JR_MAGIC, 4);
    memcpy(q.ip, rip, 16);
    memcpy(out, &q, sizeof q);
    if (how == 1)
        out[rnd() % sizeof q] ^= (uint8_t)(1u << (rnd() % 8));
    return sizeof q;
}

/* One step of session client c: ask (now or later), or take the answer and leave, or
 * leave without it. */
static void session_step(int lfd, int *client, uint8_t *buf)
{
    if (*client < 0) {
        struct sockaddr_un sun;
        socklen_t sl = sizeof sun;
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || getsockname(lfd, (struct sockaddr *)&sun, &sl) != 0)
            abort();
        if (connect(fd, (struct sockaddr *)&sun, sl) != 0) {
            close(fd); /* the backlog is full */
            return;
        }
        *client = fd;
        if (rnd() % 4 != 0)
            (void)!send(fd, buf, session_request(buf), MSG_NOSIGNAL);
        return;
    }
    uint32_t what = (uint32_t)(rnd() % 4);
    if (what == 0) {
        (void)!send(*client, buf, session_request(buf), MSG_NOSIGNAL); /* late, or twice */
        return;
    }
    if (what == 1) {
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int))];
        } ctl;
        struct iovec iov = {.iov_base = buf, .iov_len = 512};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                             .msg_controllen = sizeof ctl.buf};
        if (recvmsg(*client, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) < 0)
            return; /* no answer yet */
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_type == SCM_RIGHTS) {
                int fd;
                memcpy(&fd, CMSG_DATA(c), sizeof fd);
                if (rnd() & 1)
                    (void)!write(fd, buf, (size_t)(rnd() % 2000)); /* then it leaves */
                close(fd);
            }
        }
    }
    close(*client);
    *client = -1;
}

/* A frame toward active open k from its peer: a SYN-ACK (acknowledging the SYN, or
 * not), a RST, or a segment near what C holds, with any flags now and then. */
static uint32_t active_frame(struct dp *dp, uint32_t k, uint8_t *out)
{
    uint8_t lip[16], rip[16];
    active_addrs(k, lip, rip);
    int ipv6 = k & 1;
    struct dp_tcb t;
    memset(&t, 0, sizeof t);
    int64_t h = dp_flow_find(dp, lip, (uint16_t)(ACTIVE_LPORT + k), rip, ACTIVE_RPORT,
                             ipv6 ? 16 : 4);
    int known = h > 0 && dp_flow_peek(dp, h, &t) == 0;
    struct wire_template tm;
    toward(&tm, rip, lip, ipv6, ACTIVE_RPORT, (uint16_t)(ACTIVE_LPORT + k));
    struct wire_seg s;
    memset(&s, 0, sizeof s);
    uint32_t r = (uint32_t)rnd();
    s.window = (uint16_t)rnd();
    s.has_ts = (r & 3) != 0;
    s.tsval = (uint32_t)rnd();
    s.tsecr = (uint32_t)rnd();
    if (known && t.tcp_state == DP_SYN_SENT) {
        s.seq = (uint32_t)rnd();
        s.ack = (r >> 2 & 3) ? t.iss + 1 : (uint32_t)rnd();
        s.flags = (r >> 4 & 7) ? 0x12 : (r >> 7 & 1) ? 0x14 : (uint8_t)rnd(); /* SYN-ACK, RST */
        s.syn_opts = (uint8_t)(rnd() & 7);
        s.mss = (uint16_t)(rnd() % 2000);
        s.wscale = (uint8_t)(rnd() % 20);
    } else if (known) {
        near_flow(&s, &t, r);
        s.payload_len = (r >> 16 & 1) ? 0 : (uint32_t)(rnd() % 1449);
    } else {
        s.seq = (uint32_t)rnd();
        s.ack = (uint32_t)rnd();
        s.flags = (uint8_t)rnd();
    }
    if (s.flags & 0x02 && s.payload_len)
        s.payload_len = 0;
    return build_frame(&tm, &s, out);
}

/* The unix listener born flows are delivered to (an abstract name of this process). */
static int born_listener(struct dp *dp)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int n = snprintf(sun.sun_path + 1, sizeof sun.sun_path - 1, "joyride-fuzz/%d", (int)getpid());
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)) < 0 ||
        listen(fd, 4) < 0)
        abort();
    struct dp_listen_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.port = BORN_PORT;
    cfg.n_names = 1;
    cfg.syn_backlog = 6;
    cfg.ts_offset = 12345;
    cfg.max_syn_retries = 2;
    cfg.default_peer_mss = 536;
    cfg.min_peer_mss = 88;
    cfg.window_scaling = cfg.timestamps = cfg.sack = 1;
    cfg.window_scale_shift = 7;
    cfg.time_wait = 5.0;
    cfg.fin_wait2_timeout = 3.0;
    make_tcb(&cfg.tmpl, 0, -1);
    cfg.tmpl.keepalive_idle = 0;
    cfg.tmpl.srtt = -1;
    cfg.tmpl6 = cfg.tmpl;
    cfg.tmpl6.cfg_mss -= 20; /* TcpConfig.for_address: IPv6's header is 20 bytes longer */
    cfg.takes4 = cfg.takes6 = 1;
    cfg.mapped = (uint16_t)(rnd() & 1); /* either naming of IPv4 connections, by seed */
    memcpy(cfg.names[0], sun.sun_path + 1, (size_t)n);
    if (dp_listen(dp, &cfg) != 0)
        abort();
    return fd;
}

int main(int argc, char **argv)
{
    long iterations = argc > 1 ? atol(argv[1]) : 10000;
    signal(SIGPIPE, SIG_IGN); /* the driver writes to ends it shut down, on purpose */
    rng_state = argc > 2 ? (uint64_t)atoll(argv[2]) * 0x9E3779B97F4A7C15ULL + 1 : 1;
    struct dp_config cfg = {.max_flows = FLOWS + BORN_FLOWS, .batch = 32, .max_frame = SLOT_SIZE,
                            .decline_frames = 64, .verify_checksums = 1, .ttl = 64,
                            .rx_batches = 4};
    struct dp *dp = dp_new(&cfg);
    struct fuzzport fp = {.slab = malloc((size_t)SLOTS * SLOT_SIZE)};
    if (!dp || !fp.slab) {
        fprintf(stderr, "dataplane_fuzz: setup failed (dp_new refused the config?)\n");
        free(fp.slab);
        if (dp)
            dp_free(dp);
        return 1;
    }
    ASAN_POISON_MEMORY_REGION(fp.slab, (size_t)SLOTS * SLOT_SIZE);
    struct dp_port port = {.ctx = &fp, .fd = -1, .room_fd = -1, .umem = fp.slab,
                           .rx = (void *)fz_rx, .release = (void *)fz_release,
                           .tx_copy = (void *)fz_tx, .kick = (void *)fz_kick,
                           .tx_placed = &fp.produced, .tx_completed = &fp.consumed};
    if (dp_add_port(dp, &port) != 0)
        return 1;
    int gso[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, gso) != 0)
        return 1;
    dp_set_gso(dp, gso[1]);
    uint32_t gso_stall = 0;
    struct fuzzflow flows[FLOWS];
    for (uint32_t k = 0; k < FLOWS; k++)
        adopt(dp, &flows[k], k);
    int lfd = born_listener(dp);
    /* Learnt path MSS for two of the born side's peers (one per family): their
     * connections are born with the smaller MSS (syn_path_mss). */
    const uint8_t narrow4[4] = {10, 0, 0, 3};
    uint8_t narrow6[16] = {0x20, 0x01, 0x0d, 0xb8};
    narrow6[15] = 4;
    if (dp_path_mss(dp, narrow4, 4, 700, 1e12) != 0 || dp_path_mss(dp, narrow6, 16, 1240, 1e12) != 0)
        return 1;
    int apps[BORN_APPS];
    for (int i = 0; i < BORN_APPS; i++)
        apps[i] = -1;
    int active_apps[ACTIVE_PEERS];
    for (int i = 0; i < ACTIVE_PEERS; i++)
        active_apps[i] = -1;
    double now = 100.0;
    int sessions_fd = sessions_setup(dp);
    sessions_routes(dp, now);
    int clients[SESSION_CLIENTS];
    for (int i = 0; i < SESSION_CLIENTS; i++)
        clients[i] = -1;
    uint64_t python_sessions = 0, held_ports = 0;
    uint64_t active_failures = 0;
    uint8_t frame[SLOT_SIZE], buf[65536];
    int64_t handles[FLOWS * 2];
    uint64_t rounds = 0;
    for (long it = 0; it < iterations; it++) {
        uint32_t k = (uint32_t)(rnd() % FLOWS);
        struct fuzzflow *ff = &flows[k];
        uint32_t what = (uint32_t)(rnd() % 100);
        if (rnd() % 12 == 0) {
            /* The sessions: a client's step, the routes told again (or not), a port
             * the control plane takes or lets go. */
            uint32_t b = (uint32_t)(rnd() % 16);
            if (b < 12) {
                session_step(sessions_fd, &clients[rnd() % SESSION_CLIENTS], buf);
            } else if (b == 12) {
                if (rnd() & 1)
                    dp_connect_routes_clear(dp);
                sessions_routes(dp, now);
            } else {
                uint16_t p = (uint16_t)(ACTIVE_LPORT + rnd() % ACTIVE_PEERS);
                int delta = held_ports >> (p - ACTIVE_LPORT) & 1 ? -1 : 1;
                if (dp_port_hold(dp, p, delta) != 0)
                    abort();
                held_ports ^= 1ull << (p - ACTIVE_LPORT);
            }
            what = 100;
        } else if (rnd() % 4 == 0) {
            /* The active side: a connect, a frame from its peer, or its application. */
            uint32_t a = (uint32_t)(rnd() % ACTIVE_PEERS), b = (uint32_t)(rnd() % 8);
            if (b < 4) {
                uint32_t len = active_frame(dp, a, frame);
                if (len && rnd() % 8 == 0)
                    frame[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
                push(&fp, frame, len);
            } else if (active_apps[a] < 0) {
                (void)active_open(dp, a, &active_apps[a], now);
            } else if (b == 4) {
                (void)!write(active_apps[a], buf, (size_t)(rnd() % 3000));
            } else if (b == 5) {
                (void)!read(active_apps[a], buf, sizeof buf);
            } else if (b == 6) {
                shutdown(active_apps[a], SHUT_WR);
            } else {
                close(active_apps[a]);
                active_apps[a] = -1;
            }
            struct dp_failure failed[4];
            active_failures += dp_failures(dp, failed, 4);
            what = 100;
        } else if (rnd() % 3 == 0) {
            /* The born side: a frame, or the application accepting, talking, closing. */
            uint32_t b = (uint32_t)(rnd() % 8), a = (uint32_t)(rnd() % BORN_APPS);
            if (b < 5) {
                uint32_t len = born_frame(dp, (uint32_t)(rnd() % BORN_PEERS), frame);
                if (len && rnd() % 8 == 0)
                    frame[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
                push(&fp, frame, len);
            } else if (apps[a] < 0) {
                apps[a] = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
            } else if (b == 5) {
                (void)!write(apps[a], buf, (size_t)(rnd() % 3000));
            } else if (b == 6) {
                (void)!read(apps[a], buf, sizeof buf);
            } else if (rnd() & 1) {
                shutdown(apps[a], SHUT_WR);
            } else {
                close(apps[a]);
                apps[a] = -1;
            }
            what = 100; /* nothing else this iteration */
        }
        if (what < 60) {
            uint32_t len = peer_frame(dp, ff, frame);
            if (len && rnd() % 4 == 0)
                frame[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8)); /* then mostly declined */
            if (len && rnd() % 8 == 0)
                len = (uint32_t)(rnd() % len); /* truncated */
            push(&fp, frame, len);
        } else if (what < 65) {
            uint32_t len = (uint32_t)(rnd() % 200);
            for (uint32_t i = 0; i < len; i++)
                frame[i] = (uint8_t)rnd();
            push(&fp, frame, len);
        } else if (what < 80 && ff->app >= 0) {
            uint32_t n = (uint32_t)(rnd() % sizeof buf);
            for (uint32_t i = 0; i < n; i++)
                buf[i] = (uint8_t)rnd();
            (void)!write(ff->app, buf, n);
        } else if (what < 90 && ff->app >= 0) {
            (void)!read(ff->app, buf, sizeof buf);
        } else if (what < 92 && ff->app >= 0) {
            if (rnd() & 1) {
                shutdown(ff->app, SHUT_WR); /* the application's EOF */
            } else {
                close(ff->app); /* the application vanishes */
                ff->app = -1;
            }
        } else if (what < 95) {
            now += (double)(rnd() % 3000) / 1000.0; /* timers fire */
        } else {
            /* Python takes the flow back (or it was handed back) and a new one comes. */
            release(dp, ff);
            adopt(dp, ff, k + FLOWS * (uint32_t)(rnd() % 1000));
        }
        if (rnd() % 3 == 0) {
            now += 0.0001;
            dp_round(dp, now);
            rounds++;
            check_ooo(dp);
            /* Now and then the reader stalls for a while: the socket fills. */
            if (gso_stall == 0 && rnd() % 100 == 0)
                gso_stall = 20 + (uint32_t)(rnd() % 60);
            if (gso_stall > 0)
                gso_stall--;
            else if (rnd() % 4 != 0)
                drain_gso(gso[0]);
            if (rnd() % 2 == 0)
                fp.consumed = fp.produced; /* the NIC sent what it had */
            else if (fp.produced != fp.consumed && rnd() % 2 == 0)
                fp.consumed++;
            /* Hand-backs: Python would release each; here they are released and the
             * flows replaced, so the table stays full and handles churn. */
            uint32_t n = dp_handbacks(dp, handles, FLOWS * 2);
            for (uint32_t i = 0; i < n; i++) {
                int ours = 0;
                for (uint32_t j = 0; j < FLOWS; j++)
                    if (flows[j].handle == handles[i]) {
                        release(dp, &flows[j]);
                        adopt(dp, &flows[j], j + FLOWS * (uint32_t)(rnd() % 1000));
                        ours = 1;
                    }
                if (!ours) { /* a born flow: Python takes it, and its descriptor */
                    static uint8_t rcv[1 << 18], snd[1 << 18];
                    struct dp_tcb out;
                    if (dp_flow_release(dp, handles[i], &out, rcv, sizeof rcv, snd, sizeof snd) != 0)
                        abort();
                    if (out.app_fd >= 0)
                        close(out.app_fd);
                }
            }
            dp_declined_clear(dp);
            /* The sessions left to Python: it would answer them; here they close. */
            struct dp_session left[4];
            for (uint32_t m; (m = dp_sessions(dp, left, 4)) > 0;)
                for (uint32_t i = 0; i < m; i++, python_sessions++) {
                    if (left[i].len > sizeof left[i].raw)
                        abort();
                    close(left[i].fd);
                }
        }
    }
    const struct dp_stats *st = dp_stats(dp);
    printf("ok %llu %llu %llu %llu ooo %llu filled %llu\n", (unsigned long long)rounds,
           (unsigned long long)st->rx_fast, (unsigned long long)st->declined,
           (unsigned long long)transmitted, (unsigned long long)st->rx_ooo,
           (unsigned long long)st->ooo_filled);
    for (uint32_t k = 0; k < FLOWS; k++)
        release(dp, &flows[k]);
    printf("gso %llu datagrams %llu fallbacks %llu\n", (unsigned long long)st->gso_sends,
           (unsigned long long)gso_datagrams, (unsigned long long)st->gso_fallbacks);
    printf("born %llu established %llu delivered %llu fins %llu/%llu time-waits %llu "
           "ipv6-known %llu path-mss %llu\n",
           (unsigned long long)st->syn_received, (unsigned long long)st->established,
           (unsigned long long)st->delivered, (unsigned long long)st->fins_sent,
           (unsigned long long)st->fins_received, (unsigned long long)st->time_waits,
           (unsigned long long)born6_known, (unsigned long long)st->syn_path_mss);
    printf("active %llu established %llu refused %llu timeouts %llu dropped %llu "
           "failures %llu\n",
           (unsigned long long)st->connects, (unsigned long long)st->connect_established,
           (unsigned long long)st->connect_refused, (unsigned long long)st->connect_timeouts,
           (unsigned long long)st->connect_dropped, (unsigned long long)active_failures);
    printf("sessions %llu answered %llu python %llu abandoned %llu\n",
           (unsigned long long)st->sessions, (unsigned long long)st->sessions_answered,
           (unsigned long long)python_sessions, (unsigned long long)st->connect_abandoned);
    dp_free(dp); /* closes the born flows' application ends still open */
    for (int i = 0; i < ACTIVE_PEERS; i++)
        if (active_apps[i] >= 0)
            close(active_apps[i]);
    for (int i = 0; i < SESSION_CLIENTS; i++)
        if (clients[i] >= 0)
            close(clients[i]);
    close(sessions_fd);
    for (int i = 0; i < BORN_APPS; i++)
        if (apps[i] >= 0)
            close(apps[i]);
    close(lfd);
    close(gso[0]);
    close(gso[1]);
    free(fp.slab);
    return 0;
}
