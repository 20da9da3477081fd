/* The C data plane: per-packet work of established connections, under a Python
 * control plane (docs/dataplane.md).
 *
 * This header doubles as the cffi cdef (cffi_build/dataplane_build.py drops comments
 * and preprocessor lines): plain declarations only.
 *
 * Contract.
 *  - One thread owns a struct dp: every call below is made by it (the service loop).
 *    Nothing here takes a lock. cffi releases the GIL around every call (dp_run
 *    sleeps in epoll_wait); no other thread calls in, so the GIL protects nothing.
 *  - A flow is C-owned from dp_flow_adopt until C hands it back (its handle appears
 *    in dp_handbacks) or Python calls dp_flow_release. While C owns it, C is the only
 *    authority for every field of its TCB and its two byte rings; Python's
 *    TcpConnection holds no live copy (it was exported into C and is imported back).
 *  - Handles are (generation << 32 | slot). A stale handle (slot freed and reused)
 *    never reaches another flow's state: every entry point checks the generation.
 *  - C takes only what it can do exactly as Python's TCP would (docs/dataplane.md,
 *    "What declines"); anything else is declined: the frame is copied to the decline
 *    buffer, in arrival order, for Python's engine, and the frame's flow, if C owned
 *    it, is handed back first, so Python sees that flow's segments in order.
 *  - Memory writes stay inside the bounds recorded in the flow (ring capacity, decline
 *    and transmit arenas sized at dp_new); a frame is parsed once, in one checked pass
 *    (cffi_build/wire.c), before any field of it is used.
 *  - The application descriptor of an adopted flow belongs to Python: C reads and
 *    writes it and adds it to its epoll set while it owns the flow, and never closes it.
 *  - A flow C opened itself (dp_listen: "born") is C's from its SYN: C made its
 *    descriptor (a unix connect to the port's listener) and closes it when the
 *    connection ends in C; a hand-back gives the flow and its descriptor to Python,
 *    which has no connection for it yet (TcpConnection.from_hot makes one).
 */
#ifndef JOYRIDE_DATAPLANE_H
#define JOYRIDE_DATAPLANE_H

#include <stdint.h>

/* Same layout as the kernel's struct xdp_desc (checked at compile time). */
struct dp_desc {
    uint64_t addr;
    uint32_t len;
    uint32_t options;
};

/* One NIC queue: an AF_XDP socket (the xsk module's functions, by address) or the
 * in-memory port below. Signatures are those of xsk_rx, xsk_release, xsk_tx_copy_kick,
 * xsk_kick and xsk_complete. tx_copy returns how many frames from the start of the
 * list it consumed; its last argument is one of these (the values of xsk.h's enum
 * xsk_tx_mode, checked by a test): */
enum dp_tx_mode {
    DP_TX_QUEUE = 0,   /* when full, drain in this thread and go on (Python's frames) */
    DP_TX_NOWAIT = 2   /* when full, start the drain and return short (C's frames) */
};
struct dp_port {
    void *ctx;
    int fd;                    /* pollable for rx, or -1 */
    /* How the loop learns that frames a full NIC refused may go now:
     * - room_fd >= 0: want_room(ctx, 1) asks the port to make room_fd readable when
     *   they may (its answer: 1 already, 0 asked, < 0 cannot), want_room(ctx, 0)
     *   withdraws; room_fd is drained by the next want_room (xsk_tx_want_room: the tx
     *   thread tells, the tx ring being on a socket of its own, xsk.h's separate_tx);
     * - else room_polled: EPOLLOUT on fd (the tx ring's own socket);
     * - else: the loop looks again within a millisecond while it waits. */
    int room_polled;
    int room_fd;
    void *want_room;
    uint8_t *umem;             /* base of the frames rx descriptors name */
    uint64_t tx_offset;        /* headroom of a transmitted frame */
    void *rx;
    void *release;
    void *tx_copy;
    void *kick;
    void *complete;
    /* Frames placed on the tx ring and frames come back on its completion ring, both
     * counted since the port opened (xsk_sock_stats tx_frames and comp_frames), both
     * changed only by the loop's thread (the port's complete reaps); NULL: not known.
     * GSO (dp_set_gso) starts sending a flow's data beside the ring only once every
     * frame of that flow has completed (is on the wire), so none is overtaken. */
    const uint64_t *tx_placed;
    const uint64_t *tx_completed;
};

/* How the data plane behaves; set once at dp_new. */
struct dp_config {
    uint32_t max_flows;        /* flow table capacity (rounded up to a power of two) */
    uint32_t batch;            /* frames per rx call, <= 256 */
    uint32_t max_frame;        /* bytes of the largest frame, MTU + 18 */
    uint32_t decline_frames;   /* frames the decline buffer holds before dp_run returns */
    uint8_t verify_checksums;
    uint8_t ttl;
    uint32_t spin_ns;          /* the spin's cap: its window adapts below (dp_spin_window) */
    uint32_t rx_batches;       /* full batches a port may give per round (NAPI's budget) */
};

/* Why a flow was handed back to Python (enum, in struct dp_tcb.reason). */
enum dp_reason {
    DP_REASON_NONE = 0,
    DP_REASON_SEGMENT = 1,     /* a segment C does not predict (see "What declines") */
    DP_REASON_RTO = 2,         /* the retransmission timer, or the loss probe's, expired */
    DP_REASON_PERSIST = 3,     /* data queued, nothing in flight, window too small */
    DP_REASON_APP_EOF = 4,     /* an adopted flow's FIN, after the app's EOF, was ACKed */
    DP_REASON_APP_GONE = 5,    /* the application's end is closed (EPIPE, ECONNRESET) */
    DP_REASON_RELEASED = 6,    /* Python asked for it back (dp_flow_release) */
    DP_REASON_KEEPALIVE = 7,   /* the keepalive timer expired: Python probes */
    DP_REASON_UNDELIVERED = 8, /* born in C, no listener would take it: Python queues it */
    DP_REASON_RECOVERY = 9,    /* C took an ACK on which LossRecovery enters recovery */
    DP_REASON_REORDER = 10,    /* RACK's reordering timer (RFC 8985 §6.3) expired */
    DP_REASON_COUNT = 11
};

/* A flow's TCP state (RFC 9293 §3.3.2), in struct dp_tcb.tcp_state. An adopted flow
 * is ESTABLISHED (0); the others occur only for flows born in C (dp_listen, or
 * dp_connect's active opens), whose whole life C can run: handshake, both FINs,
 * TIME-WAIT. */
enum dp_tcp_state {
    DP_ESTABLISHED = 0,
    DP_SYN_RECEIVED = 1,
    DP_FIN_WAIT_1 = 2,
    DP_FIN_WAIT_2 = 3,
    DP_CLOSE_WAIT = 4,
    DP_CLOSING = 5,
    DP_LAST_ACK = 6,
    DP_TIME_WAIT = 7,
    DP_CLOSED = 8,             /* finished; waits only for the application's EOF */
    DP_SYN_SENT = 9            /* an active open C runs (dp_connect) */
};

enum dp_limits {
    DP_ISN_KEY_BYTES = 32,     /* RFC 6528 secret (isn.py's derived key) */
    DP_LISTEN_NAMES = 16,      /* unix listeners one port delivers to, round robin */
    DP_NAME_BYTES = 108,       /* an abstract unix name, NUL-terminated, no leading NUL */
    DP_MAX_LISTENERS = 64,
    DP_PATH_SLOTS = 256,       /* destinations whose learned path MSS C remembers */
    DP_OOO_RANGES = 16,        /* out-of-order ranges C keeps; one more declines */
    DP_TX_RECORDS = 32,        /* RACK send-time records C keeps; the oldest go first */
    DP_SACK_RANGES = 8,        /* SACKed ranges C keeps as a sender; one more declines */
    DP_FAILURES_KEPT = 256     /* failed active opens waiting for dp_failures */
};

/* Congestion controllers C runs outside recovery (congestion.py owns the rules). */
enum dp_cc {
    DP_CC_NEWRENO = 0,
    DP_CC_CUBIC = 1
};

/* One range of out-of-order data held above RCV.NXT (struct dp_tcb.ooo): the bytes
 * [start, end) in sequence space, and when it last changed (Reassembler's recency
 * stamp, for the order of SACK blocks: RFC 2018 §4). */
struct dp_ooo {
    uint32_t start;
    uint32_t end;
    uint32_t stamp;
};

/* Sequence space [start, end): a range the peer SACKed (struct dp_tcb.sacked). */
struct dp_range {
    uint32_t start;
    uint32_t end;
};

/* When new data went (RFC 8985 §6.1, LossRecovery's records): the octets below end
 * that no earlier record covers were first sent at time at. One record per send time. */
struct dp_tx {
    uint32_t end;
    double at;
};

/* The hot half of one connection's TCB: what C needs to run it, moved in one copy at
 * adoption and at hand-back. Sequence numbers are mod 2**32 (RFC 9293 §3.4); times are
 * seconds of CLOCK_MONOTONIC (Python's time.monotonic); 0 means "timer unset". */
struct dp_tcb {
    /* identity and framing */
    uint8_t local_ip[16];      /* network order; IPv4: the first 4 bytes, the rest 0 */
    uint8_t remote_ip[16];
    uint16_t local_port;
    uint16_t remote_port;
    uint8_t ipv6;              /* 1: an IPv6 flow (the addresses' family) */
    uint8_t src_mac[6];
    uint8_t dst_mac[6];
    /* receive sequence space */
    uint32_t rcv_nxt;
    uint32_t rcv_adv;          /* right edge of the window last advertised */
    uint32_t last_ack_rcv_nxt; /* RCV.NXT carried by the last ACK (delayed-ACK base) */
    uint32_t last_ack_sent;    /* RFC 7323 Last.ACK.sent */
    uint32_t ts_recent;
    double ts_recent_age;
    uint32_t rcv_mss;
    uint32_t cfg_mss;          /* our MSS: ceiling of rcv_mss */
    uint32_t rcv_cap;          /* receive buffer capacity (the window's base) */
    uint32_t rcv_slack;        /* bytes past capacity a rounded-up window may bring */
    /* receive-buffer autotuning (ReceiveBuffer.note_read): rcv_cap grows to rcv_max */
    uint32_t rcv_max;
    uint32_t rcv_epoch_read;   /* bytes the application took since the epoch began */
    double rcv_epoch_start;    /* < 0: no epoch yet */
    uint8_t rcv_shift;
    /* send sequence space */
    uint8_t snd_shift;
    uint8_t ts_ok;
    uint8_t nodelay;
    uint32_t snd_una;          /* == send ring's first byte; SND.NXT == SND.MAX here */
    uint32_t snd_nxt;
    uint32_t snd_wnd;
    uint32_t max_snd_wnd;
    uint32_t snd_wl1;
    uint32_t snd_wl2;
    uint32_t smss;
    uint32_t snd_cap;          /* send buffer capacity */
    uint32_t snd_cap_max;      /* ... which autotuning grows up to (TcpConfig) */
    uint32_t ts_offset;
    /* RTT estimator (RFC 6298; rtt.py) */
    double srtt;               /* < 0: no sample yet */
    double rttvar;
    double base_rto;
    double min_rto;
    double max_rto;
    double rto_granularity;
    uint32_t rto_backoff;
    uint32_t rtt_samples;
    uint8_t rtt_timing;        /* Karn: a segment ending at rtt_seq is being timed */
    uint8_t ack_now;
    uint8_t ack_immediate;     /* the owed ACK goes before the next data (RFC 5681 §4.2) */
    uint8_t write_blocked;
    uint8_t reason;            /* enum dp_reason, set by C at hand-back */
    uint32_t rtt_seq;
    double rtt_time;
    uint32_t retries;
    uint32_t persist_backoff;
    /* congestion control (congestion.py), outside recovery */
    uint32_t cc_kind;          /* enum dp_cc */
    uint32_t cwnd;
    uint32_t ssthresh;
    uint32_t abc_limit;
    /* TcpConnection._note_cwnd_use: the most in flight since SND.UNA passed
     * cwnd_use_end; an ACK grows cwnd when it was at least half of cwnd */
    uint32_t cwnd_use_max;
    uint32_t cwnd_use_end;
    uint32_t reno_bytes_acked;
    uint32_t cc_pristine;
    uint32_t cc_iw;            /* the initial window, for the idle restart */
    double cubic_w_max;
    double cubic_cwnd_prior;
    double cubic_k;
    double cubic_epoch_start;  /* < 0: no epoch */
    double cubic_w_est;
    double cubic_last_rtt;     /* < 0: none */
    double cubic_carry;
    /* HyStart++ (RFC 9406; hystart.py owns the rules) in the initial slow start:
     * the phase (0 slow start, 1 conservative slow start, 2 off), the round (hs_window_end
     * valid when hs_round_open), each round's minimum RTT (INFINITY: none yet) */
    uint32_t hs_phase;
    uint32_t hs_round_open;
    uint32_t hs_window_end;
    uint32_t hs_samples;
    uint32_t hs_css_rounds;
    double hs_last_round_min;
    double hs_current_round_min;
    double hs_css_baseline;
    double hs_round_start;     /* the ACK train (Linux's HyStart): the round's start, */
    double hs_last_ack_at;     /* its last ACK, and the smallest RTT (INFINITY: none) */
    double hs_delay_min;
    /* timers and policy */
    double rto_at;
    double delack_at;
    double keepalive_at;       /* RFC 9293 §3.8.4, re-armed by every segment taken */
    double keepalive_idle;     /* 0: keepalive off */
    double pto_at;             /* RFC 8985 §7.2 loss probe deadline: hands back (0: unset) */
    double tlp_max_ack_delay;  /* TLP.max_ack_delay (recovery.py); < 0: no loss probes */
    double delack_timeout;
    double last_send;
    double undo_until;         /* the open episode's D-SACK deadline (RecoveryState) */
    /* application channel: the pump's end of the connection's unix socket */
    int32_t app_fd;
    uint8_t app_eof;           /* set by C: the application shut down writing */
    uint8_t app_gone;          /* set by C: the application's end is closed */
    uint8_t tcp_state;         /* enum dp_tcp_state */
    uint8_t born;              /* C opened it (dp_listen): C owns app_fd until hand-back */
    uint8_t active;            /* ... for an application's connect (dp_connect), whose */
    uint32_t app_uid;          /* user owns it (OP_GETINFO, OP_SETOPT: set by the caller) */
    /* The shared-memory channel (docs/channels.md): its id in the data plane's table,
     * which keeps it whichever side runs the flow (0: stream mode, bytes on app_fd).
     * For an application that claims ring mode (its listener said so): claim_check, its
     * first bytes may still be a claim; claim_wait, nothing is delivered before them,
     * or before claim_by (a process without the shim then gets a stream). */
    uint32_t chan;
    /* The channel an application left (chan.h, JR_CHAN_REVERT_BYTE; chan is 0 then, the
     * flow a stream on its new socket): rx's bytes it never read go to the socket before
     * any other, and the channel is released once they are sent (0: none). */
    uint32_t revert_chan;
    uint8_t claim_check;
    uint8_t claim_wait;
    double claim_by;
    /* the close (born flows; RFC 9293 §3.10.4, §3.10.7.4 eighth) */
    uint8_t fin_queued;        /* our FIN follows the send ring's bytes */
    uint8_t fin_sent;          /* ... and is sent: it is SND.NXT - 1 */
    uint8_t peer_fin;          /* the peer's FIN is taken: it is RCV.NXT - 1 */
    uint8_t fin_to_app;        /* the application was shown its EOF (SHUT_WR) */
    uint8_t sack_ok;           /* SACK negotiated (RFC 2018 §2) */
    uint8_t ws_ok;             /* window scaling negotiated (RFC 7323 §2.2) */
    uint8_t undo_open;         /* a recovery episode may still be undone (recovery.py) */
    uint8_t undo_expired;      /* set by C: an ACK it took came after undo_until */
    uint32_t iss;
    uint32_t irs;
    double state_at;           /* FIN-WAIT-2 or TIME-WAIT's end (0: none) */
    double time_wait_len;      /* 2*MSL (TcpConfig.time_wait) */
    double fin_wait2_len;      /* TcpConfig.fin_wait2_timeout */
    /* counters since adoption, added to the connection's at hand-back */
    uint64_t segs_in;
    uint64_t segs_out;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t bytes_acked;
    uint64_t rtt_sample_count;
    uint64_t ooo_segs;         /* segments held out of order */
    uint64_t paws_drops;       /* pure ACKs dropped by PAWS (RFC 7323 §5.3 R1) */
    uint64_t hs_css_entered;   /* HyStart++ events (counters.CONGESTION_COUNTERS) */
    uint64_t hs_css_abandoned;
    uint64_t hs_exits;
    uint64_t hs_train_exits;
    /* Out-of-order data (Reassembler): ooo_count disjoint, non-adjacent ranges above
     * RCV.NXT, in sequence order; their bytes sit in the receive ring at their offset
     * past the in-order bytes. ooo_clock: the last recency stamp given. */
    uint32_t ooo_count;
    uint32_t ooo_clock;
    struct dp_ooo ooo[16];     /* DP_OOO_RANGES */
    /* RACK (RFC 8985 §6.2, LossRecovery owns the rules): the send times of new data
     * outstanding, oldest first, kept while SACK is in use; and what the ACKs of new
     * data said. rack_xmit_ts, rack_min_rtt < 0: none yet. */
    double rack_xmit_ts;       /* RACK.xmit_ts */
    uint32_t rack_end_seq;     /* RACK.end_seq (valid with rack_xmit_ts) */
    double rack_rtt;           /* RACK.rtt */
    double rack_min_rtt;       /* RACK.min_RTT */
    uint32_t tx_count;
    struct dp_tx tx[32];       /* DP_TX_RECORDS */
    /* The sender's side of SACK outside recovery (LossRecovery.on_ack and SackScoreboard
     * own the rules): what the peer SACKed above SND.UNA, sorted, disjoint, never
     * adjacent; duplicate ACKs counted (RFC 5681 §3.2, RFC 6675 §5); the bytes limited
     * transmit sent (RFC 3042); RACK's reordering state and timer (RFC 8985 §6.2-6.3). */
    uint32_t sacked_count;
    uint32_t sacked_bytes;
    struct dp_range sacked[8]; /* DP_SACK_RANGES */
    uint32_t dupacks;
    uint32_t lt_bytes;
    uint32_t dupthresh;        /* TcpConfig.dupthresh */
    uint32_t reo_wnd_mult;     /* RACK.reo_wnd_mult (D-SACK rounds raise it: Python's) */
    uint8_t reordering_seen;   /* RACK.reordering_seen */
    uint8_t rack_mode;         /* RACK decides (SackScoreboard.rack_mode) as the last ACK set */
    uint8_t enter_pending;     /* set by C: recovery is due (DP_REASON_RECOVERY) ... */
    uint32_t enter_delivered;  /* ... with what that ACK delivered (RFC 6937) ... */
    double enter_at;           /* ... and when it came */
    double rack_timeout;       /* the reordering timer's deadline: hands back (0: unset) */
    uint64_t lt_segs;          /* segments limited transmit sent (counter) */
};

/* A listening port whose connections C opens itself (docs/dataplane.md, "Connections
 * born in C"). Python sets it once a unix listener for the port is verified, and again
 * whenever the port's listeners change; without one, SYNs go to Python's Listener. */
struct dp_listen_cfg {
    uint16_t port;
    uint16_t n_names;          /* unix listeners, round robin: 1..DP_LISTEN_NAMES */
    uint16_t claims;           /* bit i: names[i]'s application claims ring mode */
    uint16_t claim_wait_ms;    /* how long a delivery waits for that claim */
    uint16_t mapped;           /* bit i: names[i] is an AF_INET6 socket's: v4-mapped names */
    uint16_t takes4;           /* bit i: names[i] takes IPv4 connections */
    uint16_t takes6;           /* bit i: names[i] takes IPv6 connections */
    uint16_t reserved;
    uint32_t syn_backlog;      /* half-open flows C keeps; further SYNs go to Python */
    uint32_t ts_offset;        /* RFC 7323 §7.1: the listener's timestamp offset */
    uint32_t max_syn_retries;  /* SYN-ACK retransmissions before giving up */
    uint16_t default_peer_mss; /* TcpConfig: the peer's MSS without the option */
    uint16_t min_peer_mss;
    uint8_t window_scaling;
    uint8_t window_scale_shift;
    uint8_t timestamps;
    uint8_t sack;
    double time_wait;          /* 2*MSL */
    double fin_wait2_timeout;
    uint8_t isn_key[32];       /* DP_ISN_KEY_BYTES */
    /* The TCB fields a connection takes from the configuration, before the handshake
     * (TcpConnection.listen_template): buffers, RTT estimator, controller; tmpl6 for an
     * IPv6 connection (its MSS is its family's: TcpConfig.for_address). A SYN of a
     * family no name takes goes to Python. */
    struct dp_tcb tmpl;
    struct dp_tcb tmpl6;
    char names[16][108];       /* DP_LISTEN_NAMES x DP_NAME_BYTES */
};

/* What our side of a handshake offers (TcpConfig), which the peer's SYN or SYN-ACK
 * is negotiated against: struct dp_listen_cfg's fields of the same names, and an
 * active open's (struct dp_connect_cfg). */
struct dp_syn_offer {
    uint16_t default_peer_mss; /* the peer's MSS without the option */
    uint16_t min_peer_mss;
    uint8_t window_scaling;
    uint8_t window_scale_shift;
    uint8_t timestamps;
    uint8_t sack;
};

/* An active open C runs itself (dp_connect; docs/dataplane.md, "Connections opened
 * in C"): the TCB as TcpConnection.connect makes it (listen_template's fields; then the
 * 4-tuple, the MACs toward the next hop, the ISS, the timestamp offset, the
 * application's end of its socket pair in app_fd and, for an application that claims
 * ring mode, claim_check and claim_wait), and what its SYN offers. */
struct dp_connect_cfg {
    struct dp_tcb tcb;
    struct dp_syn_offer offer;
    uint32_t max_syn_retries;  /* SYN retransmissions before ETIMEDOUT */
    uint16_t claim_wait_ms;    /* with tcb.claim_wait: how long data waits for the claim */
};

/* An active open that failed (dp_failures): its 4-tuple (addresses network order, 16
 * bytes: IPv4 in the first 4; ports host order), the errno SO_ERROR reports, and whose
 * it was: its application's user and the name of the socket the application held
 * (OP_GETINFO's name for it: a later connection of the same 4-tuple has another). */
struct dp_failure {
    uint8_t local_ip[16];
    uint8_t remote_ip[16];
    uint16_t local_port;
    uint16_t remote_port;
    uint8_t ipv6;              /* 1: the addresses are IPv6 */
    int32_t err;               /* ECONNREFUSED (a RST), ETIMEDOUT (no answer) */
    uint32_t app_uid;
    char name[108];            /* DP_NAME_BYTES: NUL-terminated, no leading NUL */
};

/* The data plane's counters (every drop and every decline has one). */
struct dp_stats {
    uint64_t rounds;           /* rounds run (dp_run's iterations and dp_round calls) */
    uint64_t sleeps;           /* epoll_wait calls that blocked */
    uint64_t spin_yields;      /* spin iterations with nothing to do (sched_yield first) */
    uint64_t idle_short;       /* idle periods the spin's window caught the end of (a hit) */
    uint64_t idle_long;        /* idle periods longer than the window (a miss): */
    uint64_t spin_grown;       /* ... the window grew (a longer spin would have caught it) */
    uint64_t spin_shrunk;      /* ... the window shrank (longer than the cap, spin_ns) */
    uint64_t spins_skipped_busy; /* spins not started: a task waited for a CPU */
    uint64_t spins_skipped_flows; /* ... more flows busy than a spin is for (spin_for) */
    uint64_t returns;          /* dp_run returns to Python, and why: */
    uint64_t returns_declined;
    uint64_t returns_handback;
    uint64_t returns_watched;  /* Python's own descriptors were ready */
    uint64_t returns_timeout;
    uint64_t rx_frames;
    uint64_t rx_fast;          /* segments C processed */
    uint64_t rx_ooo;           /* ... of them held out of order (above RCV.NXT) */
    uint64_t ooo_filled;       /* holes C filled: held ranges delivered in order */
    uint64_t declined;         /* frames copied for Python */
    uint64_t declined_no_flow;
    uint64_t declined_segment;
    uint64_t declined_overflow; /* decline buffer full: frame dropped, counted */
    uint64_t forwarded;        /* declined frames given to the worker that has their flow */
    uint64_t forward_dropped;  /* ... that found its queue (dp_inject) full: dropped */
    uint64_t injected;         /* frames another worker gave this plane (dp_inject) */
    uint64_t handbacks[11];    /* by enum dp_reason */
    uint64_t tx_frames;
    uint64_t tx_data_segs;
    uint64_t tx_acks;
    uint64_t tx_dropped;       /* frames the NIC would not take */
    uint64_t tx_deferred;      /* C's frames a full NIC left queued for a later round */
    uint64_t tx_waits;         /* flows that stopped sending until the NIC had room */
    uint64_t timers_host_queued; /* RTO/PTO put off: the flow's frames had not left */
    uint64_t app_reads;
    uint64_t app_read_bytes;
    uint64_t app_writes;
    uint64_t app_write_bytes;
    uint64_t app_eagain;       /* writes the application's socket refused (full) */
    uint64_t app_closed_unread; /* closed with bytes it never took: a reset follows */
    uint64_t flows_adopted;
    uint64_t flows_released;
    uint64_t bad_handle;       /* calls with a stale or foreign handle */
    /* connections born in C */
    uint64_t live;             /* flows in the table now (adopted, born, TIME-WAIT) */
    uint64_t born_live;        /* ... of them born in C and not in TIME-WAIT */
    uint64_t time_wait_live;   /* ... in TIME-WAIT */
    uint64_t syn_received;     /* SYNs C answered (a flow in SYN-RECEIVED) */
    uint64_t syn_declined;     /* SYNs to a C listener left to Python (queue full, ...) */
    uint64_t syn_path_mss;     /* ... answered with a learned path's smaller MSS */
    uint64_t synack_retransmits;
    uint64_t syn_retransmits_received;
    uint64_t synrcvd_dropped;  /* segments a half-open flow dropped (counted, not sent on) */
    uint64_t synrcvd_timeouts; /* half-open flows given up after max_syn_retries */
    uint64_t synrcvd_reset;    /* half-open flows ended by the peer's RST */
    uint64_t established;      /* handshakes completed in C */
    uint64_t delivered;        /* ... and connected to an application's listener */
    uint64_t delivered6;       /* ... of them IPv6 */
    uint64_t deliver_failed;   /* ... that no listener took (handed back) */
    uint64_t fins_sent;
    uint64_t fins_received;
    uint64_t closed;           /* born flows that finished in C */
    /* active opens (dp_connect) */
    uint64_t connects;         /* SYNs C sent for an application's connect */
    uint64_t connect_established; /* ... answered by a SYN-ACK: ESTABLISHED in C */
    uint64_t connect_refused;  /* ... by a RST (ECONNREFUSED) */
    uint64_t connect_timeouts; /* ... by nothing, after max_syn_retries (ETIMEDOUT) */
    uint64_t connect_dropped;  /* ... ended by their application before an answer */
    uint64_t syn_retransmits;
    uint64_t synsent_dropped;  /* segments a SYN-SENT flow dropped (counted, maybe a RST) */
    uint64_t failures_lost;    /* failures dp_failures could not keep (its queue full) */
    /* the application sessions C accepts (dp_sessions_listen) */
    uint64_t sessions;         /* accepted */
    uint64_t sessions_answered; /* ... OP_CONNECTs answered in C (dp_connect_policy) */
    uint64_t sessions_answered6; /* ... of them to IPv6 addresses */
    uint64_t sessions_channels; /* ... of them granted ring mode */
    uint64_t sessions_python;  /* ... handed to Python unanswered (dp_sessions) */
    uint64_t sessions_waited;  /* ... whose request came after the accept (watched) */
    uint64_t sessions_failed;  /* accept failed for a reason other than EAGAIN */
    uint64_t connect_abandoned; /* an answer the application did not take (it left) */
    /* shared-memory channels (dp_chan_*, whichever side runs the flow) */
    uint64_t chan_claims;      /* claims received */
    uint64_t chan_ring;        /* ... accepted: ring mode */
    uint64_t chan_born_bell;   /* ... born armed for the arena's bell (no first token) */
    uint64_t chan_refused;     /* ... refused: stream mode */
    uint64_t chan_released;
    uint64_t chan_broken;      /* an index the application wrote was impossible: reset */
    uint64_t chan_reverts;     /* connections whose application left ring mode */
    uint64_t chan_tx_borrowed; /* send rings that became their channel's tx (in place) */
    uint64_t chan_tx_copied;   /* borrowed send rings copied out for a bulk writer */
    uint64_t chan_revert_bytes; /* ... rx bytes it had not read, sent to its new socket */
    uint64_t claim_deadlines;  /* deliveries that stopped waiting for a claim */
    uint64_t chan_polled;      /* ring-mode flows polled now (armed at the next sleep) */
    uint64_t chan_doors;       /* applications' arena doors taken to watch (JR_CLAIM_DOOR) */
    uint64_t chan_door_rings;  /* ... the rings the loop woke to */
    uint64_t chan_doors_dropped; /* ... doors their application shut (socket arms again) */
    uint64_t chan_arenas_trimmed; /* idle arenas unmapped (dp_chan_trim) */
    uint64_t chan_bell_pushes; /* rx arrivals pushed on an arena's bell (not a token) */
    uint64_t chan_bell_wakes;  /* ... that wrote the door: the application slept */
    uint64_t chan_tokens;      /* token bytes sent on arena channels' sockets instead */
    uint64_t chan_socket_rings; /* ring-mode sockets epoll found readable: bytes to drain */
    uint64_t time_waits;       /* born flows that entered TIME-WAIT (kept in C) */
    uint64_t tw_expired;
    uint64_t tw_overflow;      /* TIME-WAIT flows ended early: the table was full */
    uint64_t tw_taken_over;    /* ... or an outgoing connection took the 4-tuple over */
    uint64_t tw_reuse;         /* SYNs that reopened a 4-tuple in TIME-WAIT (RFC 6191) */
    uint64_t tw_acks;          /* ACKs a TIME-WAIT flow answered with */
    uint64_t tw_killed_by_rst;
    uint64_t fin_wait2_timeouts;
    /* GSO (dp_set_gso): super-segments sent, the segments they carried, and runs that
     * went out as single frames instead (the socket refused them: full or an error) */
    uint64_t gso_sends;
    uint64_t gso_segs;
    uint64_t gso_fallbacks;
    uint64_t port_rx_frames[8]; /* by port, in dp_add_port order */
    uint64_t port_rx_bytes[8];
    uint64_t port_rx_batches[8];
};

/* The counters of the connections that ended in C (born there, never handed to
 * Python: their dp_tcb counters would otherwise be lost with the flow), summed. The
 * names are dp_tcb's, so what reads a TCB's counters reads these (hot_counters). */
struct dp_counts {
    uint64_t segs_in;
    uint64_t segs_out;
    uint64_t bytes_acked;
    uint64_t ooo_segs;
    uint64_t paws_drops;
    uint64_t lt_segs;
    uint64_t hs_css_entered;
    uint64_t hs_css_abandoned;
    uint64_t hs_exits;
    uint64_t hs_train_exits;
};

struct dp;

/* Lifecycle. dp_new returns NULL on allocation failure or a bad config. */
struct dp *dp_new(const struct dp_config *cfg);
void dp_free(struct dp *dp);
int dp_add_port(struct dp *dp, const struct dp_port *port);     /* 0 or -errno */
int dp_watch_fd(struct dp *dp, int fd);   /* Python's own poller: readable -> return */
/* The counters, brought up to date (the arenas' bell counts are copied in). */
const struct dp_stats *dp_stats(struct dp *dp);
const struct dp_counts *dp_ended_counts(const struct dp *dp); /* struct dp_counts */
/* joyride capture's tap (capture.h): every frame received, after parsing, and every
 * frame the NIC took, both C's and Python's; NULL turns it off. The caller keeps c. */
struct cap;
void dp_set_capture(struct dp *dp, struct cap *c);
/* GSO transmit (docs/dataplane.md, "Bulk data in super-segments"): fd is an AF_PACKET
 * socket bound to the first port's interface with PACKET_VNET_HDR set (the caller
 * opens it and keeps it open; -1 turns GSO off). A flow with two or more segments to
 * send in a round then sends them as one frame of up to 64 KiB with a virtio-net
 * header, which the kernel segments, or a TSO device, or which a veth peer receives
 * whole, as the kernel's own TCP sends. Only data goes this way. A flow starts once
 * every frame of it sent by AF_XDP has completed, and from then on all its data goes
 * by this socket; not while a capture runs (it records frames as on the wire). */
void dp_set_gso(struct dp *dp, int fd);

/* Flows. dp_flow_adopt copies the TCB and the bytes (receive: undelivered to the
 * application, then the bytes of tcb.ooo's ranges, packed in their order; send: from
 * SND.UNA, unacknowledged then unsent) into C; returns the handle (> 0) or -errno
 * (ENOSPC: table full; EEXIST: 4-tuple present; EINVAL: sizes or ranges that do not fit
 * the rings, ranges out of order, touching or badly stamped, or a sender's state that
 * does not fit: send-time records or SACKed ranges out of order, outside [SND.UNA,
 * SND.NXT] or too many, a wrong byte count, DupThresh 0). */
int64_t dp_flow_adopt(struct dp *dp, const struct dp_tcb *tcb, const uint8_t *rcv,
                      uint32_t rcv_len, const uint8_t *snd, uint32_t snd_len);
/* Sizes of a flow's rings (to size the buffers for dp_flow_release), or -errno. */
int64_t dp_flow_rcv_len(const struct dp *dp, int64_t handle);
int64_t dp_flow_snd_len(const struct dp *dp, int64_t handle);
/* Bytes of a flow's out-of-order ranges (tcb.ooo), or -errno: dp_flow_release copies
 * them into rcv after the in-order bytes, range after range, in sequence order. */
int64_t dp_flow_ooo_len(const struct dp *dp, int64_t handle);
/* Hand a flow to Python: copy its TCB and ring contents out, forget it. 0 or -errno
 * (EBADF: stale handle; ENOBUFS: a buffer is too small, nothing changed; EBUSY: an
 * active open in SYN-SENT, which only C runs). rcv takes
 * dp_flow_rcv_len + dp_flow_ooo_len bytes. */
int dp_flow_release(struct dp *dp, int64_t handle, struct dp_tcb *out, uint8_t *rcv,
                    uint32_t rcv_cap, uint8_t *snd, uint32_t snd_cap);
/* Read a C-owned flow's TCB without taking it (statistics). 0 or -errno. */
int dp_flow_peek(const struct dp *dp, int64_t handle, struct dp_tcb *out);
/* The handle of the C flow for a 4-tuple (ports host order, addresses network order,
 * ip_len bytes each: 4 for IPv4, 16 for IPv6), or -ENOENT (-EINVAL: another length). */
int64_t dp_flow_find(const struct dp *dp, const uint8_t *local_ip, uint16_t local_port,
                     const uint8_t *remote_ip, uint16_t remote_port, uint32_t ip_len);

/* Handles of every flow in the table (at most max; statistics). */
uint32_t dp_flows(const struct dp *dp, int64_t *out, uint32_t max);

/* Listening ports whose connections C opens (struct dp_listen_cfg). dp_listen adds or
 * replaces the port's entry; dp_unlisten removes it (half-open flows finish). 0 or
 * -errno (ENOSPC: DP_MAX_LISTENERS ports; EINVAL: a bad configuration). */
int dp_listen(struct dp *dp, const struct dp_listen_cfg *cfg);
int dp_unlisten(struct dp *dp, uint16_t port);

/* An active open, run in C from the SYN on (struct dp_connect_cfg): the SYN goes now,
 * again with backoff until max_syn_retries; a SYN-ACK makes the flow ESTABLISHED, a
 * born flow from then on; a RST that acknowledges the SYN, or no answer, ends it and
 * closes the service's end of the socket pair, and its failure waits in dp_failures.
 * C makes the pair: its own end bound to the name that spells the 4-tuple (service/
 * protocol.py connection_name), the application's end in *app_end, for the caller to
 * send and close. cfg->tcb.app_uid is the application's user; tcb.app_fd is ignored.
 * The application's bytes and its claim are taken from the start; its bytes go once
 * ESTABLISHED. `now` is the clock dp_run is given. Returns the handle (> 0) or -errno
 * (EINVAL: a configuration C does not run, e.g. keepalive or a frame too small;
 * EEXIST: the 4-tuple is in the table, TIME-WAIT included; ENOSPC: the table is full;
 * or the socket pair's). C never hands a SYN-SENT flow to Python: what would (the
 * application gone before an answer) ends it. */
int64_t dp_connect(struct dp *dp, const struct dp_connect_cfg *cfg, double now,
                   int32_t *app_end);
/* The active opens that failed since the last call, oldest first (at most max; a
 * queue of DP_FAILURES_KEPT, beyond which the oldest are lost and counted). */
uint32_t dp_failures(struct dp *dp, struct dp_failure *out, uint32_t max);

/* OP_CONNECT answered in C (sessions.c; docs/dataplane.md, "OP_CONNECT answered in
 * C"). An application asks the service on a unix SOCK_SEQPACKET session: one request
 * (service/protocol.py REQUEST), one reply (REPLY, with the connection's descriptor).
 * dp_sessions_listen gives the plane the service's listening socket (-1: takes it
 * back, and the sessions waiting for their request go to dp_sessions; the descriptor
 * stays the caller's): the loop accepts the sessions and answers
 * a non-blocking OP_CONNECT itself when all of the following hold, else hands the
 * session to Python unanswered, with its request if it came (dp_sessions,
 * DP_WAKE_SESSION; a session Python has not taken waits, and no more are accepted past
 * DP_SESSIONS_KEPT):
 *   - the request is well-formed (protocol.Request.decode would take it) and asks a
 *     non-blocking connect (FLAG_NONBLOCK) to an IPv4 or IPv6 address;
 *   - dp_connect_policy set a policy, and the caller's credentials pass its group
 *     (root, no group, or the group as the caller's primary one: apps.may_connect's
 *     supplementary groups are Python's to read);
 *   - dp_connect_route told a route to the address that has not expired: the local
 *     address and the next hop's MAC (the control plane checked the address and
 *     resolved its neighbour when it answered a connect there itself);
 *   - a port of the policy's range is free for the 4-tuple: no flow of this plane has
 *     it, or a TIME-WAIT flow that may be reused (dp_tw_reuse), and dp_port_hold does
 *     not hold the port (the control plane holds the ports its own connections,
 *     TIME-WAITs and listeners use). RFC 6056 §3.3.3's hash-based choice: a keyed
 *     offset per destination, then the next port in turn;
 *   - dp_connect takes it.
 * The answer is what the control plane's would be: ISS and timestamp offset from the
 * policy's keys (RFC 6528, as engine.active_open), ring mode granted when asked and the
 * policy allows it. Every call here is the control plane's, while the loop is not
 * running (workers parked). 0 or -errno. */
enum { DP_REQUEST_BYTES = 136, DP_REPLY_BYTES = 48, DP_SESSIONS_KEPT = 64,
       DP_CONNECT_ROUTES = 256 };
struct dp_session {
    int32_t fd;                /* the accepted session: the caller's now (it closes it) */
    uint32_t len;              /* request bytes read into raw (0: none yet, or EOF) */
    uint8_t raw[137];          /* DP_REQUEST_BYTES + 1: an oversized one reads so */
};
struct dp_connect_policy {
    /* dp_connect's, but for what each connect has its own: the 4-tuple, dst_mac, ISS,
     * timestamp offset, claim and user */
    struct dp_connect_cfg v4, v6;
    uint8_t isn_key[32];       /* DP_ISN_KEY_BYTES: the engine's ISN key */
    uint8_t ts_key[32];        /* ... and its timestamp offsets' */
    uint16_t port_lo, port_hi; /* the ephemeral range, both included */
    int64_t gid;               /* --group (-1: every user) */
    uint8_t channels;          /* ring mode may be granted */
};
int dp_sessions_listen(struct dp *dp, int fd);
uint32_t dp_sessions(struct dp *dp, struct dp_session *out, uint32_t max);
/* NULL: C answers no OP_CONNECT from now on (and forgets its routes). */
int dp_connect_policy(struct dp *dp, const struct dp_connect_policy *policy);
/* ip (ip_len 4 or 16 bytes, network order) reached from local_ip through dst_mac until
 * `expires` (dp_run's clock); one entry per hash slot (a colliding address replaces
 * it). -EINVAL without a policy. dp_connect_routes_clear: forget them all. */
int dp_connect_route(struct dp *dp, const uint8_t *ip, uint32_t ip_len,
                     const uint8_t *local_ip, const uint8_t *dst_mac, double expires);
void dp_connect_routes_clear(struct dp *dp);
/* The control plane uses `port` once more (delta 1) or once less (-1). -EINVAL for a
 * release of a port not held. */
int dp_port_hold(struct dp *dp, uint16_t port, int delta);
/* An outgoing connection may take a 4-tuple that a TIME-WAIT flow of this plane holds
 * when the flow used timestamps and its last one came at least DP_TW_REUSE_AFTER
 * seconds before `now`, as Linux's tcp_tw_reuse=1 (tcp_twsk_unique): the peer's PAWS
 * (RFC 7323 §5) tells the two incarnations' segments apart, since the timestamp clock
 * runs on with the same offset per host pair. Without it the ephemeral range (1,000
 * ports by default) bounds a client that closes first to 1,000 connections a minute per
 * destination. Never a flow whose application has not had every byte. dp_tw_reuse
 * ends such a flow of the 4-tuple (ip_len 4 or 16, network order) so the caller can
 * take it: 1 ended, with *iss the ISS the new connection must use (past the old
 * SND.NXT, as Linux's), 0 none (no flow, or one that may not go). The control plane's
 * port choice asks it (engine.active_open's `busy`, Engine.take_over); C's own
 * (sessions.c free_port) applies the same rule. */
enum { DP_TW_REUSE_AFTER = 1 };
int dp_tw_reuse(struct dp *dp, const uint8_t *local_ip, uint16_t local_port,
                const uint8_t *remote_ip, uint16_t remote_port, uint32_t ip_len, double now,
                uint32_t *iss);
/* For tests: whether sessions.c takes a request of len bytes as one it may answer,
 * and what it asks (the address in 16 bytes; *ipv6, *port, *flags). 1 or 0. */
int dp_connect_request(const uint8_t *raw, uint32_t len, uint8_t *ip, uint8_t *ipv6,
                       uint16_t *port, uint16_t *flags);

/* The path MSS the control plane learnt for a destination (a router's "packet too
 * big": the MSS with options that fits, floored for the family), as the kernel keeps a
 * route's PMTU: connections C opens to ip (ip_len 4 or 16 bytes) until `expires` (the
 * clock dp_run is given) send no bigger segments. mss 0 forgets it. One entry per
 * hash slot (DP_PATH_SLOTS): a colliding destination replaces the older one, which
 * then learns again from its router. 0, or -EINVAL. */
int dp_path_mss(struct dp *dp, const uint8_t *ip, uint32_t ip_len, uint16_t mss,
                double expires);

/* RFC 6528 ISN (isn.c; joyride/tcp/isn.py is the authority): the keyed hash F of the
 * 4-tuple, and M + F at now (CLOCK_MONOTONIC seconds). Addresses network order, ip_len
 * bytes each (4 or 16: isn.pack_tuple's layout). */
uint32_t dp_isn_offset(const uint8_t *key, const uint8_t *local_ip, uint16_t local_port,
                       const uint8_t *remote_ip, uint16_t remote_port, uint32_t ip_len);
uint32_t dp_isn(const uint8_t *key, const uint8_t *local_ip, uint16_t local_port,
                const uint8_t *remote_ip, uint16_t remote_port, uint32_t ip_len, double now);

/* Shared-memory channels (cffi_build/chan_claim.h, chan.h). The data plane keeps every
 * channel; a flow or a pump names one by id (dp_tcb.chan). Python's pump moves a
 * connection's bytes with these while Python runs it, as C does with the same steps.
 * dp_chan_first_bytes: the application's first bytes (and the descriptor that came
 * with them, or -1; the caller closes it): the new channel's id, -ENOMSG when they are
 * payload (stream mode), other -errno for a refused claim (consumed; stream mode).
 * deliver/collect: bytes put/taken, or -EPROTO (an impossible index: reset the
 * connection) or -errno from the socket. idle: 1 sleep until fd is readable, 0 work
 * now, or -errno (chan.h's jr_chan_svc_idle; waits: JR_CHAN_WAIT_ROOM = 1,
 * JR_CHAN_WAIT_BYTES = 2). tx_eof: the application shut down writing. rx_eof: no byte
 * after what was delivered (the caller then shuts its end down for writing).
 * tx_queued: bytes the application wrote into tx that the service has not taken yet
 * (SIOCOUTQ counts them; 0 for an unknown channel or an impossible index). rx_unread:
 * bytes put in rx that the application has not taken (-1: an impossible index; 0 for
 * an unknown channel). */
int64_t dp_chan_first_bytes(struct dp *dp, const uint8_t *buf, uint32_t len, int fd,
                            int claimable);
int64_t dp_chan_deliver(struct dp *dp, uint32_t chan, int fd, const uint8_t *buf, uint32_t n);
int64_t dp_chan_collect(struct dp *dp, uint32_t chan, int fd, uint8_t *buf, uint32_t n);
int dp_chan_idle(struct dp *dp, uint32_t chan, int fd, int waits);
/* dp_chan_idle for a pump whose application's writer is blocked (TCP takes nothing
 * from tx): the waits are armed on the arena's door, and the socket is not drained, as
 * its filler keeps the writer's EPOLLOUT false (docs/channels.md, "A writer blocked
 * with rx full"); the pump stops watching it. 1: asleep, the door's ring wakes Python
 * once rx has room (DP_WAKE_DOOR, from the loop that watches the door, a worker's
 * too); without JR_CHAN_WAIT_ROOM nothing is armed, TCP's progress wakes it. 0: work
 * now; -ENODEV: the arena has no door (arm on the socket: dp_chan_idle); -EPROTO: an
 * impossible index; -errno from a re-token's send. dp_chan_idle goes back to socket
 * arms. */
int dp_chan_wait_door(struct dp *dp, uint32_t chan, int fd, int waits);
int dp_chan_tx_eof(struct dp *dp, uint32_t chan);
int64_t dp_chan_tx_queued(struct dp *dp, uint32_t chan);
int64_t dp_chan_rx_unread(struct dp *dp, uint32_t chan);
void dp_chan_rx_eof(struct dp *dp, uint32_t chan);
void dp_chan_release(struct dp *dp, uint32_t chan);
/* Leaving ring mode (chan.h, JR_CHAN_REVERT_BYTE). revert: once the application asked
 * and tx is empty, its new socket takes fd's place (dup3; the caller's registrations of
 * fd are gone with the old socket): 1 switched (the connection is a stream on fd from
 * now on, chan its revert_chan), 0 not now, -EPROTO (reset the connection) or -errno.
 * flush: rx's bytes the application never read, to fd before any other: the bytes still
 * to send (0: done, release chan), or -errno. */
int dp_chan_revert(struct dp *dp, uint32_t chan, int fd);
int64_t dp_chan_flush(struct dp *dp, uint32_t chan, int fd);
/* Unmap the arenas no channel uses (their doors leave the epoll); the loop does this
 * every ARENA_TRIM_SECONDS. How many went. Each plane trims the arenas whose door, if
 * any, it watches. */
uint32_t dp_chan_trim(struct dp *dp);
/* Give planes one table of channels (dp_workers_new does, before their threads start):
 * an application's arena is then mapped once for all of them, and a flow that moves to
 * another plane keeps its channel. The table's state changes under its lock; a
 * channel's bytes are its flow's plane's (channels.c). -EBUSY: a plane already has
 * channels or arenas; -ENOMEM. Nothing changes on failure. */
int dp_share_channels(struct dp *const *planes, uint32_t n);
/* recv(2) with the descriptor that came with the bytes (-1: none). Bytes read, or
 * -errno. */
int64_t dp_chan_recv(int sock, uint8_t *buf, uint32_t n, int *fd);
/* The claim check whole, for C's flows and Python's pumps alike: read the application's
 * first bytes on sock on their own (cap: a claim's 32 bytes), decide on them
 * (dp_chan_first_bytes) and close the descriptor that came with them. *got: the bytes
 * read into buf, 0 at the application's EOF, or -errno (-EAGAIN: nothing yet). Returns
 * the decision when *got > 0 (else 0). */
int64_t dp_chan_take_first(struct dp *dp, int sock, uint8_t *buf, uint32_t cap,
                           int claimable, int64_t *got);

/* The application's side of a channel, for tests: one arena of one slot, its claim on
 * sock, then reads and writes that never block (-EAGAIN). */
struct dp_app_chan;
struct dp_app_chan *dp_app_claim(int sock, uint32_t rx_cap, uint32_t tx_cap, uint32_t id);
/* ... with door: the arena has a door (JR_CLAIM_DOOR), as the shim's has. */
struct dp_app_chan *dp_app_claim_door(int sock, uint32_t rx_cap, uint32_t tx_cap, uint32_t id,
                                      int door);
/* A second channel in the first's arena (slot 1 of a door arena's two), freed first. */
struct dp_app_chan *dp_app_claim_sibling(struct dp_app_chan *first, int sock, uint32_t id);
/* The arena's door: the service's end (the one its claims send) or the application's. */
int dp_app_door_fd(const struct dp_app_chan *a, int service_end);
/* The application's wake-ups so far: doorbells on its socket, rings of its door. */
void dp_app_rings(const struct dp_app_chan *a, uint64_t *bells, uint64_t *doors);
int dp_app_verdict(struct dp_app_chan *a, int timeout_ms); /* 1 ring, 0 stream, -EAGAIN */
int64_t dp_app_read(struct dp_app_chan *a, uint8_t *buf, uint32_t n);   /* 0: EOF */
int64_t dp_app_write(struct dp_app_chan *a, const uint8_t *buf, uint32_t n);
void dp_app_shutdown(struct dp_app_chan *a);
int dp_app_slot_done(struct dp_app_chan *a);
void dp_app_poke_tx_tail(struct dp_app_chan *a, uint32_t tail); /* as a hostile one may */
void dp_app_retoken(struct dp_app_chan *a); /* the re-token request a racing read makes */
void dp_app_free(struct dp_app_chan *a);

/* The application's side in the service's own process (embedded mode: hub.c,
 * joyride/aio/rings.py): one arena of slots channels of cap bytes each way, and the
 * process's bell, whose eventfd (dp_hub_efd) an event loop watches instead of a token
 * on each connection's socket. Called from one thread, the event loop's.
 * dp_set_bell: the data plane grants bell claims from its own process, rings h's bell
 * for them, and wakes on h's door (chan.h, struct jr_door) where that application would
 * send a doorbell byte (NULL: none; set it before the data plane's thread runs, and keep
 * h while the plane lives). 0 or -errno.
 * dp_hub_claim: claim a slot on sock (the connection's descriptor, accepted, nothing
 * read from it yet): the slot, or -ENOSPC (no free slot: a claim made to be refused was
 * sent, the connection is a stream) or -errno. dp_hub_verdict: 1 ring mode, 0 refused
 * (stream mode), -EAGAIN not yet (the bell rings with the slot when it comes).
 * read/write: bytes, 0 at EOF (read), -EAGAIN (nothing to read / tx full: the socket is
 * filled, so it turns writable when there is room), -EINVAL (not a ring-mode slot).
 * dp_hub_done: the connection is closed (the
 * caller closes its socket next); the slot is reused once the service has answered
 * its claim and released it (a claim it never reads keeps its slot).
 * dp_hub_take: slots the bell named (a slot may come twice or late: look at it).
 * dp_hub_arm: before sleeping on the eventfd: 1 if there is something to take (or the
 * bell lost a push: dp_hub_lost), 0 if the eventfd will say. dp_hub_lost: 1 once after
 * the bell's queue overflowed: look at every slot. */
struct dp_hub;
struct dp_hub *dp_hub_new(uint32_t slots, uint32_t cap);
void dp_hub_free(struct dp_hub *h);
int dp_hub_efd(const struct dp_hub *h);
uint32_t dp_hub_slots(const struct dp_hub *h);
int dp_set_bell(struct dp *dp, struct dp_hub *h);
int64_t dp_hub_claim(struct dp_hub *h, int sock);
int dp_hub_verdict(struct dp_hub *h, uint32_t slot);
int64_t dp_hub_read(struct dp_hub *h, uint32_t slot, uint8_t *buf, uint32_t n);
int64_t dp_hub_write(struct dp_hub *h, uint32_t slot, const uint8_t *buf, uint32_t n);
int dp_hub_shutdown(struct dp_hub *h, uint32_t slot);
void dp_hub_done(struct dp_hub *h, uint32_t slot);
uint32_t dp_hub_take(struct dp_hub *h, uint32_t *out, uint32_t n);
int dp_hub_arm(struct dp_hub *h);
int dp_hub_lost(struct dp_hub *h);

/* The loop. Runs rounds until Python has work (declined frames, handed-back flows,
 * its watched descriptor readable) or timeout_ms passes (-1: no limit; 0: one
 * round). Returns a bitmask of DP_WAKE_* or -errno. now: CLOCK_MONOTONIC seconds. */
int dp_run(struct dp *dp, int timeout_ms);
int dp_round(struct dp *dp, double now);   /* one round at an explicit time (tests) */
/* The spin's window (seconds) after an idle period of `period` seconds ended, given the
 * window it had and the cap (dp_config.spin_ns, in seconds). Sized as KVM's halt polling
 * and the cpuidle haltpoll governor size theirs, so that it fits the machine rather than
 * a constant: a period the window caught leaves it; a period longer than the window but
 * within the cap doubles it (from 20 us); a period longer than the cap halves it (to 0
 * below 20 us). The result is always within [0, cap]. Pure (tests). */
double dp_spin_window(double window, double period, double cap);
/* What the loop does before it sleeps (tests): arm every polled ring-mode flow; 1 when
 * the loop would not sleep after all (arming found work, or a flow waits for Python). */
int dp_settle(struct dp *dp);

enum dp_wake {
    DP_WAKE_DECLINED = 1,
    DP_WAKE_HANDBACK = 2,
    DP_WAKE_WATCHED = 4,
    DP_WAKE_TIMEOUT = 8,
    DP_WAKE_DOOR = 16, /* the door rang (dp_door_python), or a pump's (dp_chan_wait_door) */
    DP_WAKE_SESSION = 32 /* sessions wait for Python (dp_sessions) */
};
/* Python runs ring-mode connections of the door's application (handed back): its door
 * also wakes Python (DP_WAKE_DOOR), whose pumps then look at their channels. (An
 * arena's door wakes Python on its own while a pump sleeps on it: dp_chan_wait_door.) */
void dp_door_python(struct dp *dp, int on);

/* Workers (joyride/dataplane/workers.c; docs/dataplane.md, "Workers"): each of n
 * planes' loops runs in a thread of its own, and the control plane stops them all to
 * use any plane. dp_workers_new: the threads, parked; each plane's loop watches an
 * eventfd of its worker's from then on (so a plane belongs to one group); NULL and
 * errno on failure (EINVAL: n outside 1..DP_MAX_WORKERS). dp_workers_watch: the
 * control plane's own descriptor, readable -> dp_workers_run returns (one; -EBUSY for a
 * second). dp_workers_run: let every worker run; sleep until one's loop returns with
 * work for Python (DP_WAKE_DECLINED, DP_WAKE_HANDBACK, DP_WAKE_SESSION) or fails,
 * the watched descriptor is readable, or timeout_ms passes (-1: no limit; 0: each runs
 * at least a round); then park every one and wait until each has. Returns the OR of
 * the loops' DP_WAKE_DECLINED/HANDBACK/DOOR/SESSION bits, DP_WAKE_WATCHED when the
 * watched descriptor is readable, DP_WAKE_TIMEOUT when neither, or the first failed loop's -errno. Between
 * two calls no worker touches its plane: the caller may use every plane (one thread:
 * the control plane's). dp_workers_free: end the threads (parked, as dp_workers_run
 * leaves them; the planes are the caller's, and are freed after). */
enum { DP_MAX_WORKERS = 1024 };
struct dp_workers;
struct dp_worker_stats {
    uint64_t runs;   /* times its loop was let run */
    uint64_t asks;   /* ... and returned with work for Python */
};
struct dp_workers *dp_workers_new(struct dp *const *planes, uint32_t n);
int dp_workers_watch(struct dp_workers *w, int fd);
int dp_workers_run(struct dp_workers *w, int timeout_ms);
int dp_workers_stats(const struct dp_workers *w, uint32_t i, struct dp_worker_stats *out);
void dp_workers_free(struct dp_workers *w);

/* Handed-back flows since the last call (handles; each must be dp_flow_release'd). */
uint32_t dp_handbacks(struct dp *dp, int64_t *out, uint32_t max);
/* Declined frames: frame i at base + offs[i], lens[i] bytes; valid until
 * dp_declined_clear. Returns how many. */
uint32_t dp_declined(struct dp *dp, uint8_t **base, uint64_t **offs, uint32_t **lens);
void dp_declined_clear(struct dp *dp);
/* Workers: a worker declines a segment of a flow it does not hold. When another plane
 * holds that flow half-open (SYN-RECEIVED: C runs the handshake, and the control plane
 * cannot take it), the segment is that plane's to run: on veth a peer's handshake ACK
 * can leave by another transmit queue than its SYN (XPS picks the queue by the sending
 * CPU; a NIC's RSS keeps a 4-tuple on one queue). dp_forward_declined moves such
 * frames from `from`'s declined list (its order kept for the rest) to their plane with
 * dp_inject, and returns how many it moved. dp_inject: the frame is copied and taken at
 * the start of the plane's next round, as if received; 0, -ENOBUFS (cfg.batch frames
 * wait already) or -EMSGSIZE. Both only while the planes' workers are parked. */
int dp_inject(struct dp *dp, const uint8_t *frame, uint32_t len);
uint32_t dp_forward_declined(struct dp *from, struct dp *const *planes, uint32_t n);

/* Python's frames (handshakes, RSTs, its connections' segments) through the same NIC
 * queue, after every frame C has queued: returns how many the NIC took. */
uint32_t dp_transmit(struct dp *dp, const uint8_t *base, const uint64_t *offs,
                     const uint32_t *lens, uint32_t n);
void dp_kick(struct dp *dp);

/* An in-memory port for tests and the fuzz harness: frames pushed here are received
 * by the data plane; frames it transmits are popped here. */
struct dp_memport;
struct dp_memport *dp_memport_new(uint32_t slots, uint32_t max_frame);
/* A NIC that fills: C's frames (DP_TX_NOWAIT) stop while the out queue holds `frames`;
 * Python's (DP_TX_QUEUE) would wait for a real NIC's drain, so they fit while slots
 * remain. 0 or -EINVAL. */
int dp_memport_limit_tx(struct dp_memport *m, uint32_t frames);
void dp_memport_free(struct dp_memport *m);
int dp_memport_port(struct dp_memport *m, struct dp_port *out);
int dp_memport_push(struct dp_memport *m, const uint8_t *frame, uint32_t len);
int dp_memport_pop(struct dp_memport *m, uint8_t *out, uint32_t cap);   /* len, or 0 */

#endif
