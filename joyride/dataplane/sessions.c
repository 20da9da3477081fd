/* OP_CONNECT answered in C (dataplane.h, "OP_CONNECT answered in C"; docs/dataplane.md).
 * Included by dataplane.c after dp_connect, whose steps it uses.
 *
 * Why: an outgoing connection of an application under `joyride run --outgoing` is an
 * OP_CONNECT session, and with the session in Python each one stopped the data plane
 * (every worker parks while the control plane runs), woke the interpreter and ran
 * ~100 us of it. Everything the answer needs is fixed per service (the policy) or per
 * destination (the route, which the control plane tells after answering a connect
 * there itself), so the loop answers alone and Python sees only what it must decide:
 * other requests, the first connect to a destination, a user whose group it must read.
 *
 * The rules are the control plane's (service/datapath.py _start_connect and
 * _connect_in_c, apps.may_connect, engine.active_open); each check below names the rule
 * it follows. A session this file does not answer goes to Python as it came, so any
 * doubt costs only speed. */

#include <sys/socket.h>

#include "jr_protocol.h"

#define TAG_SESSION (1ull << 56)   /* the service's listening socket (dp_sessions_listen) */
#define SESSIONS_PER_ROUND 32     /* accepted per readiness, so a flood cannot stall rounds */
#define SESSION_WAIT 1.0          /* s a session's request may take before Python waits for it */

struct connect_route {
    uint8_t ip[16];
    uint8_t local_ip[16];
    uint8_t dst_mac[6];
    uint8_t ipv6;
    double expires;           /* 0: an empty slot */
};

struct sessions {
    int listen_fd;            /* -1: the control plane accepts its own sessions */
    uint8_t listen_edge;      /* watched edge-triggered: accept ran out of resources */
    struct dp_session waiting[DP_SESSIONS_KEPT]; /* for Python, oldest first */
    uint32_t n_waiting;
    /* Accepted before their request came (the application connects, then sends): each
     * watched (TAG_SESSION | slot + 1) until it comes or SESSION_WAIT passes. */
    int pending_fd[DP_SESSIONS_KEPT]; /* -1: a free slot */
    double pending_since[DP_SESSIONS_KEPT];
    uint8_t has_policy;
    struct dp_connect_policy policy;
    uint32_t next_ephemeral;  /* RFC 6056 §3.3.3's counter */
    struct connect_route routes[DP_CONNECT_ROUTES];
    uint32_t holds[65536];    /* uses of each port by the control plane (dp_port_hold) */
};

_Static_assert(sizeof(struct jr_request) == DP_REQUEST_BYTES, "dataplane.h's size");
_Static_assert(sizeof(struct jr_reply) == DP_REPLY_BYTES, "dataplane.h's size");

static struct sessions *sessions_of(struct dp *dp)
{
    if (dp->sessions == NULL) {
        dp->sessions = calloc(1, sizeof *dp->sessions);
        if (dp->sessions != NULL) {
            dp->sessions->listen_fd = -1;
            for (uint32_t i = 0; i < DP_SESSIONS_KEPT; i++)
                dp->sessions->pending_fd[i] = -1;
        }
    }
    return dp->sessions;
}

static void sessions_free(struct dp *dp)
{
    struct sessions *s = dp->sessions;
    if (s == NULL)
        return;
    for (uint32_t i = 0; i < s->n_waiting; i++)
        close(s->waiting[i].fd);
    for (uint32_t i = 0; i < DP_SESSIONS_KEPT; i++)
        if (s->pending_fd[i] >= 0)
            close(s->pending_fd[i]);
    free(s);
    dp->sessions = NULL;
}

/* Watch the listening socket edge-triggered (on) or level-triggered. */
static void listen_edge(struct dp *dp, struct sessions *s, int on)
{
    if (s->listen_edge == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLET : 0), .data.u64 = TAG_SESSION};
    if (epoll_ctl(dp->epfd, EPOLL_CTL_MOD, s->listen_fd, &ev) == 0)
        s->listen_edge = (uint8_t)on;
}

/* Hand a session to Python as it came (its request, or none yet: Python then waits). */
static void to_python(struct dp *dp, struct sessions *s, const struct dp_session *q)
{
    s->waiting[s->n_waiting++] = *q;
    dp->st.sessions_python++;
}

static void unpend(struct dp *dp, struct sessions *s, uint32_t slot)
{
    epoll_ctl(dp->epfd, EPOLL_CTL_DEL, s->pending_fd[slot], NULL);
    s->pending_fd[slot] = -1;
}

int dp_sessions_listen(struct dp *dp, int fd)
{
    struct sessions *s = sessions_of(dp);
    if (s == NULL)
        return -ENOMEM;
    if (fd < 0) {
        if (s->listen_fd >= 0)
            epoll_ctl(dp->epfd, EPOLL_CTL_DEL, s->listen_fd, NULL);
        s->listen_fd = -1;
        /* The sessions waiting for their request are the caller's too (dp_sessions),
         * or closed past the queue's room: none is left without an end. */
        for (uint32_t i = 0; i < DP_SESSIONS_KEPT; i++) {
            if (s->pending_fd[i] < 0)
                continue;
            struct dp_session q = {.fd = s->pending_fd[i]};
            unpend(dp, s, i);
            if (s->n_waiting < DP_SESSIONS_KEPT)
                to_python(dp, s, &q);
            else
                close(q.fd);
        }
        return 0;
    }
    if (s->listen_fd >= 0)
        return -EBUSY;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_SESSION};
    if (epoll_ctl(dp->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        return -errno;
    s->listen_fd = fd;
    s->listen_edge = 0;
    return 0;
}

uint32_t dp_sessions(struct dp *dp, struct dp_session *out, uint32_t max)
{
    struct sessions *s = dp->sessions;
    if (s == NULL)
        return 0;
    uint32_t n = s->n_waiting < max ? s->n_waiting : max;
    memcpy(out, s->waiting, n * sizeof *out);
    memmove(s->waiting, s->waiting + n, (s->n_waiting - n) * sizeof *out);
    s->n_waiting -= n;
    return n;
}

int dp_connect_policy(struct dp *dp, const struct dp_connect_policy *policy)
{
    struct sessions *s = sessions_of(dp);
    if (s == NULL)
        return -ENOMEM;
    memset(s->routes, 0, sizeof s->routes); /* told under the old policy */
    if (policy == NULL) {
        s->has_policy = 0;
        return 0;
    }
    if (policy->port_lo == 0 || policy->port_hi < policy->port_lo || policy->gid < -1 ||
        policy->gid > UINT32_MAX || policy->v4.tcb.ipv6 != 0 || policy->v6.tcb.ipv6 != 1 ||
        !offer_ok(&policy->v4.offer) || !offer_ok(&policy->v6.offer) ||
        !template_ok(dp, &policy->v4.tcb, 0) || !template_ok(dp, &policy->v6.tcb, 1))
        return -EINVAL;
    s->policy = *policy;
    s->has_policy = 1;
    return 0;
}

static uint32_t route_slot(const uint8_t ip[16], uint8_t ipv6)
{
    uint64_t h = (load64(ip) ^ load64(ip + 8) * 0x9E3779B97F4A7C15ull ^ ipv6) *
                 0xFF51AFD7ED558CCDull;
    return (uint32_t)(h >> 56) % DP_CONNECT_ROUTES;
}

int dp_connect_route(struct dp *dp, const uint8_t *ip, uint32_t ip_len,
                     const uint8_t *local_ip, const uint8_t *dst_mac, double expires)
{
    struct sessions *s = dp->sessions;
    if ((ip_len != 4 && ip_len != 16) || s == NULL || !s->has_policy)
        return -EINVAL;
    struct connect_route r = {.ipv6 = ip_len == 16, .expires = expires};
    memcpy(r.ip, ip, ip_len);
    memcpy(r.local_ip, local_ip, ip_len);
    memcpy(r.dst_mac, dst_mac, 6);
    s->routes[route_slot(r.ip, r.ipv6)] = r;
    return 0;
}

void dp_connect_routes_clear(struct dp *dp)
{
    if (dp->sessions != NULL)
        memset(dp->sessions->routes, 0, sizeof dp->sessions->routes);
}

int dp_port_hold(struct dp *dp, uint16_t port, int delta)
{
    struct sessions *s = sessions_of(dp);
    if (s == NULL)
        return -ENOMEM;
    if (delta > 0) {
        s->holds[port]++;
    } else {
        if (s->holds[port] == 0)
            return -EINVAL;
        s->holds[port]--;
    }
    return 0;
}

/* protocol.Request.decode, for the requests this file answers: the exact size, the
 * magic, OP_CONNECT with FLAG_NONBLOCK, an IPv4 address (nothing past its fourth byte)
 * or an IPv6 one, a port, an ASCII name (decode refuses any other). Anything else is
 * Python's, which answers it (or counts it bad) as before. */
int dp_connect_request(const uint8_t *raw, uint32_t len, uint8_t *ip, uint8_t *ipv6,
                       uint16_t *port, uint16_t *flags)
{
    struct jr_request q;
    if (len != sizeof q)
        return 0;
    memcpy(&q, raw, sizeof q);
    if (memcmp(q.magic, JR_MAGIC, 4) != 0 || q.op != JR_OP_CONNECT ||
        !(q.flags & JR_FLAG_NONBLOCK) || q.port == 0)
        return 0;
    if (q.family == AF_INET) {
        for (int i = 4; i < 16; i++)
            if (q.ip[i])
                return 0;
    } else if (q.family != AF_INET6) {
        return 0; /* family 0 reads as IPv4 in decode: rare, Python's */
    }
    for (size_t i = 0; i < sizeof q.name; i++)
        if ((uint8_t)q.name[i] >= 0x80)
            return 0;
    memcpy(ip, q.ip, 16);
    *ipv6 = q.family == AF_INET6;
    *port = q.port;
    *flags = q.flags;
    return 1;
}

/* apps.may_connect, short of the supplementary groups (Python reads those). */
static int admitted(const struct sessions *s, const struct ucred *c)
{
    return c->uid == 0 || s->policy.gid < 0 || (int64_t)c->gid == s->policy.gid;
}

static const struct connect_route *route_to(const struct sessions *s, const uint8_t ip[16],
                                            uint8_t ipv6, double now)
{
    const struct connect_route *r = &s->routes[route_slot(ip, ipv6)];
    if (r->expires <= now || r->ipv6 != ipv6 || memcmp(r->ip, ip, 16) != 0)
        return NULL;
    return r;
}

/* dp_tw_reuse's rule: a TIME-WAIT flow of C's whose 4-tuple a new outgoing connection
 * may take (dataplane.h). */
static int tw_reusable(const struct flow *f, double now)
{
    /* Its application has had every byte (a TIME-WAIT flow whose application end is
     * still open may hold received bytes it has not delivered: born_settle). */
    return f->state == FLOW_C && f->t.tcp_state == DP_TIME_WAIT && f->t.ts_ok &&
           now - f->t.ts_recent_age >= DP_TW_REUSE_AFTER && f->t.app_fd < 0 &&
           f->rcv.len == 0;
}

/* End f, a reusable TIME-WAIT flow, for a new connection of its 4-tuple; the ISS that
 * connection must start from: past the old one's SND.NXT, as Linux's tcp_tw_reuse
 * (write_seq = tw_snd_nxt + 65535 + 2) and this plane's RFC 6191 reopen. */
static uint32_t tw_take(struct dp *dp, struct flow *f)
{
    uint32_t iss = f->t.snd_nxt + REUSE_ISS_GAP;
    born_end(dp, f);
    dp->st.tw_taken_over++;
    return iss;
}

int dp_tw_reuse(struct dp *dp, const uint8_t *local_ip, uint16_t local_port,
                const uint8_t *remote_ip, uint16_t remote_port, uint32_t ip_len, double now,
                uint32_t *iss)
{
    if (ip_len != 4 && ip_len != 16)
        return 0;
    struct tuple k = tuple_raw(local_ip, local_port, remote_ip, remote_port, ip_len);
    struct flow *f = flow_lookup(dp, &k);
    if (f == NULL || !tw_reusable(f, now))
        return 0;
    *iss = tw_take(dp, f);
    return 1;
}

/* RFC 6056 §3.3.3 (Algorithm 3): offset = F(local address, remote address and port,
 * secret), then the counter's next port from there; a port is free when no flow of this
 * plane has the 4-tuple, or a TIME-WAIT flow that may be reused (*taken: the caller
 * ends it), and the control plane does not use it (engine._free_port's other checks:
 * its connections, TIME-WAITs and listeners). The port, or 0 when every one is taken. */
static uint16_t free_port(struct dp *dp, struct sessions *s, struct dp_tcb *t, double now,
                          struct flow **taken)
{
    *taken = NULL;
    uint32_t lo = s->policy.port_lo, count = (uint32_t)s->policy.port_hi - lo + 1;
    uint32_t len = t->ipv6 ? 16 : 4;
    uint32_t offset = dp_isn_offset(s->policy.isn_key, t->local_ip, 0, t->remote_ip,
                                    t->remote_port, len);
    for (uint32_t i = 0; i < count; i++) {
        uint16_t port = (uint16_t)(lo + (offset + s->next_ephemeral++) % count);
        if (s->holds[port])
            continue;
        t->local_port = port;
        struct tuple key = tuple_of(t);
        struct flow *f = flow_lookup(dp, &key);
        if (f == NULL)
            return port;
        if (tw_reusable(f, now)) {
            *taken = f; /* the caller ends it (tw_take) for the ISS it gives */
            return port;
        }
    }
    return 0;
}

/* The reply with the connection's descriptor (Datapath._reply): 0, or -errno when the
 * application did not take it (gone, or its socket full). */
static int send_answer(int session, const struct dp_tcb *t, int channels, int app_end)
{
    struct jr_reply r = {.op = JR_OP_CONNECT | (channels ? JR_REPLY_CHANNELS : 0),
                      .family = t->ipv6 ? AF_INET6 : AF_INET,
                      .local_port = t->local_port, .remote_port = t->remote_port};
    memcpy(r.magic, JR_MAGIC, 4);
    memcpy(r.local_ip, t->local_ip, 16);
    memcpy(r.remote_ip, t->remote_ip, 16);
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = &r, .iov_len = sizeof r};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &app_end, sizeof(int));
    return sendmsg(session, &msg, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)sizeof r ? 0
                                                                                : -errno;
}

/* Answer the session's request, or leave it to Python: 1 answered (the session may
 * close), 0 Python's. */
static int answer_connect(struct dp *dp, struct sessions *s, int session,
                          const struct dp_session *q, double now)
{
    uint8_t ip[16], ipv6;
    uint16_t port, flags;
    struct ucred cred;
    socklen_t clen = sizeof cred;
    if (!s->has_policy || !dp_connect_request(q->raw, q->len, ip, &ipv6, &port, &flags) ||
        getsockopt(session, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0 ||
        !admitted(s, &cred))
        return 0;
    const struct connect_route *route = route_to(s, ip, ipv6, now);
    if (route == NULL)
        return 0; /* the control plane checks the address and resolves its next hop */
    struct dp_connect_cfg cfg = ipv6 ? s->policy.v6 : s->policy.v4;
    struct dp_tcb *t = &cfg.tcb;
    uint32_t len = ipv6 ? 16 : 4;
    memcpy(t->local_ip, route->local_ip, 16);
    memcpy(t->remote_ip, ip, 16);
    memcpy(t->dst_mac, route->dst_mac, 6);
    t->remote_port = port;
    struct flow *taken;
    if (free_port(dp, s, t, now, &taken) == 0)
        return 0; /* Python answers EADDRNOTAVAIL, or opens it from a port C cannot see */
    t->iss = taken != NULL ? tw_take(dp, taken)
                           : dp_isn(s->policy.isn_key, t->local_ip, t->local_port,
                                    t->remote_ip, t->remote_port, len, now);
    t->ts_offset = dp_isn_offset(s->policy.ts_key, t->local_ip, 0, t->remote_ip, 0, len);
    int channels = (flags & JR_FLAG_CHANNELS) && s->policy.channels;
    t->claim_check = t->claim_wait = (uint8_t)channels;
    t->app_uid = cred.uid;
    int32_t app_end;
    if (dp_connect(dp, &cfg, now, &app_end) < 0)
        return 0;
    if (send_answer(session, t, channels, app_end) < 0)
        dp->st.connect_abandoned++; /* its end closes below: C ends the flow at EOF */
    close(app_end);
    dp->st.sessions_answered++;
    dp->st.sessions_answered6 += ipv6;
    dp->st.sessions_channels += (uint64_t)channels;
    return 1;
}

/* Watch a session until its request comes: 1, or 0 when no slot is free. */
static int pend(struct dp *dp, struct sessions *s, int fd, double now)
{
    for (uint32_t i = 0; i < DP_SESSIONS_KEPT; i++) {
        if (s->pending_fd[i] >= 0)
            continue;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_SESSION | (i + 1)};
        if (epoll_ctl(dp->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
            return 0;
        s->pending_fd[i] = fd;
        s->pending_since[i] = now;
        dp->st.sessions_waited++;
        return 1;
    }
    return 0;
}

/* Read a session's request (slot: its pending slot, or -1 just accepted) and answer it
 * or hand it to Python; a request not there yet waits in a pending slot. The caller
 * made sure Python's queue has room. */
static void take_request(struct dp *dp, struct sessions *s, int fd, int slot, double now)
{
    struct dp_session q = {.fd = fd};
    ssize_t n = recv(fd, q.raw, sizeof q.raw, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (slot >= 0 || pend(dp, s, fd, now))
            return; /* (a pending one's readiness with nothing to read: wait on) */
    } else if (slot >= 0) {
        unpend(dp, s, (uint32_t)slot);
    }
    q.len = n > 0 ? (uint32_t)n : 0; /* EOF or an error: Python reads it again */
    if (answer_connect(dp, s, fd, &q, now))
        close(fd);
    else
        to_python(dp, s, &q);
}

/* Sessions whose request has not come in SESSION_WAIT go to Python, which waits for
 * them under its own limits (Datapath._handle_session). */
static void pending_expire(struct dp *dp, struct sessions *s, double now)
{
    for (uint32_t i = 0; i < DP_SESSIONS_KEPT && s->n_waiting < DP_SESSIONS_KEPT; i++) {
        if (s->pending_fd[i] < 0 || now - s->pending_since[i] < SESSION_WAIT)
            continue;
        struct dp_session q = {.fd = s->pending_fd[i]};
        unpend(dp, s, i);
        to_python(dp, s, &q);
    }
}

/* An event of TAG_SESSION: the listening socket (slot 0) is readable, so accept what
 * waits; or a pending session's request came. DP_WAKE_SESSION when sessions wait for
 * Python (with its queue full nothing is accepted or read: the loop returns to Python,
 * which empties it). */
static int sessions_event(struct dp *dp, uint32_t slot, double now)
{
    struct sessions *s = dp->sessions;
    if (slot > 0 && slot <= DP_SESSIONS_KEPT && s->n_waiting < DP_SESSIONS_KEPT &&
        s->pending_fd[slot - 1] >= 0) {
        take_request(dp, s, s->pending_fd[slot - 1], (int)slot - 1, now);
    } else if (slot == 0 && s->listen_fd >= 0) {
        for (int i = 0; i < SESSIONS_PER_ROUND && s->n_waiting < DP_SESSIONS_KEPT; i++) {
            int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                dp->st.sessions_failed++;
                if (errno == ECONNABORTED || errno == EINTR)
                    continue;
                /* EMFILE, ENFILE, ENOBUFS, ENOMEM: the backlog stays readable, and a
                 * level-triggered watch would spin the loop; edge-triggered, the next
                 * application's arrival tries again, and a success goes back. */
                listen_edge(dp, s, 1);
                break;
            }
            listen_edge(dp, s, 0);
            dp->st.sessions++;
            take_request(dp, s, fd, -1, now);
        }
    }
    pending_expire(dp, s, now);
    return s->n_waiting ? DP_WAKE_SESSION : 0;
}
