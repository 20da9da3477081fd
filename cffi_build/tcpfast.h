/* Joyride TCP header prediction (Van Jacobson, "TCP/IP header prediction", 1990;
 * RFC 9293 §3.10.7.4 reduced to its two common cases) over a batch of records from
 * the wire engineer's batch parser (struct wire_parsed, cffi_build/wire.h).
 *
 * Read by the C compiler and, minus preprocessor lines and comments, by cffi's cdef.
 *
 * The Python connection owns every rule; this file owns only the prediction: for
 * each record, in order, either it is
 *   - in-order data (SEG.SEQ == RCV.NXT, fits the advertised window, no hole buffered)
 *     with an ACK that is not ahead of SND.MAX, or
 *   - a pure ACK advancing SND.UNA within (SND.UNA, SND.MAX],
 * both with only the ACK/PSH flags, only a timestamp option (when negotiated) passing
 * PAWS, and the connection in a state the Python side marked predictable; or the batch
 * stops there and the Python state machine takes the record. Never anything else.
 */
#ifndef JOYRIDE_TCPFAST_H
#define JOYRIDE_TCPFAST_H

#include <stdint.h>

struct tcpfast_state {
    /* Connection identity, as in struct wire_parsed (addresses network order). */
    uint32_t local_ip;
    uint32_t remote_ip;
    uint16_t local_port;
    uint16_t remote_port;
    /* Receive side. */
    uint32_t rcv_nxt;
    uint32_t rcv_adv;         /* right edge of the advertised window */
    uint32_t ack_base;        /* RCV.NXT carried by the last ACK sent */
    uint32_t last_ack_sent;   /* RFC 7323 Last.ACK.sent */
    uint32_t ts_recent;       /* RFC 7323 TS.Recent */
    uint32_t rcv_mss;         /* ACK every 2 * rcv_mss bytes (RFC 5681 §4.2) */
    /* Send side. */
    uint32_t snd_una;
    uint32_t snd_max;
    uint32_t snd_wnd;         /* scaled bytes */
    uint32_t max_snd_wnd;
    uint32_t snd_wl1;
    uint32_t snd_wl2;
    uint8_t snd_shift;
    uint8_t ts_ok;
    uint8_t rx_ok;            /* in-order data may be taken (see tcpfast_rx) */
    uint8_t ack_ok;           /* advancing ACKs may be taken (no recovery, no go-back) */
    /* Results of one call (the caller zeroes them). */
    uint32_t rx_bytes;        /* payload bytes copied to dst */
    uint32_t acked;           /* bytes newly acknowledged */
    uint32_t data_segs;
    uint32_t ack_segs;
    uint32_t n_acks;          /* ACK points written */
    uint32_t tsecr;           /* TSecr of the last advancing ACK, when have_tsecr */
    uint8_t have_tsecr;
    uint8_t window_changed;
    uint8_t stop;             /* why the loop ended early: TCPFAST_STOP_* */
    uint8_t pad;
    /* The results and every variable tcpfast_rx may move, copied here as it returns
     * (indices: enum tcpfast_out): the caller reads them all in one ffi.unpack
     * instead of one attribute lookup per field. */
    uint32_t out[18];         /* TCPFAST_OUT_N */
};

enum tcpfast_out {
    TCPFAST_OUT_SEGS = 0,      /* data_segs + ack_segs */
    TCPFAST_OUT_ACK_SEGS = 1,
    TCPFAST_OUT_RX_BYTES = 2,
    TCPFAST_OUT_ACKED = 3,
    TCPFAST_OUT_N_ACKS = 4,
    TCPFAST_OUT_TSECR = 5,
    TCPFAST_OUT_HAVE_TSECR = 6,
    TCPFAST_OUT_WINDOW_CHANGED = 7,
    TCPFAST_OUT_STOP = 8,
    TCPFAST_OUT_RCV_NXT = 9,
    TCPFAST_OUT_ACK_BASE = 10,
    TCPFAST_OUT_LAST_ACK_SENT = 11,
    TCPFAST_OUT_TS_RECENT = 12,
    TCPFAST_OUT_SND_UNA = 13,
    TCPFAST_OUT_SND_WND = 14,
    TCPFAST_OUT_MAX_SND_WND = 15,
    TCPFAST_OUT_SND_WL1 = 16,
    TCPFAST_OUT_SND_WL2 = 17,
    TCPFAST_OUT_N = 18
};

enum tcpfast_stop {
    TCPFAST_STOP_NONE = 0,    /* every record was handled */
    TCPFAST_STOP_SLOW = 1,    /* the record at the returned index needs the slow path */
    TCPFAST_STOP_ROOM = 2     /* dst or ack_points is full: flush and call again */
};

/* Load the connection's variables before a tcpfast_rx call and zero the results:
 * one foreign call instead of a Python attribute store per field. */
void tcpfast_load(struct tcpfast_state *s, uint32_t rcv_nxt, uint32_t rcv_adv,
                  uint32_t ack_base, uint32_t last_ack_sent, uint32_t ts_recent,
                  uint32_t rcv_mss, uint32_t snd_una, uint32_t snd_max, uint32_t snd_wnd,
                  uint32_t max_snd_wnd, uint32_t snd_wl1, uint32_t snd_wl2,
                  uint8_t snd_shift, uint8_t ts_ok, uint8_t rx_ok, uint8_t ack_ok);

/* Process records recs[first..n) for this connection. In-order payloads are appended
 * to dst (dst_cap bytes at most); each time RCV.NXT is 2 * rcv_mss past ack_base an
 * ACK point (the RCV.NXT to acknowledge) is written to ack_points (ack_cap at most).
 * Returns the index of the first record not handled (n when all were); s->stop says
 * why. */
uint32_t tcpfast_rx(struct tcpfast_state *s, const void *recs, uint32_t first, uint32_t n,
                    const uint8_t *base, const uint64_t *offs, uint8_t *dst,
                    uint32_t dst_cap, uint32_t *ack_points, uint32_t ack_cap);

/* Where one connection's outgoing frames are built, set once per fast path: the wire
 * module's batch builder (wire_build_batch of joyride._wire, by address, so that
 * its one compiled copy serves both modules), the connection's frame template and
 * segment specs, and the shared arena's slots (frame k at out_base + out_offs[k],
 * out_caps[k] bytes at most, its length written to out_lens[k]). */
struct tcpfast_tx {
    void *build;
    const void *tmpl;
    void *segs;
    uint8_t *out_base;
    const uint64_t *out_offs;
    const uint32_t *out_caps;
    uint32_t *out_lens;
};

/* Frame the first n segment specs into arena slots start .. start + n - 1 (payloads
 * at their offsets from payload, which may be NULL for none). Returns the number of
 * frames built (n, or fewer if one did not fit: a caller bug). */
uint32_t tcpfast_build(const struct tcpfast_tx *t, uint32_t start, uint32_t n,
                       const uint8_t *payload);

/* tcpfast_fill_send and tcpfast_build in one call: n data segments covering nbytes of
 * payload from seq0. */
uint32_t tcpfast_send(const struct tcpfast_tx *t, uint32_t start, uint32_t n, uint32_t seq0,
                      uint32_t mss, uint32_t nbytes, uint32_t ack, uint16_t window,
                      uint8_t last_flags, uint8_t has_ts, uint32_t tsval, uint32_t tsecr,
                      const uint8_t *payload);

/* Fill n wire_seg specs (cffi_build/wire.h) for the data segments covering nbytes
 * bytes from seq0: full-sized (mss) ones, the last one shorter when nbytes is not a
 * multiple of mss (a tail the Python side's Nagle/SWS rules allowed); payload offsets
 * 0, mss, ...; the last one gets last_flags (ACK|PSH when it empties the send queue).
 * The caller guarantees (n - 1) * mss < nbytes <= n * mss. */
void tcpfast_fill_send(void *segs, uint32_t n, uint32_t seq0, uint32_t mss, uint32_t nbytes,
                       uint32_t ack, uint16_t window, uint8_t flags, uint8_t last_flags,
                       uint8_t has_ts, uint32_t tsval, uint32_t tsecr);

/* Fill n wire_seg specs for pure ACKs at ack_points[0..n): every one advertises the
 * same right edge (rcv_edge), so the window never shrinks (RFC 9293 §3.8.6.2.2). */
void tcpfast_fill_acks(void *segs, uint32_t n, const uint32_t *ack_points, uint32_t seq,
                       uint32_t rcv_edge, uint8_t rcv_shift, uint8_t has_ts, uint32_t tsval,
                       uint32_t tsecr);

#endif
