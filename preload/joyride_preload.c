/*
 * joyride_preload.c - LD_PRELOAD shim: unmodified programs served by Joyride.
 *
 * It speaks the service's application protocol (joyride/service/protocol.py, the
 * reference) and decides at two points only:
 *
 *   listen(fd)   an AF_INET or AF_INET6 stream socket bound to a port the service
 *                accelerates becomes a unix listener bound to
 *                "\0joyride/l/<ip>:<port>/<pid>.<n>" ("/v6only" after it for an
 *                IPV6_V6ONLY socket; an IPv6 address is base64url, protocol.py),
 *                registered with the service (OP_LISTEN) and dup3()'d onto fd. The
 *                service delivers each TCP connection by connecting to it, so accept,
 *                epoll/poll/select, fork and exec keep their kernel meaning. (Ring
 *                mode, the default unless JOYRIDE_CHANNELS=0, is joyride_ring.c; its
 *                bell intercepts the waits of one epoll set per process:
 *                joyride_epoll.c; a descriptor leaving the process is reverted to a
 *                stream: joyride_revert.c.)
 *   connect(fd)  with JOYRIDE_OUTGOING=1, an AF_INET (or AF_INET6, to an IPv6 address)
 *                stream connect is asked of the
 *                service (OP_CONNECT); the connection arrives by SCM_RIGHTS and is
 *                dup3()'d onto fd. Connecting it again answers as Linux TCP does
 *                (EISCONN, or the failed handshake's error: jr_connect_again).
 *
 * Everything else goes to libc unchanged: the decision needs no table, because a
 * Joyride descriptor names itself (its unix peer name spells the TCP 4-tuple). The
 * intercepted address calls translate those names back into sockaddr_in (sockaddr_in6
 * for an AF_INET6 socket, IPv4 peers v4-mapped as Linux reports them), and the
 * option calls and the send queue's ioctls answer as a kernel TCP socket in the same
 * state would ("options" below; the connection's own figures, TCP_INFO, SO_ERROR,
 * SIOCOUTQ ..., come from the service: OP_GETINFO). recvfrom/recvmsg report the TCP peer (the unix sender's name spells it)
 * and sendto/sendmsg ignore a destination on a Joyride connection, as Linux TCP does on
 * a connected socket (a unix stream socket would answer EISCONN). Without a service
 * the shim uses the kernel and says so once on stderr.
 *
 * Abstract names carry no permissions: any local user can connect to a Joyride
 * listener. accept therefore takes a connection from a Joyride listener only when the
 * peer's SO_PEERCRED uid owns the service's application socket (jr_from_service), and
 * closes and reports (OP_REFUSED) any other, so nobody can inject a connection with a
 * forged peer address. A listener keeps that proof for a second or two (jr_proofs).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <net/if.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "jr_protocol.h"

#define JR_UNREACHABLE (-2) /* no service: use the kernel */
#define JR_REPORT_TIMEOUT_S 2

#define JR_LISTEN_TIMEOUT_S 5
#define JR_CONNECT_TIMEOUT_S 130 /* > Linux's SYN retry span (127 s) */
#define JR_MAX_FD 65536

/* OP_GETINFO's reply after struct jr_reply: protocol.INFO, "<iIII232s". */
#define JR_TCP_INFO_SIZE 232 /* struct tcp_info as of Linux 6.1 */
struct jr_conninfo {
    int32_t so_error;
    uint32_t outq;
    uint32_t notsent;
    uint32_t window_clamp;
    unsigned char tcp_info[JR_TCP_INFO_SIZE];
} __attribute__((packed));

_Static_assert(sizeof(struct jr_conninfo) == 248, "info layout");

enum jr_kind { JR_NONE = 0, JR_LISTENER, JR_CONNECTION };

/* A TCP address of either family; in.sa_family (in4's and in6's first field) says. */
union jr_addr {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
};

struct jr_info {
    enum jr_kind kind;
    union jr_addr local;
    union jr_addr remote;
};

static socklen_t jr_addr_len(const union jr_addr *a)
{
    return a->sa.sa_family == AF_INET6 ? sizeof(a->in6) : sizeof(a->in4);
}

static uint16_t jr_addr_port(const union jr_addr *a)
{
    return ntohs(a->sa.sa_family == AF_INET6 ? a->in6.sin6_port : a->in4.sin_port);
}

static int (*real_listen)(int, int);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int (*real_getsockname)(int, struct sockaddr *, socklen_t *);
static int (*real_getpeername)(int, struct sockaddr *, socklen_t *);
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);
static int (*real_getsockopt)(int, int, int, void *, socklen_t *);
static int (*real_close)(int);
static ssize_t (*real_recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static ssize_t (*real_sendto)(int, const void *, size_t, int, const struct sockaddr *,
                              socklen_t);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static int (*real_ioctl)(int, unsigned long, ...);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);

static unsigned jr_counter;
static int jr_noted;
static unsigned long jr_refused; /* connections refused by jr_from_service */

#define RESOLVE(name) \
    do { if (!real_##name) real_##name = dlsym(RTLD_NEXT, #name); } while (0)

static void jr_ring_resolve(void);

/* The shim's settings from the environment, as the process started with them: a server
 * that resets its environment (nginx's workers keep only TZ) goes on with the settings
 * `joyride run` gave it, instead of silently using the kernel for its outgoing
 * connections. A variable present now wins over the snapshot. */
enum { JR_ENV_DISABLE, JR_ENV_OUTGOING, JR_ENV_CHANNELS, JR_ENV_SOCKET, JR_ENV_RUN_DIR,
       JR_ENV_N };
static const char *const jr_env_names[JR_ENV_N] = {
    "JOYRIDE_DISABLE", "JOYRIDE_OUTGOING", "JOYRIDE_CHANNELS", "JOYRIDE_SOCKET",
    "JOYRIDE_RUN_DIR"};
/* Copied, not allocated: jr_init runs inside the first intercepted call, which may be
 * the allocator's own (jemalloc's initialisation calls syscall) and must not re-enter
 * it. A longer value (no path the shim uses is longer) is not kept. */
static char jr_env_start[JR_ENV_N][256];
static int jr_env_taken;

static void jr_env_snapshot(void)
{
    if (__atomic_exchange_n(&jr_env_taken, 1, __ATOMIC_ACQ_REL))
        return;
    for (int i = 0; i < JR_ENV_N; i++) {
        const char *v = getenv(jr_env_names[i]);
        size_t n = v != NULL ? strlen(v) : 0;
        if (n > 0 && n < sizeof jr_env_start[i])
            memcpy(jr_env_start[i], v, n + 1);
    }
}

/* (Not inlined: its callers bound what they copy, as they would getenv's.) */
__attribute__((noinline)) static const char *jr_env(int which)
{
    const char *v = getenv(jr_env_names[which]);
    return v != NULL ? v : jr_env_start[which][0] ? jr_env_start[which] : NULL;
}

__attribute__((constructor)) static void jr_init(void)
{
    jr_env_snapshot();
    RESOLVE(listen);
    RESOLVE(accept4);
    RESOLVE(connect);
    RESOLVE(getsockname);
    RESOLVE(getpeername);
    RESOLVE(setsockopt);
    RESOLVE(getsockopt);
    RESOLVE(close);
    RESOLVE(recvfrom);
    RESOLVE(recvmsg);
    RESOLVE(sendto);
    RESOLVE(sendmsg);
    RESOLVE(ioctl);
    RESOLVE(dup);
    RESOLVE(dup2);
    RESOLVE(dup3);
    jr_ring_resolve();
}

/* One line on stderr. */
static void jr_vsay(const char *fmt, va_list ap)
{
    char buf[512];
    int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);

    if (n < 0)
        return;
    if (n > (int)sizeof(buf) - 2)
        n = sizeof(buf) - 2;
    buf[n++] = '\n';
    (void)!write(2, buf, (size_t)n);
}

/* Once per process: that the shim uses the kernel, and why. */
static void jr_note(const char *fmt, ...)
{
    va_list ap;

    if (__atomic_exchange_n(&jr_noted, 1, __ATOMIC_RELAXED))
        return;
    va_start(ap, fmt);
    jr_vsay(fmt, ap);
    va_end(ap);
}

/* Every time it is called. */
static void jr_say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    jr_vsay(fmt, ap);
    va_end(ap);
}

/* Why a call failed with EACCES when the service's --group leaves the caller out. */
static void jr_not_admitted(const char *path)
{
    struct stat st;
    long gid = stat(path, &st) == 0 ? (long)st.st_gid : -1;

    jr_say("joyride: the Joyride service (%s) admits only root and group %ld "
           "(joyride attach --group), and uid %ld is not in it: add the user to that "
           "group, or attach without --group", path, gid, (long)getuid());
}

static int jr_disabled(void)
{
    const char *v = jr_env(JR_ENV_DISABLE);
    return v && *v && strcmp(v, "0") != 0;
}

/* ---------------------------------------------------------------- names */

/* Copy an abstract unix name (without its leading NUL) into out; 0 if not abstract. */
static int jr_abstract_name(const struct sockaddr_un *sun, socklen_t len, char *out,
                            size_t outlen)
{
    size_t n;

    if (len <= offsetof(struct sockaddr_un, sun_path) + 1 || sun->sun_family != AF_UNIX ||
        sun->sun_path[0] != '\0')
        return 0;
    n = len - offsetof(struct sockaddr_un, sun_path) - 1;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, sun->sun_path + 1, n);
    out[n] = '\0';
    return 1;
}

/* base64url (RFC 4648 §5) without padding: how names spell IPv6 addresses
 * (protocol.name_address). 16 bytes are 22 characters. */
static const char jr_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void jr_b64_16(const uint8_t in[16], char out[23])
{
    uint8_t a[18] = {0};
    int i, k, n = 0;

    memcpy(a, in, 16);
    for (i = 0; i < 18; i += 3) {
        uint32_t v = (uint32_t)a[i] << 16 | (uint32_t)a[i + 1] << 8 | a[i + 2];
        for (k = 0; k < (i == 15 ? 2 : 4); k++)
            out[n++] = jr_b64[(v >> (18 - 6 * k)) & 63];
    }
    out[n] = '\0';
}

static int jr_b64_value(char c)
{
    const char *at = c ? strchr(jr_b64, c) : NULL;

    return at ? (int)(at - jr_b64) : -1;
}

/* 22 base64url characters at s into 16 bytes; 0 if they are not. */
static int jr_unb64_16(const char *s, uint8_t out[16])
{
    uint8_t a[18];
    int i, k, v;

    for (i = 0; i < 6; i++) {
        uint32_t group = 0;
        for (k = 0; k < 4; k++) {
            v = i == 5 && k >= 2 ? 0 : jr_b64_value(s[i * 4 + k]);
            if (v < 0)
                return 0;
            group = group << 6 | (uint32_t)v;
        }
        a[i * 3] = (uint8_t)(group >> 16);
        a[i * 3 + 1] = (uint8_t)(group >> 8);
        a[i * 3 + 2] = (uint8_t)group;
    }
    memcpy(out, a, 16);
    return 1;
}

/* The interface index the service serves: link-local addresses are scoped to it
 * (sin6_scope_id). Its directory names it: .../net<ino>/<ifname>/app.sock. */
static uint32_t jr_scope_id(void);

/* "<ip>:<port>" of a name (dotted IPv4, or 22 characters of base64url IPv6) into a. */
static int jr_parse_addr(const char *s, union jr_addr *a, const char **end)
{
    unsigned b0, b1, b2, b3, port;
    int used = 0;

    memset(a, 0, sizeof(*a));
    if (strlen(s) > 22 && s[22] == ':' && !memchr(s, '.', 22)) {
        if (!jr_unb64_16(s, a->in6.sin6_addr.s6_addr) ||
            sscanf(s + 23, "%5u%n", &port, &used) != 1 || port > 65535)
            return 0;
        a->in6.sin6_family = AF_INET6;
        a->in6.sin6_port = htons((uint16_t)port);
        if (IN6_IS_ADDR_LINKLOCAL(&a->in6.sin6_addr))
            a->in6.sin6_scope_id = jr_scope_id();
        if (end)
            *end = s + 23 + used;
        return 1;
    }
    if (sscanf(s, "%3u.%3u.%3u.%3u:%5u%n", &b0, &b1, &b2, &b3, &port, &used) != 5 ||
        b0 > 255 || b1 > 255 || b2 > 255 || b3 > 255 || port > 65535)
        return 0;
    a->in4.sin_family = AF_INET;
    a->in4.sin_port = htons((uint16_t)port);
    a->in4.sin_addr.s_addr = htonl((b0 << 24) | (b1 << 16) | (b2 << 8) | b3);
    if (end)
        *end = s + used;
    return 1;
}

/* "joyride/c/<lip>:<lport>/<rip>:<rport>/..." -> local and remote. */
static int jr_parse_connection(const char *name, struct jr_info *info)
{
    const char *p;

    if (strncmp(name, "joyride/c/", 10) != 0)
        return 0;
    if (!jr_parse_addr(name + 10, &info->local, &p) || *p != '/')
        return 0;
    if (!jr_parse_addr(p + 1, &info->remote, NULL) ||
        info->remote.sa.sa_family != info->local.sa.sa_family)
        return 0;
    info->kind = JR_CONNECTION;
    return 1;
}

static int jr_parse_listener(const char *name, struct jr_info *info)
{
    if (strncmp(name, "joyride/l/", 10) != 0)
        return 0;
    if (!jr_parse_addr(name + 10, &info->local, NULL))
        return 0;
    info->kind = JR_LISTENER;
    return 1;
}

/* Is fd a Joyride listener? Its own name ("joyride/l/...") into name and info. */
static int jr_listener_name(int fd, char *name, size_t namelen, struct jr_info *info)
{
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);

    return real_getsockname(fd, (struct sockaddr *)&sun, &len) == 0 &&
           jr_abstract_name(&sun, len, name, namelen) && jr_parse_listener(name, info);
}

/* What each descriptor number is as a listener, so that accept need not ask getsockname
 * every time: JR_LK_UNKNOWN (a descriptor this image did not make a listener, say one
 * inherited over exec: asked once), JR_LK_JOYRIDE, JR_LK_OTHER. Forgotten whenever the
 * shim sees the number closed or replaced (close, syscall(SYS_close), close_range,
 * dup2/dup3 onto it) and set again by listen, the only way a socket becomes one. */
enum { JR_LK_UNKNOWN, JR_LK_JOYRIDE, JR_LK_OTHER };
static unsigned char jr_listener_kinds[JR_MAX_FD];

static void jr_listener_kind_set(int fd, unsigned char kind)
{
    if (fd >= 0 && fd < JR_MAX_FD)
        __atomic_store_n(&jr_listener_kinds[fd], kind, __ATOMIC_RELAXED);
}

/* Is fd a Joyride listener? Known (jr_listener_kinds), or asked once. */
static int jr_is_joyride_listener(int fd)
{
    char name[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct jr_info info;
    unsigned char kind = fd >= 0 && fd < JR_MAX_FD
                             ? __atomic_load_n(&jr_listener_kinds[fd], __ATOMIC_RELAXED)
                             : JR_LK_UNKNOWN;

    if (kind == JR_LK_UNKNOWN) {
        kind = jr_listener_name(fd, name, sizeof(name), &info) ? JR_LK_JOYRIDE : JR_LK_OTHER;
        jr_listener_kind_set(fd, kind);
    }
    return kind == JR_LK_JOYRIDE;
}

/* What a descriptor is to Joyride. Kernel sockets cost one getsockname. */
static enum jr_kind jr_classify(int fd, struct jr_info *info)
{
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);
    char name[sizeof(sun.sun_path)];
    int saved = errno;

    memset(info, 0, sizeof(*info));
    if (real_getsockname(fd, (struct sockaddr *)&sun, &len) != 0 ||
        sun.sun_family != AF_UNIX) {
        errno = saved;
        return JR_NONE;
    }
    /* A connection's peer (the service's end) spells the 4-tuple; an accepted
     * connection also carries its listener's own name, so ask the peer first. */
    len = sizeof(sun);
    if (real_getpeername(fd, (struct sockaddr *)&sun, &len) == 0 &&
        jr_abstract_name(&sun, len, name, sizeof(name)) && jr_parse_connection(name, info)) {
        errno = saved;
        return JR_CONNECTION;
    }
    if (jr_listener_name(fd, name, sizeof(name), info)) {
        errno = saved;
        return JR_LISTENER;
    }
    errno = saved;
    return JR_NONE;
}

static void jr_copy_out(const void *src, socklen_t srclen, struct sockaddr *addr,
                        socklen_t *addrlen)
{
    /* As the kernel does: truncate to the caller's buffer, report the full size. */
    if (addr && addrlen) {
        socklen_t n = *addrlen < srclen ? *addrlen : srclen;
        memcpy(addr, src, n);
        *addrlen = srclen;
    }
}

/* ---------------------------------------------------------------- the service */

/* Visit this network namespace's application sockets (one per attached interface):
 * visit(path, st, arg) returns nonzero to stop. Returns what the last visit returned. */
static int jr_each_socket(int (*visit)(const char *, const struct stat *, void *), void *arg)
{
    const char *root = jr_env(JR_ENV_RUN_DIR);
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct stat st;
    char dir[256];
    DIR *d;
    struct dirent *e;
    int r = 0;

    if (stat("/proc/thread-self/ns/net", &st) != 0)
        return 0;
    snprintf(dir, sizeof(dir), "%s/net%lu", root && *root ? root : "/run/joyride",
             (unsigned long)st.st_ino);
    d = opendir(dir);
    if (!d)
        return 0;
    while (!r && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(path, sizeof(path), "%s/%s/app.sock", dir, e->d_name) >=
            sizeof(path))
            continue; /* would not fit in sun_path */
        if (stat(path, &st) == 0)
            r = visit(path, &st, arg);
    }
    closedir(d);
    return r;
}

struct jr_path_out {
    char *path;
    size_t len;
};

static int jr_take_path(const char *path, const struct stat *st, void *arg)
{
    struct jr_path_out *out = arg;

    (void)st;
    snprintf(out->path, out->len, "%s", path);
    return 1;
}

static int jr_find_socket(char *path, size_t len)
{
    const char *env = jr_env(JR_ENV_SOCKET);
    struct jr_path_out out = {path, len};

    if (env && *env) {
        snprintf(path, len, "%s", env);
        return 1;
    }
    return jr_each_socket(jr_take_path, &out);
}

static uint32_t jr_scope_id(void)
{
    static uint32_t cached;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char *slash, *dir;
    uint32_t index = __atomic_load_n(&cached, __ATOMIC_RELAXED);

    if (index || !jr_find_socket(path, sizeof(path)))
        return index;
    slash = strrchr(path, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    dir = strrchr(path, '/');
    index = if_nametoindex(dir ? dir + 1 : path);
    __atomic_store_n(&cached, index, __ATOMIC_RELAXED);
    return index;
}

static int jr_owned_by(const char *path, const struct stat *st, void *arg)
{
    (void)path;
    return st->st_uid == *(uid_t *)arg;
}

/* A listener's standing proof that a uid is its service's: the uid in the low 32 bits,
 * in the high 32 the CLOCK_MONOTONIC_COARSE second until which it stands (0: none).
 * Proving it (jr_each_socket) costs a /proc lookup and a directory scan under /run,
 * more than the accept itself: measured at 10% of the machine under a connection-rate
 * load. A service's uid does not change while it runs, so one proof a second per
 * listener is enough, and a stale one stands for at most two seconds. One word, so a
 * thread never reads one proof's uid with another's time. */
static uint64_t jr_proofs[JR_MAX_FD];
#define JR_PROOF_SECONDS 2

static uint64_t jr_coarse_seconds(void)
{
    struct timespec now;

    return clock_gettime(CLOCK_MONOTONIC_COARSE, &now) == 0 ? (uint64_t)now.tv_sec : 0;
}

static void jr_forget_proof(int fd)
{
    if (fd >= 0 && fd < JR_MAX_FD)
        __atomic_store_n(&jr_proofs[fd], 0, __ATOMIC_RELAXED);
}

/* Did the service deliver this connection, accepted on listener? Its peer must be the
 * uid that owns an application socket: the service binds it in a directory only it
 * may write, so no other user can be that peer (root aside, who may do anything). */
static int jr_from_service(int listener, int conn)
{
    const char *env = jr_env(JR_ENV_SOCKET);
    struct ucred cred;
    socklen_t len = sizeof(cred);
    struct stat st;
    uint64_t now = jr_coarse_seconds(), proof;
    int proven;

    if (real_getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
        return 0;
    proof = listener >= 0 && listener < JR_MAX_FD
                ? __atomic_load_n(&jr_proofs[listener], __ATOMIC_RELAXED) : 0;
    if (proof && now && (uint32_t)proof == (uint32_t)cred.uid && now < proof >> 32)
        return 1;
    proven = (env && *env && stat(env, &st) == 0 && st.st_uid == cred.uid) ||
             jr_each_socket(jr_owned_by, &cred.uid);
    if (proven && now && listener >= 0 && listener < JR_MAX_FD)
        __atomic_store_n(&jr_proofs[listener],
                         (now + JR_PROOF_SECONDS) << 32 | (uint32_t)cred.uid,
                         __ATOMIC_RELAXED);
    return proven;
}

/* One request, one reply (and maybe one descriptor). Returns the reply's status,
 * JR_UNREACHABLE when there is no service, or a positive errno on failure. A reply
 * with more than struct jr_reply (OP_GETINFO's) puts the rest in extra, which must
 * then be filled entirely. */
static int jr_request_ex(uint16_t op, uint16_t flags, const union jr_addr *addr,
                         const char *name, int timeout_s, struct jr_reply *reply,
                         void *extra, size_t extralen, int *fd_out)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct sockaddr_un sun;
    struct jr_request req;
    struct timeval tv = {.tv_sec = timeout_s};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct iovec iov[2] = {{.iov_base = reply, .iov_len = sizeof(*reply)},
                           {.iov_base = extra, .iov_len = extralen}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = extra ? 2 : 1,
                         .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
    struct cmsghdr *c;
    ssize_t n;
    int s, err;

    if (fd_out)
        *fd_out = -1;
    if (!jr_find_socket(path, sizeof(path))) {
        jr_note("joyride: no Joyride service in this network namespace: using the kernel");
        return JR_UNREACHABLE;
    }
    s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0)
        return errno;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    if (real_connect(s, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        err = errno;
        real_close(s);
        if (err == EACCES || err == EPERM) {
            /* A service exists and its --group leaves us out. */
            jr_not_admitted(path);
            return EACCES;
        }
        jr_note("joyride: the Joyride service at %s does not answer (%s): using the kernel",
                path, strerror(err));
        return JR_UNREACHABLE;
    }
    real_setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    memset(&req, 0, sizeof(req));
    memcpy(req.magic, JR_MAGIC, 4);
    req.op = op;
    req.flags = flags;
    req.family = addr->sa.sa_family;
    if (addr->sa.sa_family == AF_INET6)
        memcpy(req.ip, addr->in6.sin6_addr.s6_addr, 16);
    else
        memcpy(req.ip, &addr->in4.sin_addr.s_addr, 4);
    req.port = jr_addr_port(addr);
    if (name)
        snprintf(req.name, sizeof(req.name), "%s", name);
    if (send(s, &req, sizeof(req), MSG_NOSIGNAL) != (ssize_t)sizeof(req)) {
        err = errno;
        real_close(s);
        return err ? err : EIO;
    }
    do {
        n = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    err = errno;
    real_close(s);
    if (n < 0)
        return err == EAGAIN ? ETIMEDOUT : err;
    if (n < (ssize_t)sizeof(*reply) || memcmp(reply->magic, JR_MAGIC, 4) != 0 ||
        (n != (ssize_t)sizeof(*reply) && n != (ssize_t)(sizeof(*reply) + extralen)) ||
        (reply->status == 0 && extra && n != (ssize_t)(sizeof(*reply) + extralen)))
        return EPROTO;
    if (reply->status == JR_NOT_ADMITTED) {
        jr_not_admitted(path);
        reply->status = EACCES;
    }
    for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int fd;
            memcpy(&fd, CMSG_DATA(c), sizeof(int));
            if (fd_out && *fd_out < 0)
                *fd_out = fd;
            else
                real_close(fd);
        }
    }
    return reply->status;
}

static int jr_request(uint16_t op, uint16_t flags, const union jr_addr *addr,
                      const char *name, int timeout_s, struct jr_reply *reply, int *fd_out)
{
    return jr_request_ex(op, flags, addr, name, timeout_s, reply, NULL, 0, fd_out);
}

/* ---------------------------------------------------------------- recorded options
 *
 * A unix socket takes no IPPROTO_IP/IPPROTO_TCP options, and answers some SOL_SOCKET
 * ones as a unix socket. So options set on a Joyride descriptor are remembered here,
 * per descriptor number (and checked against the socket's inode: a reused number
 * starts afresh), and getsockopt answers as a kernel TCP socket with the same options
 * set would: it asks one (jr_scratch). Options set on a kernel socket are remembered
 * too, so they carry over when it becomes a Joyride listener or connection
 * (jr_carry_options); connections accepted on a Joyride listener inherit its options,
 * as Linux's do (jr_inherit_options); dup/dup2/dup3 copy them. They are lost across
 * exec, which a kernel socket's are not (README: "What differs from a kernel socket").
 */
#define JR_OPTVAL_MAX 40 /* bytes of a value kept (IP_OPTIONS' 40 are the most) */
#define JR_OPTS_MAX 256  /* options kept per descriptor (Linux has fewer than 200) */

struct jr_opt {
    int level;
    int name;
    socklen_t len;
    unsigned char val[JR_OPTVAL_MAX];
};

struct jr_opts {
    ino_t ino;   /* the socket they were set on; 0: none */
    int backlog; /* listen()'s, as the kernel clamps it (TCP_INFO's tcpi_sacked) */
    unsigned n, cap;
    struct jr_opt *opt;
};

static struct jr_opts *jr_table[JR_MAX_FD];
static char jr_table_busy;

static void jr_lock(void)
{
    while (__atomic_test_and_set(&jr_table_busy, __ATOMIC_ACQUIRE))
        ;
}

static void jr_unlock(void)
{
    __atomic_clear(&jr_table_busy, __ATOMIC_RELEASE);
}

static ino_t jr_ino(int fd);
static void jr_rekey_opts(int fd, ino_t was, ino_t now);

#include "joyride_ring.c"

__attribute__((constructor)) static void jr_init_table(void)
{
    /* A fork while another thread held the lock must not leave the child stuck. */
    pthread_atfork(NULL, NULL, jr_unlock);
    pthread_atfork(NULL, NULL, jr_bell_atfork_child);
    jr_pid = getpid();
    pthread_atfork(NULL, NULL, jr_revert_atfork_child);
}

static ino_t jr_ino(int fd)
{
    struct stat st;

    return fd >= 0 && fd < JR_MAX_FD && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)
               ? st.st_ino : 0;
}

/* Two inode values no socket has. JR_INO_PENDING: an entry made without asking fstat
 * (an accepted connection's inherited options; accept saves two fstat calls), whose
 * first lookup adopts the socket's inode. JR_INO_TRUSTED, for a lookup only: the caller
 * knows fd is still the socket the entry is about (a listener jr_listener_kinds knows).
 * Both are as safe as the rest of the table: close forgets an entry (inode 0). */
#define JR_INO_PENDING ((ino_t)-1)
#define JR_INO_TRUSTED ((ino_t)-2)

/* fd's entry if it is about socket ino (lock held); create: make it so. */
static struct jr_opts *jr_entry(int fd, ino_t ino, int create)
{
    struct jr_opts *e;

    if (fd < 0 || fd >= JR_MAX_FD || !ino)
        return NULL;
    e = jr_table[fd];
    if (ino == JR_INO_TRUSTED)
        return e && e->ino ? e : NULL;
    if (e && e->ino == JR_INO_PENDING && ino != JR_INO_PENDING)
        e->ino = ino;
    if (e && e->ino != ino) {
        if (!create)
            return NULL;
        e->n = 0;
        e->backlog = 0;
    }
    if (!e) {
        if (!create || !(e = calloc(1, sizeof(*e))))
            return NULL;
        jr_table[fd] = e;
    }
    e->ino = ino;
    return e;
}

/* Options worth remembering: not actions (attach a filter, quick ACK now), not keys or
 * pointers, not repair mode's, not multicast membership (refused on TCP anyway). */
static int jr_keeps(int level, int name)
{
    if (level == SOL_SOCKET) {
        switch (name) {
        case SO_ATTACH_FILTER: case SO_DETACH_FILTER: case SO_ATTACH_BPF:
        case SO_ATTACH_REUSEPORT_CBPF: case SO_ATTACH_REUSEPORT_EBPF:
        case SO_DETACH_REUSEPORT_BPF: case SO_LOCK_FILTER: case SO_CNX_ADVICE:
        case SO_PEEK_OFF:
            return 0;
        }
        return 1;
    }
    if (level == IPPROTO_TCP) {
        switch (name) {
        case TCP_QUICKACK: case TCP_MD5SIG: case TCP_MD5SIG_EXT: case TCP_FASTOPEN_KEY:
        case TCP_REPAIR: case TCP_REPAIR_QUEUE: case TCP_QUEUE_SEQ: case TCP_REPAIR_OPTIONS:
        case TCP_REPAIR_WINDOW: case TCP_ULP: case TCP_TIMESTAMP: case TCP_ZEROCOPY_RECEIVE:
            return 0;
        }
        return 1;
    }
    if (level == IPPROTO_IP)
        return name < IP_ADD_MEMBERSHIP || name > MCAST_MSFILTER;
    if (level == IPPROTO_IPV6)
        return name != IPV6_ADD_MEMBERSHIP && name != IPV6_DROP_MEMBERSHIP &&
               (name < MCAST_JOIN_GROUP || name > MCAST_MSFILTER);
    return 0;
}

static void jr_put_opt(struct jr_opts *e, int level, int name, const void *val,
                       socklen_t len)
{
    unsigned i;

    for (i = 0; i < e->n; i++) {
        if (e->opt[i].level == level && e->opt[i].name == name) {
            /* Set again: it moves to the end, so replaying keeps Linux's order (a later
             * IP_TOS overrides an earlier SO_PRIORITY, and the reverse). */
            memmove(&e->opt[i], &e->opt[i + 1], (e->n - i - 1) * sizeof(e->opt[0]));
            e->n--;
            break;
        }
    }
    if (e->n == e->cap) {
        unsigned cap = e->cap ? e->cap * 2 : 4;
        struct jr_opt *grown;

        if (cap > JR_OPTS_MAX || !(grown = realloc(e->opt, cap * sizeof(e->opt[0]))))
            return;
        e->opt = grown;
        e->cap = cap;
    }
    e->opt[e->n].level = level;
    e->opt[e->n].name = name;
    e->opt[e->n].len = len;
    memcpy(e->opt[e->n].val, val, len);
    e->n++;
}

/* setsockopt(fd, level, name, val, len) succeeded: remember it. */
static void jr_record(int fd, int level, int name, const void *val, socklen_t len)
{
    struct jr_opts *e;
    ino_t ino;

    if (!jr_keeps(level, name) || len > JR_OPTVAL_MAX || (len && !val))
        return;
    ino = jr_ino(fd);
    jr_lock();
    e = jr_entry(fd, ino, 1);
    if (e)
        jr_put_opt(e, level, name, val, len);
    jr_unlock();
}

/* A copy of the options of fd, socket ino (or JR_INO_TRUSTED): free() it; or NULL with
 * *n 0. */
static struct jr_opt *jr_copy_opts_of(int fd, ino_t ino, unsigned *n, int *backlog)
{
    struct jr_opts *e;
    struct jr_opt *out = NULL;

    *n = 0;
    if (backlog)
        *backlog = 0;
    jr_lock();
    e = jr_entry(fd, ino, 0);
    if (e && e->n && (out = malloc(e->n * sizeof(*out)))) {
        memcpy(out, e->opt, e->n * sizeof(*out));
        *n = e->n;
    }
    if (e && backlog)
        *backlog = e->backlog;
    jr_unlock();
    return out;
}

static struct jr_opt *jr_copy_opts(int fd, unsigned *n, int *backlog)
{
    return jr_copy_opts_of(fd, jr_ino(fd), n, backlog);
}

static void jr_set_opts(int fd, ino_t ino, const struct jr_opt *opts, unsigned n)
{
    struct jr_opts *e;
    unsigned i;

    jr_lock();
    e = jr_entry(fd, ino, 1);
    for (i = 0; e && i < n; i++)
        jr_put_opt(e, opts[i].level, opts[i].name, opts[i].val, opts[i].len);
    jr_unlock();
}

/* Give the unix socket fd the SOL_SOCKET options in opts it takes (SO_LINGER,
 * SO_RCVTIMEO, SO_KEEPALIVE ...: the generic ones mean the same there), and the priority
 * a kernel socket derived from IP_TOS. Not SO_REUSEADDR and SO_REUSEPORT: they change
 * nothing on a unix socket and getsockopt answers them from the table
 * (jr_sol_as_tcp), and every listener has one or both, so they cost each accept a
 * setsockopt or two for nothing. */
static void jr_apply_natively(int fd, const struct jr_opt *opts, unsigned n, int prio)
{
    unsigned i;

    for (i = 0; i < n; i++)
        if (opts[i].level == SOL_SOCKET && opts[i].name != SO_REUSEADDR &&
            opts[i].name != SO_REUSEPORT)
            real_setsockopt(fd, SOL_SOCKET, opts[i].name, opts[i].val, opts[i].len);
    if (prio)
        real_setsockopt(fd, SOL_SOCKET, SO_PRIORITY, &prio, sizeof(prio));
}

/* fd was socket `was` (a kernel socket, with priority prio) and is now a Joyride
 * descriptor: its options are the new socket's. */
static void jr_carry_options(int fd, ino_t was, int prio)
{
    struct jr_opts *e;
    struct jr_opt *opts = NULL;
    unsigned n = 0;
    ino_t now = jr_ino(fd);
    int saved = errno;

    jr_lock();
    e = jr_entry(fd, was, 0);
    if (e) {
        e->ino = now;
        if (e->n && (opts = malloc(e->n * sizeof(*opts)))) {
            memcpy(opts, e->opt, e->n * sizeof(*opts));
            n = e->n;
        }
    } else if (fd >= 0 && fd < JR_MAX_FD && jr_table[fd]) {
        jr_table[fd]->ino = 0; /* about another socket: forget it */
    }
    jr_unlock();
    jr_apply_natively(fd, opts, n, prio);
    free(opts);
    errno = saved;
}

/* fd, whose options were recorded for socket `was`, now names socket `now` (a revert's
 * dup3, joyride_revert.c): they are the new socket's. */
static void jr_rekey_opts(int fd, ino_t was, ino_t now)
{
    if (!was || !now)
        return;
    jr_lock();
    struct jr_opts *e = jr_entry(fd, was, 0);
    if (e)
        e->ino = now;
    jr_unlock();
}

/* listen(fd, backlog) made fd a Joyride listener: the backlog, as the kernel keeps it. */
static void jr_note_backlog(int fd, int backlog)
{
    unsigned max = 4096;
    char buf[32];
    int f = open("/proc/sys/net/core/somaxconn", O_RDONLY | O_CLOEXEC);
    ssize_t got;
    struct jr_opts *e;
    ino_t ino = jr_ino(fd);
    int saved = errno;

    if (f >= 0) {
        got = read(f, buf, sizeof(buf) - 1);
        if (got > 0) {
            buf[got] = '\0';
            max = (unsigned)strtoul(buf, NULL, 10);
        }
        real_close(f);
    }
    if ((unsigned)backlog > max)
        backlog = (int)max;
    jr_lock();
    e = jr_entry(fd, ino, 1);
    if (e)
        e->backlog = backlog;
    jr_unlock();
    errno = saved;
}

/* Options a connection accepted on a Linux listener does not take from it. */
static int jr_inherited(const struct jr_opt *o)
{
    return !(o->level == IPPROTO_TCP &&
             (o->name == TCP_FASTOPEN || o->name == TCP_DEFER_ACCEPT));
}

/* conn was accepted on the Joyride listener (which accept knew: jr_listener_kinds): it
 * starts with the listener's options (not the priority Linux derived from its IP_TOS: an
 * accepted socket's starts at 0). No fstat either side (JR_INO_TRUSTED, _PENDING). */
static void jr_inherit_options(int listener, int conn)
{
    struct jr_opt *opts;
    unsigned n, i, kept = 0;
    int saved = errno;

    opts = jr_copy_opts_of(listener, JR_INO_TRUSTED, &n, NULL);
    for (i = 0; i < n; i++)
        if (jr_inherited(&opts[i]))
            opts[kept++] = opts[i];
    if (kept)
        jr_set_opts(conn, JR_INO_PENDING, opts, kept);
    jr_apply_natively(conn, opts, kept, 0);
    free(opts);
    errno = saved;
}

/* A fresh kernel TCP socket with fd's remembered options set: it answers as fd would if
 * it were a kernel socket of its family, but for its state (jr_state_refuses, and the connection's
 * own figures from the service). Made per call, not cached: daemons close every
 * descriptor they do not know of, and a cached one could by then be someone else's. */
static int jr_scratch(int fd, int family)
{
    struct jr_opt *opts;
    unsigned n, i;
    int k = socket(family == AF_INET6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (k < 0)
        return -1;
    opts = jr_copy_opts(fd, &n, NULL);
    for (i = 0; i < n; i++)
        real_setsockopt(k, opts[i].level, opts[i].name, opts[i].val, opts[i].len);
    free(opts);
    return k;
}

static void jr_forget_options(int fd)
{
    if (fd < 0 || fd >= JR_MAX_FD || !jr_table[fd])
        return;
    jr_lock();
    if (jr_table[fd]) {
        jr_table[fd]->ino = 0;
        jr_table[fd]->n = 0;
    }
    jr_unlock();
}

/* dup: the copy is the same socket, with the same options. */
static void jr_copy_entry(int from, int to)
{
    struct jr_opt *opts;
    unsigned n;
    int backlog, saved = errno;
    ino_t ino;
    struct jr_opts *e;

    if (from < 0 || from >= JR_MAX_FD || !jr_table[from])
        return;
    opts = jr_copy_opts(from, &n, &backlog);
    ino = jr_ino(to);
    jr_lock();
    e = jr_entry(to, ino, n || backlog);
    if (e) {
        e->n = 0;
        e->backlog = backlog;
    }
    jr_unlock();
    if (n)
        jr_set_opts(to, ino, opts, n);
    free(opts);
    errno = saved;
}

/* Put `newfd` where `fd` is, keeping fd's O_NONBLOCK and FD_CLOEXEC, and the options
 * set on fd (jr_carry_options). */
static int jr_replace(int newfd, int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);
    ino_t was = jr_ino(fd);
    int prio = 0;
    socklen_t plen = sizeof(prio);

    /* Linux derives SO_PRIORITY from IP_TOS: the value, not the call, is what carries. */
    if (real_getsockopt(fd, SOL_SOCKET, SO_PRIORITY, &prio, &plen) != 0)
        prio = 0;
    if (real_dup3(newfd, fd, (fdfl >= 0 && (fdfl & FD_CLOEXEC)) ? O_CLOEXEC : 0) < 0) {
        int err = errno;
        real_close(newfd);
        errno = err;
        return -1;
    }
    real_close(newfd);
    jr_carry_options(fd, was, prio);
    if (fl >= 0 && (fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return 0;
}

/* Is fd a kernel TCP socket of either family? Its address into bound. */
static int jr_is_inet_stream(int fd, union jr_addr *bound)
{
    socklen_t len = sizeof(*bound);
    int type = 0;
    socklen_t tlen = sizeof(type);

    if (real_getsockname(fd, &bound->sa, &len) != 0 ||
        (bound->sa.sa_family != AF_INET && bound->sa.sa_family != AF_INET6))
        return 0;
    return real_getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 &&
           type == SOCK_STREAM;
}

/* ---------------------------------------------------------------- options */

/* Options with a TCP meaning the service applies (protocol.SETOPT_OPTIONS); 0: none.
 * TCP_NODELAY is not among them: the service's connections always run with Nagle
 * off, and forwarding it would cost a request on every accepted connection. */
static int jr_setopt_code(int level, int optname)
{
    if (level == SOL_SOCKET) {
        switch (optname) {
        case SO_KEEPALIVE: return 1;
        case SO_SNDBUF: return 5;
        }
    } else if (level == IPPROTO_TCP) {
        switch (optname) {
        case TCP_KEEPIDLE: return 2;
        case TCP_KEEPINTVL: return 3;
        case TCP_KEEPCNT: return 4;
        }
    }
    return 0;
}

/* OP_SETOPT for a Joyride descriptor: the value rides in the address field (little-
 * endian int32), the code in the port, and the name says which listener (its own
 * name) or connection (its peer's). Returns the reply's status (0, an errno,
 * JR_NOT_ACCELERATED) or JR_UNREACHABLE. */
static int jr_forward_option(int fd, enum jr_kind kind, int code, int value)
{
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);
    union jr_addr carrier;
    struct jr_reply reply;
    char name[sizeof(sun.sun_path)];
    uint32_t v = (uint32_t)value;
    unsigned char le[4] = {v & 255, (v >> 8) & 255, (v >> 16) & 255, v >> 24};
    int r;

    r = kind == JR_CONNECTION ? real_getpeername(fd, (struct sockaddr *)&sun, &len)
                              : real_getsockname(fd, (struct sockaddr *)&sun, &len);
    if (r != 0 || !jr_abstract_name(&sun, len, name, sizeof(name)))
        return JR_UNREACHABLE;
    memset(&carrier, 0, sizeof(carrier));
    carrier.in4.sin_family = AF_INET;
    memcpy(&carrier.in4.sin_addr.s_addr, le, 4);
    carrier.in4.sin_port = htons((uint16_t)code);
    return jr_request(JR_OP_SETOPT, 0, &carrier, name, JR_LISTEN_TIMEOUT_S, &reply, NULL);
}

/* After the descriptor became a Joyride one (listen, connect): what the application
 * set on its kernel socket before must reach the service too. Keepalive is what can
 * be read back faithfully (buffer sizes read back doubled and defaulted). */
static void jr_carry_keepalive(int kernel_fd, int fd, enum jr_kind kind)
{
    static const int tcp_opts[] = {TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT};
    int on = 0, value;
    socklen_t len = sizeof(on);
    size_t i;

    if (real_getsockopt(kernel_fd, SOL_SOCKET, SO_KEEPALIVE, &on, &len) != 0 || !on)
        return;
    for (i = 0; i < sizeof(tcp_opts) / sizeof(tcp_opts[0]); i++) {
        len = sizeof(value);
        if (real_getsockopt(kernel_fd, IPPROTO_TCP, tcp_opts[i], &value, &len) == 0)
            jr_forward_option(fd, kind, jr_setopt_code(IPPROTO_TCP, tcp_opts[i]), value);
    }
    jr_forward_option(fd, kind, jr_setopt_code(SOL_SOCKET, SO_KEEPALIVE), 1);
    real_setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)); /* getsockopt sees it */
}

/* ---------------------------------------------------------------- intercepted calls */

int listen(int fd, int backlog)
{
    union jr_addr bound;
    struct sockaddr_un sun;
    struct jr_reply reply;
    char name[108];
    char ip[INET_ADDRSTRLEN + 23];
    uint32_t a;
    int u, status, tries, reuse, channels, v6only = 0;
    socklen_t reuselen, v6len = sizeof(v6only);

    jr_init();
    jr_listener_kind_set(fd, JR_LK_UNKNOWN); /* whatever it becomes, accept asks once */
    if (jr_disabled() || !jr_is_inet_stream(fd, &bound) || jr_addr_port(&bound) == 0)
        return real_listen(fd, backlog);
    u = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (u < 0)
        return real_listen(fd, backlog);
    if (bound.sa.sa_family == AF_INET6) {
        /* Dual-stack unless IPV6_V6ONLY (Linux's default, net.ipv6.bindv6only 0). */
        jr_b64_16(bound.in6.sin6_addr.s6_addr, ip);
        if (real_getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &v6len) != 0)
            v6only = 0;
    } else {
        a = ntohl(bound.in4.sin_addr.s_addr);
        snprintf(ip, sizeof(ip), "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255,
                 a & 255);
    }
    for (tries = 0; tries < 64; tries++) {
        /* A forked sibling may hold the same (pid, n) name: take the next n. */
        unsigned n = __atomic_fetch_add(&jr_counter, 1, __ATOMIC_RELAXED);
        socklen_t len;
        snprintf(name, sizeof(name), "joyride/l/%s:%u/%d.%u%s", ip, jr_addr_port(&bound),
                 (int)getpid(), n, v6only ? "/v6only" : "");
        memset(&sun, 0, sizeof(sun));
        sun.sun_family = AF_UNIX;
        memcpy(sun.sun_path + 1, name, strlen(name));
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
        if (bind(u, (struct sockaddr *)&sun, len) == 0)
            break;
        if (errno != EADDRINUSE) {
            real_close(u);
            return real_listen(fd, backlog);
        }
    }
    if (tries == 64 || real_listen(u, backlog) != 0) {
        real_close(u);
        return real_listen(fd, backlog);
    }
    /* Linux shares a listening port only among SO_REUSEPORT sockets: say whether this
     * one is (the service applies the rule across processes). */
    reuse = 0;
    reuselen = sizeof(reuse);
    if (real_getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &reuse, &reuselen) != 0)
        reuse = 0;
    channels = jr_channels_wanted();
    status = jr_request(JR_OP_LISTEN,
                        (reuse ? JR_FLAG_REUSEPORT : 0) | (channels ? JR_FLAG_CHANNELS : 0),
                        &bound, name, JR_LISTEN_TIMEOUT_S, &reply, NULL);
    if (status == JR_UNREACHABLE || status == JR_NOT_ACCELERATED) {
        real_close(u);
        return real_listen(fd, backlog);
    }
    if (status != 0) {
        real_close(u);
        errno = status > 0 ? status : EPROTO;
        return -1;
    }
    jr_carry_keepalive(fd, u, JR_LISTENER);
    if (jr_replace(u, fd) != 0)
        return -1;
    jr_note_backlog(fd, backlog); /* for TCP_INFO */
    /* The service grants ring mode in the reply's op (protocol.REPLY_CHANNELS), and a
     * service from before that flag in the remote port. */
    if (fd < JR_MAX_FD)
        jr_ring_listener[fd] = channels && ((reply.op & JR_REPLY_CHANNELS) != 0 ||
                                            (reply.remote_port & JR_FLAG_CHANNELS) != 0);
    jr_listener_kind_set(fd, JR_LK_JOYRIDE);
    return 0;
}

/* connect on a descriptor that is already a Joyride connection: Linux TCP's answer,
 * never the unix socket's EINVAL. Event loops call connect again to learn how a
 * non-blocking one ended (hiredis's redisCheckConnectDone, the "connect until EISCONN"
 * idiom). A failed handshake answers with its error. Otherwise EISCONN, also while the
 * handshake still runs: the descriptor was writable at once and SO_ERROR said 0, so it
 * behaves as Linux's deferred connect does (TCP_FASTOPEN_CONNECT: in
 * net/ipv4/af_inet.c __inet_stream_connect a connecting socket answers EISCONN), not
 * EALREADY, which no caller woken by POLLOUT expects. */
static int jr_getinfo(int fd, struct jr_conninfo *out);

/* SO_ERROR of the Joyride connection fd: the error its failure left, once (Linux
 * clears sk_err as it reports it), else 0; -1 when the service cannot say (the
 * connection is gone from it and its error was read already). The service tells a
 * failure (a reset, a refused or timed-out handshake) by letting go of its end of the
 * socket, which the application's end then shows as a hang-up or an error. Without
 * either nothing has failed that the application could know of yet, and 0 is Linux's
 * answer for a socket whose reset has not arrived: no need to ask the service
 * (OP_GETINFO, a round trip to its control plane, about 130 us here), which event
 * loops would otherwise pay once per connect (hiredis, APR and libuv ask after every
 * one). joyride.socket answers by the same rule (sockopts.hung_up). */
static int jr_so_error(int fd)
{
    struct pollfd p = {.fd = fd, .events = 0};
    struct jr_conninfo ci;
    int saved = errno;

    if (jr_real_poll(&p, 1, 0) == 0) {
        errno = saved;
        return 0;
    }
    return jr_getinfo(fd, &ci) == 0 ? ci.so_error : -1;
}

static int jr_connect_again(int fd)
{
    int err = jr_so_error(fd);

    errno = err > 0 ? err : EISCONN;
    return -1;
}

/* real_connect, but a Joyride connection answers as jr_connect_again says. Looked at
 * only after the unix socket's EINVAL for a TCP address, so no other call pays. */
static int jr_real_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    struct jr_info info;
    int r = real_connect(fd, addr, len);

    if (r == 0 || errno != EINVAL || !addr ||
        (addr->sa_family != AF_INET && addr->sa_family != AF_INET6) ||
        jr_classify(fd, &info) != JR_CONNECTION)
        return r;
    return jr_connect_again(fd);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    union jr_addr bound, dst;
    struct jr_reply reply;
    const char *outgoing;
    int status, newfd, fl, nonblocking, channels;
    struct jr_epmemo reg;

    jr_init();
    outgoing = jr_env(JR_ENV_OUTGOING);
    /* An AF_INET6 socket's connect to a v4-mapped address stays the kernel's. */
    if (!addr || !outgoing || strcmp(outgoing, "1") != 0 || jr_disabled() ||
        !(addr->sa_family == AF_INET ? len >= sizeof(struct sockaddr_in)
          : addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6) &&
            !IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)addr)->sin6_addr)) ||
        !jr_is_inet_stream(fd, &bound) || bound.sa.sa_family != addr->sa_family)
        return jr_real_connect(fd, addr, len);
    memset(&dst, 0, sizeof(dst));
    memcpy(&dst, addr, addr->sa_family == AF_INET6 ? sizeof(dst.in6) : sizeof(dst.in4));
    fl = fcntl(fd, F_GETFL);
    nonblocking = fl >= 0 && (fl & O_NONBLOCK);
    /* A non-blocking connect must not hold the caller's event loop for the handshake:
     * the service then answers at once and the handshake goes on behind the
     * descriptor (protocol.FLAG_NONBLOCK). */
    /* Asked only where a claim can follow: the ring table ends at JR_MAX_FD. */
    channels = fd < JR_MAX_FD && jr_channels_wanted();
    status = jr_request(JR_OP_CONNECT,
                        (nonblocking ? JR_FLAG_NONBLOCK : 0) | (channels ? JR_FLAG_CHANNELS : 0),
                        &dst, NULL, nonblocking ? JR_LISTEN_TIMEOUT_S : JR_CONNECT_TIMEOUT_S,
                        &reply, &newfd);
    if (status == JR_UNREACHABLE || status == JR_NOT_ACCELERATED) {
        if (newfd >= 0)
            real_close(newfd);
        return jr_real_connect(fd, addr, len);
    }
    if (status != 0 || newfd < 0) {
        if (newfd >= 0)
            real_close(newfd);
        errno = status > 0 ? status : EPROTO;
        return -1;
    }
    jr_carry_keepalive(fd, newfd, JR_CONNECTION);
    reg = jr_epoll_registered(fd); /* the dup3 below drops it with the old file */
    if (jr_replace(newfd, fd) != 0)
        return -1;
    /* A ring still on the number is a closed connection's the shim did not see close (a
     * raw system call): fd was a kernel socket until now. */
    jr_ring_close(fd);
    /* Granted (the reply's op says so): the claim is the connection's first bytes,
     * before the application's, and the service delivers nothing before it. */
    if (channels && (reply.op & JR_REPLY_CHANNELS))
        jr_ring_claim(fd);
    jr_epoll_carry(fd, reg);
    if (nonblocking) {
        errno = EINPROGRESS; /* writable at once: POLLOUT, then SO_ERROR 0 */
        return -1;
    }
    return 0;
}

/* Whether ss names a Joyride connection (its service end's bound name); info gets it. */
static int jr_connection_name(const struct sockaddr_storage *ss, socklen_t sl,
                              struct jr_info *info)
{
    char name[sizeof(((struct sockaddr_un *)0)->sun_path)];

    memset(info, 0, sizeof(*info));
    return ss->ss_family == AF_UNIX &&
           jr_abstract_name((const struct sockaddr_un *)ss, sl, name, sizeof(name)) &&
           jr_parse_connection(name, info);
}

static void jr_translate_peer(const struct sockaddr_storage *ss, socklen_t sl,
                              struct sockaddr *addr, socklen_t *addrlen)
{
    struct jr_info info;

    if (jr_connection_name(ss, sl, &info))
        jr_copy_out(&info.remote, jr_addr_len(&info.remote), addr, addrlen);
    else
        jr_copy_out(ss, sl, addr, addrlen);
}

/* Close a connection to the Joyride listener fd that did not come from the service; say
 * so and report it. */
static void jr_refuse(int conn, int fd)
{
    char listener[sizeof(((struct sockaddr_un *)0)->sun_path)] = "";
    struct ucred cred = {.pid = 0, .uid = (uid_t)-1};
    socklen_t len = sizeof(cred);
    struct jr_reply reply;
    struct jr_info info;
    unsigned long n = __atomic_add_fetch(&jr_refused, 1, __ATOMIC_RELAXED);
    int saved = errno;

    memset(&info, 0, sizeof(info));
    jr_listener_name(fd, listener, sizeof(listener), &info);
    real_getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len);
    real_close(conn);
    if ((n & (n - 1)) == 0) /* the 1st, 2nd, 4th, 8th ...: a flood cannot flood stderr */
        jr_say("joyride: refused a connection to %s from pid %ld, uid %ld: only the Joyride "
               "service delivers connections (%lu refused so far)", listener,
               (long)cred.pid, (long)(int)cred.uid, n);
    jr_request(JR_OP_REFUSED, 0, &info.local, listener, JR_REPORT_TIMEOUT_S, &reply, NULL);
    errno = saved;
}

/* accept4 for every caller: a connection accepted on a Joyride listener is returned only
 * when the service delivered it (see the header comment); its address is the TCP peer. */
static int jr_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int r;

    for (;;) {
        sl = sizeof(ss);
        r = real_accept4(fd, (struct sockaddr *)&ss, &sl, flags);
        if (r < 0 || ss.ss_family != AF_UNIX || !jr_is_joyride_listener(fd))
            break; /* a kernel listener, or a failure: as libc says */
        if (jr_from_service(fd, r)) {
            /* The number was free: a ring still on it is a closed connection's that the
             * shim did not see close (a raw system call). */
            jr_ring_close(r);
            jr_inherit_options(fd, r); /* as Linux's accepted sockets inherit theirs */
            if (fd < JR_MAX_FD && jr_ring_listener[fd])
                jr_ring_claim(r); /* its first bytes: the claim, before the application's */
            break;
        }
        jr_refuse(r, fd); /* and take the next (EAGAIN if none waits) */
    }
    if (r >= 0 && addr && addrlen)
        jr_translate_peer(&ss, sl, addr, addrlen);
    return r;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    jr_init();
    return jr_accept(fd, addr, addrlen, flags);
}

int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    jr_init();
    return jr_accept(fd, addr, addrlen, 0);
}

int getsockname(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    struct jr_info info;

    jr_init();
    switch (jr_classify(fd, &info)) {
    case JR_CONNECTION:
    case JR_LISTENER:
        jr_copy_out(&info.local, jr_addr_len(&info.local), addr, addrlen);
        return 0;
    default:
        return real_getsockname(fd, addr, addrlen);
    }
}

int getpeername(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);

    jr_init();
    if (real_getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    jr_translate_peer(&ss, sl, addr, addrlen);
    return 0;
}

/* ------------------------------------------------------- datagram-style calls
 *
 * Programs written for TCP still call recvfrom/sendto (sockperf does, with the
 * address it got back). On a Joyride connection the kernel sees a unix stream socket:
 * the address a receive reports is the service end's bound name, and a send with a
 * destination fails with EISCONN. A receive reports no address, as Linux's TCP does (an
 * address length of 0; the caller's buffer untouched); sends retry without the
 * destination only after the kernel refused with EISCONN, so kernel sockets pay
 * nothing extra, and a ring-mode send ignores it, as TCP does.
 */

/* What a receive on fd reports as its source, from the name the kernel gave (ss): none
 * for a Joyride connection (TCP's), else the name itself. */
static void jr_receive_source(const struct sockaddr_storage *ss, socklen_t sl,
                              struct sockaddr *addr, socklen_t *addrlen)
{
    struct jr_info info;

    if (jr_connection_name(ss, sl, &info))
        *addrlen = 0;
    else
        jr_copy_out(ss, sl, addr, addrlen);
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                 socklen_t *addrlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    ssize_t r;

    jr_init();
    struct jr_ring *ring = jr_ring_of(fd);
    if (ring != NULL) {
        r = jr_ring_recv(fd, ring, buf, len, flags);
        if (r >= 0 && addr && addrlen)
            *addrlen = 0; /* TCP reports no source */
        return r;
    }
    if (!addr || !addrlen)
        return real_recvfrom(fd, buf, len, flags, addr, addrlen);
    r = real_recvfrom(fd, buf, len, flags, (struct sockaddr *)&ss, &sl);
    if (r >= 0)
        jr_receive_source(&ss, sl, addr, addrlen);
    return r;
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    struct sockaddr_storage ss;
    void *name;
    socklen_t namelen, sl;
    ssize_t r;

    jr_init();
    struct jr_ring *ring = jr_ring_of(fd);
    if (ring != NULL && msg != NULL) {
        r = jr_ring_recvv(fd, ring, msg->msg_iov, (int)msg->msg_iovlen, flags);
        msg->msg_controllen = 0; /* TCP carries no ancillary data */
        msg->msg_flags = 0;
        if (r >= 0)
            msg->msg_namelen = 0; /* nor a source */
        return r;
    }
    if (!msg || !msg->msg_name)
        return real_recvmsg(fd, msg, flags);
    name = msg->msg_name;
    namelen = msg->msg_namelen;
    msg->msg_name = &ss;
    msg->msg_namelen = sizeof(ss);
    r = real_recvmsg(fd, msg, flags);
    sl = msg->msg_namelen;
    msg->msg_name = name;
    msg->msg_namelen = namelen;
    if (r >= 0)
        jr_receive_source(&ss, sl, (struct sockaddr *)name, &msg->msg_namelen);
    return r;
}

/* Did the kernel refuse a destination because fd is a connected Joyride stream? */
static int jr_refused_destination(int fd, const void *dest)
{
    struct jr_info info;
    int saved = errno;

    if (saved != EISCONN || !dest || jr_classify(fd, &info) != JR_CONNECTION) {
        errno = saved;
        return 0;
    }
    return 1;
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *dest,
               socklen_t destlen)
{
    ssize_t r;

    jr_init();
    struct jr_ring *ring = jr_ring_of(fd);
    if (ring != NULL)
        return jr_ring_send(fd, ring, buf, len, flags); /* TCP ignores the destination */
    r = real_sendto(fd, buf, len, flags, dest, destlen);
    if (r < 0 && jr_refused_destination(fd, dest))
        /* Linux TCP ignores the destination of a send on a connected socket. */
        r = real_sendto(fd, buf, len, flags, NULL, 0);
    return r;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct msghdr copy;
    ssize_t r;

    jr_init();
    struct jr_ring *ring = jr_ring_of(fd);
    if (ring != NULL && msg != NULL)
        return jr_ring_sendv(fd, ring, msg->msg_iov, (int)msg->msg_iovlen, flags);
    if (jr_revert_passed(msg) < 0)
        return -1; /* a ring descriptor passed on would read tokens as data */
    r = real_sendmsg(fd, msg, flags);
    if (r < 0 && msg && jr_refused_destination(fd, msg->msg_name)) {
        copy = *msg;
        copy.msg_name = NULL;
        copy.msg_namelen = 0;
        r = real_sendmsg(fd, &copy, flags);
    }
    return r;
}

/* ---------------------------------------------------------------- options
 *
 * Answered as a kernel TCP socket in the descriptor's state answers (issue 14's table,
 * tests/integration/service/test_sockopt_table.py): what the unix socket holds with
 * the same meaning (SO_LINGER, SO_RCVTIMEO, SO_KEEPALIVE ...) from the unix socket;
 * what belongs to a TCP socket from a scratch kernel socket with the descriptor's
 * options set (jr_scratch); what only the connection knows (TCP_INFO, TCP_MAXSEG,
 * IP_MTU, TCP_WINDOW_CLAMP, SO_ERROR, SIOCOUTQ) from the service (OP_GETINFO).
 */

/* SOL_SOCKET options a unix socket refuses or answers differently from TCP: a scratch
 * kernel socket decides them (SO_PASSCRED/SO_PASSSEC: refused on TCP since Linux 6.x;
 * SO_PEER*: a TCP socket has no peer credentials). */
static int jr_sol_as_tcp(int optname, int get)
{
    switch (optname) {
    case SO_REUSEPORT: case SO_ZEROCOPY: case SO_TXREHASH: case SO_PASSCRED:
    case SO_PASSSEC:
        return 1;
    case SO_DETACH_REUSEPORT_BPF: case SO_ATTACH_REUSEPORT_CBPF:
    case SO_ATTACH_REUSEPORT_EBPF:
        return !get;
    case SO_PEERCRED: case SO_PEERGROUPS: case SO_PEERSEC:
    case SO_REUSEADDR: /* not applied to the unix socket (jr_apply_natively) */
        return get;
    }
    return 0;
}

/* Set options a kernel TCP socket refuses in the descriptor's state though a fresh
 * (closed) one may take them (do_tcp_setsockopt): an errno, or 0. `first`: the checks
 * Linux makes before it looks at the value; else those it makes after. */
static int jr_state_refuses(enum jr_kind kind, int level, int optname, const void *optval,
                            socklen_t optlen, int first)
{
    int v = 0;

    if (level != IPPROTO_TCP || !optval || optlen < sizeof(int))
        return 0;
    memcpy(&v, optval, sizeof(int));
    if (first) {
        switch (optname) {
        case TCP_REPAIR:         /* closed or established sockets only */
            return kind == JR_LISTENER ? EPERM : 0;
        case TCP_QUEUE_SEQ:      /* closed sockets only */
            return EPERM;
        }
        return 0;
    }
    switch (optname) {
    case TCP_FASTOPEN:           /* listeners and closed sockets only */
    case TCP_FASTOPEN_NO_COOKIE:
        return kind == JR_CONNECTION ? EINVAL : 0;
    case TCP_FASTOPEN_CONNECT:   /* before connect only */
        return EINVAL;
    case TCP_WINDOW_CLAMP:       /* 0 (no clamp) only before connect */
        return v == 0 ? EINVAL : 0;
    }
    return 0;
}

/* Ints as the kernel writes them: SOL_SOCKET and IPPROTO_TCP truncate to the caller's
 * length; IPPROTO_IP writes one byte when given less than an int and the value fits. */
static int jr_put_int(int level, void *optval, socklen_t *optlen, int value)
{
    socklen_t len;

    if (!optlen || !optval) {
        errno = EFAULT;
        return -1;
    }
    if ((int)*optlen < 0) {
        errno = EINVAL;
        return -1;
    }
    len = *optlen < sizeof(int) ? *optlen : sizeof(int);
    if (level == IPPROTO_IP && len < sizeof(int) && len > 0 && value >= 0 &&
        value <= 255) {
        *(unsigned char *)optval = (unsigned char)value;
        *optlen = 1;
        return 0;
    }
    memcpy(optval, &value, len);
    *optlen = len;
    return 0;
}

/* OP_GETINFO for the Joyride connection fd: 0 and *out, or an errno (or JR_UNREACHABLE). */
static int jr_getinfo(int fd, struct jr_conninfo *out)
{
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);
    union jr_addr none;
    struct jr_reply reply;
    char name[sizeof(sun.sun_path)];
    int saved = errno, status;

    if (real_getpeername(fd, (struct sockaddr *)&sun, &len) != 0 ||
        !jr_abstract_name(&sun, len, name, sizeof(name))) {
        errno = saved;
        return ENOTCONN;
    }
    memset(&none, 0, sizeof(none));
    none.in4.sin_family = AF_INET;
    status = jr_request_ex(JR_OP_GETINFO, 0, &none, name, JR_REPORT_TIMEOUT_S, &reply, out,
                           sizeof(*out), NULL);
    errno = saved;
    return status;
}

static int jr_has_option(int fd, int level, int optname)
{
    struct jr_opt *opts;
    unsigned n, i;
    int found = 0;

    opts = jr_copy_opts(fd, &n, NULL);
    for (i = 0; i < n; i++)
        found |= opts[i].level == level && opts[i].name == optname;
    free(opts);
    return found;
}

/* getsockopt on the scratch kernel socket (jr_scratch). */
static int jr_scratch_get(int fd, const struct jr_info *info, int level, int optname,
                          void *optval, socklen_t *optlen)
{
    int k = jr_scratch(fd, info->local.sa.sa_family), r, err;

    if (k < 0)
        return -1;
    r = real_getsockopt(k, level, optname, optval, optlen);
    err = errno;
    real_close(k);
    errno = err;
    return r;
}

static uint32_t jr_u32_at(const unsigned char *p)
{
    uint32_t v;

    memcpy(&v, p, sizeof(v));
    return v;
}

/* How long the running kernel's struct tcp_info is (it grows with new kernels). */
static socklen_t jr_tcp_info_size(void)
{
    static socklen_t size;
    socklen_t got = __atomic_load_n(&size, __ATOMIC_RELAXED);
    unsigned char buf[512];
    int k, saved = errno;

    if (got)
        return got;
    got = sizeof(buf);
    k = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (k < 0 || real_getsockopt(k, IPPROTO_TCP, TCP_INFO, buf, &got) != 0)
        got = JR_TCP_INFO_SIZE;
    if (k >= 0)
        real_close(k);
    __atomic_store_n(&size, got, __ATOMIC_RELAXED);
    errno = saved;
    return got;
}

/* TCP_INFO: the kernel's length and layout, with the connection's figures from the
 * service; a listener's as tcp_get_info makes them (a scratch socket's rates, window and
 * reordering, the state, the backlog); a connection the service no longer has, a
 * closed socket's. */
static int jr_tcp_info(int fd, const struct jr_info *info, void *optval, socklen_t *optlen)
{
    static const struct { size_t at, len; } listener_fields[] = {
        {80, 4},  /* tcpi_snd_cwnd */
        {88, 4},  /* tcpi_reordering */
        {104, 16} /* tcpi_pacing_rate, tcpi_max_pacing_rate */
    };
    unsigned char buf[512], out[512];
    struct jr_conninfo ci;
    socklen_t len, size = jr_tcp_info_size();
    size_t i;
    int backlog;
    unsigned n;

    if (!optval || !optlen) {
        errno = EFAULT;
        return -1;
    }
    if ((int)*optlen < 0) {
        errno = EINVAL;
        return -1;
    }
    len = *optlen < size ? *optlen : size;
    if (len > sizeof(out))
        len = sizeof(out);
    memset(out, 0, sizeof(out));
    if (info->kind == JR_CONNECTION && jr_getinfo(fd, &ci) == 0) {
        memcpy(out, ci.tcp_info, len < JR_TCP_INFO_SIZE ? len : JR_TCP_INFO_SIZE);
    } else {
        if (jr_scratch_get(fd, info, IPPROTO_TCP, TCP_INFO, buf, &len) != 0)
            return -1;
        if (info->kind == JR_LISTENER) {
            for (i = 0; i < sizeof(listener_fields) / sizeof(listener_fields[0]); i++)
                if (listener_fields[i].at + listener_fields[i].len <= len)
                    memcpy(out + listener_fields[i].at, buf + listener_fields[i].at,
                           listener_fields[i].len);
            out[0] = 10; /* TCP_LISTEN */
            free(jr_copy_opts(fd, &n, &backlog));
            memcpy(out + 28, &backlog, sizeof(backlog)); /* tcpi_sacked: the backlog */
        } else {
            memcpy(out, buf, len); /* gone: a closed socket's */
        }
    }
    memcpy(optval, out, len);
    *optlen = len;
    return 0;
}

static int jr_get_sol(int fd, const struct jr_info *info, int optname, void *optval,
                      socklen_t *optlen)
{
    int err;

    switch (optname) {
    case SO_DOMAIN:
        return jr_put_int(SOL_SOCKET, optval, optlen, info->local.sa.sa_family);
    case SO_PROTOCOL:
        return jr_put_int(SOL_SOCKET, optval, optlen, IPPROTO_TCP);
    case SO_ERROR:
        if (info->kind == JR_CONNECTION && (err = jr_so_error(fd)) >= 0)
            return jr_put_int(SOL_SOCKET, optval, optlen, err);
        return real_getsockopt(fd, SOL_SOCKET, optname, optval, optlen);
    case SO_PEERNAME:
        /* sk_getsockopt: ENOTCONN without a peer, EINVAL for a longer buffer than the
         * address, else the caller's length of it. */
        if (info->kind != JR_CONNECTION) {
            errno = ENOTCONN;
            return -1;
        }
        if (!optval || !optlen) {
            errno = EFAULT;
            return -1;
        }
        if (*optlen > jr_addr_len(&info->remote)) {
            errno = EINVAL;
            return -1;
        }
        memcpy(optval, &info->remote, *optlen);
        return 0;
    }
    return jr_scratch_get(fd, info, SOL_SOCKET, optname, optval, optlen);
}

#ifndef IP_PROTOCOL
#define IP_PROTOCOL 52 /* linux/in.h; glibc's netinet/in.h lacks it */
#endif

static int jr_get_ip_tcp(int fd, const struct jr_info *info, int level, int optname,
                         void *optval, socklen_t *optlen)
{
    struct jr_conninfo ci;
    uint32_t v;

    if (level == IPPROTO_TCP && optname == TCP_INFO)
        return jr_tcp_info(fd, info, optval, optlen);
    if (level == IPPROTO_IP && optname == IP_PROTOCOL) /* Linux answers inet_num: the port */
        return jr_put_int(level, optval, optlen, jr_addr_port(&info->local));
    if (level == IPPROTO_TCP && optname == TCP_ZEROCOPY_RECEIVE) {
        /* Zero-copy receive maps TCP's pages; the bytes are in a unix socket here. */
        errno = info->kind == JR_LISTENER ? ENOTCONN : EOPNOTSUPP;
        return -1;
    }
    if (info->kind == JR_CONNECTION &&
        ((level == IPPROTO_TCP && optname == TCP_MAXSEG) ||
         (level == IPPROTO_IP && optname == IP_MTU) ||
         (level == IPPROTO_IPV6 && optname == IPV6_MTU &&
          info->local.sa.sa_family == AF_INET6) || /* AF_INET: EOPNOTSUPP, as Linux */
         (level == IPPROTO_TCP && optname == TCP_WINDOW_CLAMP &&
          !jr_has_option(fd, level, optname)))) {
        if (jr_getinfo(fd, &ci) == 0) {
            v = level == IPPROTO_TCP && optname == TCP_WINDOW_CLAMP ? ci.window_clamp
                : jr_u32_at(ci.tcp_info + (level == IPPROTO_TCP ? 16 : 60)); /* snd_mss, pmtu */
            return jr_put_int(level, optval, optlen, (int)v);
        }
        if (level != IPPROTO_TCP) {
            errno = ENOTCONN; /* no route cached: the connection is gone */
            return -1;
        }
    }
    return jr_scratch_get(fd, info, level, optname, optval, optlen);
}

/* A TCP/IP option (or a SOL_SOCKET one a unix socket cannot hold) on a Joyride
 * descriptor: what a kernel TCP socket would say, remembered if it takes it. */
static int jr_set_as_tcp(int fd, const struct jr_info *info, int level, int optname,
                         const void *optval, socklen_t optlen)
{
    int k = jr_scratch(fd, info->local.sa.sa_family), r, err = 0, prio = 0;
    socklen_t plen = sizeof(prio);

    if (k < 0)
        return -1;
    if ((err = jr_state_refuses(info->kind, level, optname, optval, optlen, 1)) != 0)
        r = -1;
    else if ((r = real_setsockopt(k, level, optname, optval, optlen)) != 0)
        err = errno;
    else if ((err = jr_state_refuses(info->kind, level, optname, optval, optlen, 0)) != 0)
        r = -1;
    /* Linux derives the priority from IP_TOS, and the unix socket holds SO_PRIORITY. */
    if (r == 0 && level == IPPROTO_IP && optname == IP_TOS &&
        real_getsockopt(k, SOL_SOCKET, SO_PRIORITY, &prio, &plen) == 0)
        real_setsockopt(fd, SOL_SOCKET, SO_PRIORITY, &prio, sizeof(prio));
    real_close(k);
    if (r != 0) {
        errno = err;
        return -1;
    }
    jr_record(fd, level, optname, optval, optlen);
    return 0;
}

int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
{
    struct jr_info info;
    int saved, r, code, value, status;

    jr_init();
    if (level == IPPROTO_TCP && optname == TCP_NODELAY && jr_ring_of(fd) != NULL) {
        /* Nearly every server sets it on each connection. Linux takes any int here
         * (do_tcp_setsockopt) and the service's connections run with Nagle off anyway,
         * so it is only remembered, for getsockopt: the scratch socket's way cost eight
         * system calls a connection. */
        if (optval == NULL || optlen < sizeof(int)) {
            errno = optval == NULL ? EFAULT : EINVAL;
            return -1;
        }
        jr_record(fd, level, optname, optval, optlen);
        return 0;
    }
    if (level == SOL_SOCKET && jr_sol_as_tcp(optname, 0) &&
        jr_classify(fd, &info) != JR_NONE)
        return jr_set_as_tcp(fd, &info, level, optname, optval, optlen);
    r = real_setsockopt(fd, level, optname, optval, optlen);
    if (r == 0 && level == SOL_SOCKET && (optname == SO_SNDBUF || optname == SO_SNDBUFFORCE))
        jr_ring_sndbuf_set(fd);
    saved = errno;
    code = jr_setopt_code(level, optname);
    if (code && optval && optlen >= sizeof(int) &&
        (r == 0 || saved == EOPNOTSUPP || saved == ENOPROTOOPT) &&
        jr_classify(fd, &info) != JR_NONE) {
        memcpy(&value, optval, sizeof(int));
        status = jr_forward_option(fd, info.kind, code, value);
        if (status == EINVAL) { /* out of range, as the kernel would say */
            errno = EINVAL;
            return -1;
        }
        /* Applied; or the service is gone, and the connection with it. */
        jr_record(fd, level, optname, optval, optlen);
        return 0;
    }
    if (r == 0) {
        /* Kept for kernel sockets too: they carry over if it becomes a Joyride one. */
        if (level == SOL_SOCKET || level == IPPROTO_TCP || level == IPPROTO_IP ||
            level == IPPROTO_IPV6)
            jr_record(fd, level, optname, optval, optlen);
        errno = saved;
        return 0;
    }
    if ((level != IPPROTO_TCP && level != IPPROTO_IP && level != IPPROTO_IPV6) ||
        (saved != EOPNOTSUPP && saved != ENOPROTOOPT) || jr_classify(fd, &info) == JR_NONE) {
        errno = saved;
        return r;
    }
    return jr_set_as_tcp(fd, &info, level, optname, optval, optlen);
}

int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
{
    struct jr_info info;
    int saved, r;

    jr_init();
    if (level == SOL_SOCKET) {
        if ((optname == SO_DOMAIN || optname == SO_PROTOCOL || optname == SO_ERROR ||
             optname == SO_PEERNAME || jr_sol_as_tcp(optname, 1)) &&
            jr_classify(fd, &info) != JR_NONE)
            return jr_get_sol(fd, &info, optname, optval, optlen);
        r = real_getsockopt(fd, level, optname, optval, optlen);
        if (r == 0 && optname == SO_BUF_LOCK)
            jr_ring_buf_lock(fd, optval, optlen);
        return r;
    }
    r = real_getsockopt(fd, level, optname, optval, optlen);
    if (r == 0 || (level != IPPROTO_TCP && level != IPPROTO_IP && level != IPPROTO_IPV6))
        return r;
    saved = errno;
    if ((saved != EOPNOTSUPP && saved != ENOPROTOOPT) || jr_classify(fd, &info) == JR_NONE) {
        errno = saved;
        return r;
    }
    return jr_get_ip_tcp(fd, &info, level, optname, optval, optlen);
}

/* ---------------------------------------------------------------- ioctl, dup, close */

#define JR_SIOCOUTQ 0x5411    /* TIOCOUTQ: bytes not yet acknowledged */
#define JR_SIOCOUTQNSD 0x894B /* bytes not yet sent */

/* The send queue's ioctls count bytes the TCP connection holds, which only the service
 * knows; FIONREAD (SIOCINQ) is the unix socket's own, and right: what can be read. */
int ioctl(int fd, unsigned long request, ...)
{
    struct jr_info info;
    struct jr_conninfo ci;
    va_list ap;
    void *arg;
    int v = 0;

    va_start(ap, request);
    arg = va_arg(ap, void *);
    va_end(ap);
    jr_init();
    if (request == FIONREAD && arg && jr_ring_nread(fd, &v) == 0) {
        memcpy(arg, &v, sizeof(v));
        return 0;
    }
    if ((request == JR_SIOCOUTQ || request == JR_SIOCOUTQNSD) &&
        jr_classify(fd, &info) != JR_NONE) {
        if (info.kind == JR_LISTENER) {
            errno = EINVAL; /* tcp_ioctl: not on a listener */
            return -1;
        }
        if (jr_getinfo(fd, &ci) == 0)
            v = (int)(request == JR_SIOCOUTQ ? ci.outq : ci.notsent);
        if (!arg) {
            errno = EFAULT;
            return -1;
        }
        memcpy(arg, &v, sizeof(v));
        return 0;
    }
    return real_ioctl(fd, request, arg);
}

/* r is now a copy of fd (dup, dup2, dup3, fcntl(F_DUPFD)): it is what fd is to the
 * shim, its remembered options, no listener's proof, and fd's ring if fd has one. */
static void jr_dup_noted(int fd, int r)
{
    jr_copy_entry(fd, r);
    jr_forget_proof(r);
    jr_listener_kind_set(r, fd >= 0 && fd < JR_MAX_FD ? jr_listener_kinds[fd] : JR_LK_UNKNOWN);
    jr_ring_dup(fd, r);
}

int dup(int fd)
{
    int r;

    jr_init();
    r = real_dup(fd);
    if (r >= 0) {
        jr_dup_noted(fd, r);
    }
    return r;
}

int dup2(int fd, int to)
{
    int r;

    jr_init();
    r = real_dup2(fd, to);
    if (r >= 0 && r != fd) {
        jr_dup_noted(fd, r);
    }
    return r;
}

int dup3(int fd, int to, int flags)
{
    int r;

    jr_init();
    r = real_dup3(fd, to, flags);
    if (r >= 0) {
        jr_dup_noted(fd, r);
    }
    return r;
}

/* fcntl's F_DUPFD and F_DUPFD_CLOEXEC are dup's: the copy is what the original is to
 * the shim (a ring-mode descriptor's copy reads the rings, not the tokens). Every other
 * command goes straight through. fcntl64 is the same call under glibc's LFS name. */
static int (*real_fcntl)(int, int, ...);

int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    void *arg;
    int r;

    va_start(ap, cmd);
    arg = va_arg(ap, void *); /* an int or a pointer: the kernel reads a long */
    va_end(ap);
    RESOLVE(fcntl);
    r = real_fcntl(fd, cmd, arg);
    if (r >= 0 && r != fd && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) {
        jr_init();
        jr_dup_noted(fd, r);
    }
    return r;
}

int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

/* What the shim knows about fd goes before the number is free for another file. */
static void jr_forget_fd(int fd)
{
    jr_forget_options(fd);
    jr_forget_proof(fd);
    jr_listener_kind_set(fd, JR_LK_UNKNOWN);
    jr_ring_close(fd);
}

int close(int fd)
{
    jr_init();
    jr_forget_fd(fd);
    return real_close(fd);
}

/* close_range(2) and closefrom(3) (glibc's closefrom is close_range): each number
 * closed is forgotten as close forgets it, or its ring, options and listener kind would
 * stay on the number for the next socket or file given it. CLOSE_RANGE_CLOEXEC closes
 * nothing now (exec does, and the tables go with the image). A vfork child (Python's
 * subprocess closes so before exec) shares its parent's memory: it notes the range's
 * close once (jr_vfork_close_range), and leaves the parent's tables alone. */
static int (*real_close_range)(unsigned int, unsigned int, int);
static void (*real_closefrom)(int);

static void jr_forget_range(unsigned int first, unsigned int last)
{
    int child = -1;

    if (last >= JR_MAX_FD)
        last = JR_MAX_FD - 1;
    for (unsigned int fd = first; fd <= last && fd < JR_MAX_FD; fd++) {
        if (child < 0 && (jr_table[fd] || jr_listener_kinds[fd] || jr_proofs[fd] ||
                          jr_ring_of((int)fd) != NULL))
            child = jr_vfork_child(); /* asked once, and only if there is state */
        if (child > 0) {
            jr_vfork_close_range(fd, last); /* one note (the numbers before had no state) */
            return;
        }
        if (child == 0)
            jr_forget_fd((int)fd);
    }
}

int close_range(unsigned int first, unsigned int last, int flags)
{
    jr_init();
    RESOLVE(close_range);
    if (!real_close_range) {
        errno = ENOSYS;
        return -1;
    }
    if (!(flags & CLOSE_RANGE_CLOEXEC) && first <= last)
        jr_forget_range(first, last);
    return real_close_range(first, last, flags);
}

void closefrom(int lowfd)
{
    jr_init();
    RESOLVE(closefrom);
    if (lowfd >= 0)
        jr_forget_range((unsigned int)lowfd, ~0U);
    if (real_closefrom)
        real_closefrom(lowfd);
}

/* syscall(2) itself: libuv (Node.js) closes its descriptors with syscall(SYS_close)
 * to avoid close's cancellation point, which no close interception sees. Unseen, a
 * ring-mode connection's state would stay on the number, and the next file given it
 * (an accepted connection, an opened file) would read and write that connection's
 * rings. Other calls go straight through. (Six argument words are read, as glibc's
 * own syscall does; the kernel uses those the call has.) */
static long (*real_syscall)(long, ...);

long syscall(long number, ...)
{
    va_list ap;
    long a[6];

    va_start(ap, number);
    for (int i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    RESOLVE(syscall);
    if (number == SYS_close) {
        jr_init();
        jr_forget_fd((int)a[0]);
    }
#ifdef SYS_close_range
    if (number == SYS_close_range && !((int)a[2] & CLOSE_RANGE_CLOEXEC) &&
        (unsigned int)a[0] <= (unsigned int)a[1]) {
        jr_init();
        jr_forget_range((unsigned int)a[0], (unsigned int)a[1]);
    }
#endif
    return real_syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
