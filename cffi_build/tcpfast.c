/* See tcpfast.h. Sequence comparisons are modulo 2**32 (RFC 9293 §3.4). */
#include <string.h>

#include "tcpfast.h"
#include "wire.h"

#define TCP_FLAG_ACK 0x10
#define TCP_FLAG_PSH 0x08

static inline int32_t sdiff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }

_Static_assert(sizeof(((struct tcpfast_state *)0)->out) == TCPFAST_OUT_N * sizeof(uint32_t),
               "struct tcpfast_state.out holds exactly the TCPFAST_OUT_* results");

void tcpfast_load(struct tcpfast_state *s, uint32_t rcv_nxt, uint32_t rcv_adv,
                  uint32_t ack_base, uint32_t last_ack_sent, uint32_t ts_recent,
                  uint32_t rcv_mss, uint32_t snd_una, uint32_t snd_max, uint32_t snd_wnd,
                  uint32_t max_snd_wnd, uint32_t snd_wl1, uint32_t snd_wl2,
                  uint8_t snd_shift, uint8_t ts_ok, uint8_t rx_ok, uint8_t ack_ok)
{
    s->rcv_nxt = rcv_nxt;
    s->rcv_adv = rcv_adv;
    s->ack_base = ack_base;
    s->last_ack_sent = last_ack_sent;
    s->ts_recent = ts_recent;
    s->rcv_mss = rcv_mss;
    s->snd_una = snd_una;
    s->snd_max = snd_max;
    s->snd_wnd = snd_wnd;
    s->max_snd_wnd = max_snd_wnd;
    s->snd_wl1 = snd_wl1;
    s->snd_wl2 = snd_wl2;
    s->snd_shift = snd_shift;
    s->ts_ok = ts_ok;
    s->rx_ok = rx_ok;
    s->ack_ok = ack_ok;
    s->rx_bytes = s->acked = s->data_segs = s->ack_segs = s->n_acks = 0;
    s->tsecr = 0;
    s->have_tsecr = s->window_changed = 0;
    s->stop = TCPFAST_STOP_NONE;
}

uint32_t tcpfast_rx(struct tcpfast_state *s, const void *recs, uint32_t first, uint32_t n,
                    const uint8_t *base, const uint64_t *offs, uint8_t *dst,
                    uint32_t dst_cap, uint32_t *ack_points, uint32_t ack_cap)
{
    const struct wire_parsed *r = (const struct wire_parsed *)recs;
    uint32_t i;
    s->stop = TCPFAST_STOP_NONE;
    for (i = first; i < n; i++) {
        const struct wire_parsed *p = &r[i];
        uint32_t len = p->payload_len;
        /* Prediction preconditions: a valid frame of this connection carrying only
         * ACK(+PSH) and at most a timestamp option (wire.h `plain`). */
        s->stop = TCPFAST_STOP_SLOW;
        if (p->reason != WIRE_OK || !p->plain)
            break;
        if (p->src_ip != s->remote_ip || p->dst_ip != s->local_ip ||
            p->src_port != s->remote_port || p->dst_port != s->local_port)
            break;
        if (p->seq != s->rcv_nxt)
            break;
        /* RFC 7323 §3.2 / §5.3: timestamps on every segment, and PAWS. */
        if (s->ts_ok) {
            if (!p->has_ts || sdiff(p->tsval, s->ts_recent) < 0)
                break;
        } else if (p->has_ts) {
            break;
        }
        int32_t adv = sdiff(p->ack, s->snd_una);
        if (adv < 0 || sdiff(p->ack, s->snd_max) > 0)
            break; /* old or unsent: the full RFC 5961 rules apply */
        uint32_t wnd = (uint32_t)p->window << s->snd_shift;
        if (len == 0) {
            /* Pure ACK: must advance SND.UNA; duplicates feed loss detection. */
            if (adv == 0 || !s->ack_ok)
                break;
        } else {
            if (!s->rx_ok || (adv > 0 && !s->ack_ok))
                break;
            if (sdiff(s->rcv_adv, s->rcv_nxt) < (int32_t)len)
                break; /* beyond the window: trimming is the slow path's job */
            /* Room for the payload and, in the worst case, one more ACK point. */
            if (s->rx_bytes + len > dst_cap || s->n_acks >= ack_cap) {
                s->stop = TCPFAST_STOP_ROOM;
                break;
            }
        }
        /* Accepted. RFC 7323 §4.3: TS.Recent from the segment at Last.ACK.sent. */
        if (s->ts_ok && sdiff(p->seq, s->last_ack_sent) <= 0)
            s->ts_recent = p->tsval;
        if (adv > 0) {
            s->snd_una = p->ack;
            s->acked += (uint32_t)adv;
            s->ack_segs++;
            if (s->ts_ok && p->tsecr) {
                s->tsecr = p->tsecr;
                s->have_tsecr = 1;
            }
        }
        /* Window update, RFC 9293 §3.10.7.4 (SND.WL1 / SND.WL2 rule). */
        if (sdiff(s->snd_wl1, p->seq) < 0 ||
            (s->snd_wl1 == p->seq && sdiff(s->snd_wl2, p->ack) <= 0)) {
            if (wnd != s->snd_wnd)
                s->window_changed = 1;
            s->snd_wnd = wnd;
            s->snd_wl1 = p->seq;
            s->snd_wl2 = p->ack;
            if (wnd > s->max_snd_wnd)
                s->max_snd_wnd = wnd;
        }
        if (len) {
            memcpy(dst + s->rx_bytes, base + offs[i] + p->payload_off, len);
            s->rx_bytes += len;
            s->rcv_nxt += len;
            s->data_segs++;
            /* RFC 5681 §4.2: ACK at least every second full-sized segment. */
            if ((uint32_t)sdiff(s->rcv_nxt, s->ack_base) >= 2 * s->rcv_mss) {
                ack_points[s->n_acks++] = s->rcv_nxt;
                s->ack_base = s->rcv_nxt;
                s->last_ack_sent = s->rcv_nxt;
            }
        }
        s->stop = TCPFAST_STOP_NONE;
    }
    uint32_t *o = s->out;
    o[TCPFAST_OUT_SEGS] = s->data_segs + s->ack_segs;
    o[TCPFAST_OUT_ACK_SEGS] = s->ack_segs;
    o[TCPFAST_OUT_RX_BYTES] = s->rx_bytes;
    o[TCPFAST_OUT_ACKED] = s->acked;
    o[TCPFAST_OUT_N_ACKS] = s->n_acks;
    o[TCPFAST_OUT_TSECR] = s->tsecr;
    o[TCPFAST_OUT_HAVE_TSECR] = s->have_tsecr;
    o[TCPFAST_OUT_WINDOW_CHANGED] = s->window_changed;
    o[TCPFAST_OUT_STOP] = s->stop;
    o[TCPFAST_OUT_RCV_NXT] = s->rcv_nxt;
    o[TCPFAST_OUT_ACK_BASE] = s->ack_base;
    o[TCPFAST_OUT_LAST_ACK_SENT] = s->last_ack_sent;
    o[TCPFAST_OUT_TS_RECENT] = s->ts_recent;
    o[TCPFAST_OUT_SND_UNA] = s->snd_una;
    o[TCPFAST_OUT_SND_WND] = s->snd_wnd;
    o[TCPFAST_OUT_MAX_SND_WND] = s->max_snd_wnd;
    o[TCPFAST_OUT_SND_WL1] = s->snd_wl1;
    o[TCPFAST_OUT_SND_WL2] = s->snd_wl2;
    return i;
}

void tcpfast_fill_send(void *segs, uint32_t n, uint32_t seq0, uint32_t mss, uint32_t nbytes,
                       uint32_t ack, uint16_t window, uint8_t flags, uint8_t last_flags,
                       uint8_t has_ts, uint32_t tsval, uint32_t tsecr)
{
    struct wire_seg *w = (struct wire_seg *)segs;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t off = i * mss;
        uint32_t left = nbytes - off;
        memset(&w[i], 0, sizeof w[i]);
        w[i].payload_off = off;
        w[i].payload_len = left < mss ? left : mss;
        w[i].seq = seq0 + off;
        w[i].ack = ack;
        w[i].window = window;
        w[i].flags = (i + 1 == n) ? last_flags : flags;
        w[i].has_ts = has_ts;
        w[i].tsval = tsval;
        w[i].tsecr = tsecr;
    }
}

typedef uint32_t (*wire_build_batch_fn)(const struct wire_template *, const struct wire_seg *,
                                        uint32_t, const uint8_t *, uint8_t *,
                                        const uint64_t *, const uint32_t *, uint32_t *);

uint32_t tcpfast_build(const struct tcpfast_tx *t, uint32_t start, uint32_t n,
                       const uint8_t *payload)
{
    wire_build_batch_fn build = (wire_build_batch_fn)t->build;
    return build((const struct wire_template *)t->tmpl, (const struct wire_seg *)t->segs, n,
                 payload, t->out_base, t->out_offs + start, t->out_caps + start,
                 t->out_lens + start);
}

uint32_t tcpfast_send(const struct tcpfast_tx *t, uint32_t start, uint32_t n, uint32_t seq0,
                      uint32_t mss, uint32_t nbytes, uint32_t ack, uint16_t window,
                      uint8_t last_flags, uint8_t has_ts, uint32_t tsval, uint32_t tsecr,
                      const uint8_t *payload)
{
    tcpfast_fill_send(t->segs, n, seq0, mss, nbytes, ack, window, TCP_FLAG_ACK, last_flags,
                      has_ts, tsval, tsecr);
    return tcpfast_build(t, start, n, payload);
}

void tcpfast_fill_acks(void *segs, uint32_t n, const uint32_t *ack_points, uint32_t seq,
                       uint32_t rcv_edge, uint8_t rcv_shift, uint8_t has_ts, uint32_t tsval,
                       uint32_t tsecr)
{
    struct wire_seg *w = (struct wire_seg *)segs;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t wnd = (rcv_edge - ack_points[i]) >> rcv_shift;
        memset(&w[i], 0, sizeof w[i]);
        w[i].seq = seq;
        w[i].ack = ack_points[i];
        w[i].window = (uint16_t)(wnd > 0xFFFF ? 0xFFFF : wnd);
        w[i].flags = TCP_FLAG_ACK;
        w[i].has_ts = has_ts;
        w[i].tsval = tsval;
        w[i].tsecr = tsecr;
    }
}
