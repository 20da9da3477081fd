/*
 * joyride_revert.c - leaving ring mode for good (issue 17; docs/channels.md, "Leaving
 * ring mode"), included by joyride_ring.c.
 *
 * A ring-mode descriptor is only readable through this process's rings: a new program
 * (exec) or another process (a descriptor passed over SCM_RIGHTS, a posix_spawn'd or
 * system()'d child), or stdio on it (fdopen: glibc reads with calls no shim sees),
 * would read the service's tokens as data. So before any of those the shim turns the
 * connection back into a plain stream (chan.h, JR_CHAN_REVERT_BYTE):
 *   1. a new socket pair; its service end goes to the service with one byte on the
 *      connection's socket, and nothing more is written into tx;
 *   2. the other end takes the place of every descriptor naming the connection (dup3:
 *      same numbers, same close-on-exec flags, the old socket's O_NONBLOCK, and its
 *      shutdowns);
 *   3. the service takes what tx holds, puts the new socket in its old one's place
 *      (under its name: the application waits for this, so that getpeername on the new
 *      socket spells the connection at once), sends the rx bytes never read, then
 *      everything else: nothing is lost, nothing comes twice.
 *
 * A vfork child (Python's subprocess, which dup2s the connection onto 0 and 1 before it
 * execs) runs in its parent's memory: it must not change the shim's tables. It notes its
 * dups and closes of ring descriptors in jr_vdups under its own pid, and at exec reverts
 * what its own descriptor table names. The parent's copies then name the old socket,
 * which the service let go: a write there fails with EPIPE and a read, once rx is empty,
 * with ECONNRESET, as for a connection another process took over (bytes still in rx go
 * to the child too: a parent that goes on reading a connection it handed on is not
 * served). One process per connection is ring mode's rule; fork locks are not built.
 *
 * In the application's own process (system, popen, posix_spawn, SCM_RIGHTS, fdopen)
 * the descriptors' epoll registrations, which the kernel drops with the old socket, are
 * made again for the new one (jr_epoll_regs).
 *
 * Not covered: a raw execve system call; another thread inside a call on the connection
 * while it is reverted (its call may see the new socket).
 */

#include <dirent.h>
#include <spawn.h>
#include <sys/epoll.h>

/* Whether this is a vfork child (or a clone without fork's handlers): its memory is its
 * parent's. Asked only where a ring descriptor is involved (getpid is a system call). */
static int jr_vfork_child(void)
{
    return getpid() != __atomic_load_n(&jr_pid, __ATOMIC_RELAXED);
}

static void jr_revert_atfork_child(void)
{
    __atomic_store_n(&jr_pid, getpid(), __ATOMIC_RELAXED);
}

/* A vfork child's dups and closes of ring descriptors, each under its pid: the
 * descriptors lo..hi name r now (NULL: no ring). The newest entry for a descriptor wins.
 * A dup or close notes one descriptor; a close_range one entry for its whole range,
 * so that a child closing every descriptor of a server with hundreds of connections
 * (Python's subprocess) does not push its dups onto 0 and 1 out of the notes. */
struct jr_vdup {
    /* The note's pid and the top of its range, one word: a child grows its newest
     * close note upward by a compare-and-swap of it (jr_vfork_close), which fails once
     * another child's note has taken the entry. */
    union {
        struct {
            pid_t pid;
            int hi;
        };
        uint64_t pid_hi;
    };
    int lo;
    struct jr_ring *r;
};
#define JR_VDUPS 64
static struct jr_vdup jr_vdups[JR_VDUPS];
static unsigned jr_vdup_next;

static uint64_t jr_vdup_key(pid_t pid, int hi)
{
    struct jr_vdup d = {.pid = pid, .hi = hi};
    return d.pid_hi;
}

static void jr_vdup_note_range(int lo, int hi, struct jr_ring *r)
{
    struct jr_vdup *d =
        &jr_vdups[__atomic_fetch_add(&jr_vdup_next, 1, __ATOMIC_RELAXED) % JR_VDUPS];
    d->lo = lo;
    d->r = r;
    /* Last: a child that saw its own pid here, about to grow its note, either finds
     * this word changed (its swap fails) or swaps before this store, which then
     * overwrites the growth; this note comes out whole either way. */
    __atomic_store_n(&d->pid_hi, jr_vdup_key(getpid(), hi), __ATOMIC_RELEASE);
}

static void jr_vdup_note(int fd, struct jr_ring *r)
{
    jr_vdup_note_range(fd, fd, r);
}

/* A process's notes, oldest first. */
struct jr_vnotes {
    int n;
    struct jr_vdup at[JR_VDUPS];
};

static const struct jr_vnotes jr_no_notes; /* a process whose memory is its own */

static void jr_vnotes_of(pid_t me, struct jr_vnotes *v)
{
    v->n = 0;
    unsigned end = __atomic_load_n(&jr_vdup_next, __ATOMIC_RELAXED);
    for (unsigned i = end > JR_VDUPS ? end - JR_VDUPS : 0; i < end; i++)
        if (jr_vdups[i % JR_VDUPS].pid == me)
            v->at[v->n++] = jr_vdups[i % JR_VDUPS];
}

/* This process's view for a revert: 1 when its memory is its own (no notes: the shim's
 * tables are kept up too), 0 in a vfork child (its notes in *v). */
static int jr_vnotes_here(struct jr_vnotes *v)
{
    if (!jr_vfork_child()) {
        v->n = 0;
        return 1;
    }
    jr_vnotes_of(getpid(), v);
    return 0;
}

/* The ring fd names in this process: the notes' word, else the table's. */
static struct jr_ring *jr_ring_named(int fd, const struct jr_vnotes *v)
{
    for (int i = v->n - 1; i >= 0; i--)
        if (v->at[i].lo <= fd && fd <= v->at[i].hi)
            return v->at[i].r;
    return jr_ring_of(fd);
}

/* Step 1: the revert request, with the new socket's service end. It may wait for room
 * (the socket may be full of filler while tx is). */
static int jr_revert_send(int fd, int service_end)
{
    char b = JR_CHAN_REVERT_BYTE;
    struct iovec iov = {&b, 1};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } ctl;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                       .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(h), &service_end, sizeof service_end);
    for (;;) {
        if (real_sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
            return 0;
        if (errno != EAGAIN && errno != EINTR)
            return -1;
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (real_poll(&p, 1, -1) < 0 && errno != EINTR)
            return -1;
        if ((p.revents & (POLLHUP | POLLERR)) && !(p.revents & POLLOUT)) {
            errno = EPIPE; /* the service's end is gone: the connection with it */
            return -1;
        }
    }
}

/* The service let the connection go (it was done both ways, or reset) while rx still
 * held bytes the application had not read: the new socket gets them here, then its EOF
 * (the service's end of it is this one, closed by the caller: a write fails with EPIPE,
 * as the connection's would). rx holds at most JR_RING_CAP bytes: the send buffer is
 * raised to take them whole. */
static void jr_revert_local(struct jr_ring *r, int end)
{
    struct jr_chan *c = r->view.shm;
    uint32_t head = c->rx.head, left = JR_LOAD(&c->rx.tail) - head;
    int size = (int)(2 * JR_RING_CAP);
    real_setsockopt(end, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    while (left > 0 && left <= r->view.rx_cap) {
        uint32_t off = head & (r->view.rx_cap - 1);
        uint32_t run = r->view.rx_cap - off < left ? r->view.rx_cap - off : left;
        ssize_t n = real_sendto(end, r->view.rx_data + off, run, MSG_DONTWAIT | MSG_NOSIGNAL,
                                NULL, 0);
        if (n <= 0)
            break; /* (more than the raised buffer takes: the rest is lost) */
        head += (uint32_t)n;
        left -= (uint32_t)n;
    }
    real_shutdown(end, SHUT_WR);
}

/* One registration of a descriptor in one of this process's epoll sets. */
struct jr_epreg {
    int epfd, fd;
    uint32_t events;
    uint64_t data;
};

/* The registrations of r's descriptors in this process's epoll sets, from
 * /proc/self/fdinfo (the kernel drops a registration with its file, and the dup3 of a
 * revert replaces the file): at most n, how many. */
static int jr_epoll_regs(const struct jr_ring *r, const struct jr_vnotes *v,
                         struct jr_epreg *out, int n)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return 0;
    int got = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && got < n) {
        char path[64], link[32], line[256];
        int epfd = atoi(e->d_name);
        snprintf(path, sizeof path, "/proc/self/fd/%d", epfd);
        ssize_t len = readlink(path, link, sizeof link - 1);
        if (e->d_name[0] == '.' || len <= 0)
            continue;
        link[len] = 0;
        if (strcmp(link, "anon_inode:[eventpoll]") != 0)
            continue;
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
        FILE *f = fopen(path, "re");
        if (f == NULL)
            continue;
        while (fgets(line, sizeof line, f) != NULL && got < n) {
            int tfd;
            unsigned events;
            unsigned long long data;
            if (sscanf(line, "tfd: %d events: %x data: %llx", &tfd, &events, &data) == 3 &&
                jr_ring_named(tfd, v) == r)
                out[got++] = (struct jr_epreg){epfd, tfd, events, data};
        }
        fclose(f);
    }
    closedir(d);
    return got;
}

/* The SOL_SOCKET options the application may have set on the old socket (setsockopt
 * passes them to it) that a unix stream socket takes: without them a read under
 * SO_RCVTIMEO would block for ever after the revert. Not the buffer sizes: ring mode
 * shrinks the old socket's SO_SNDBUF for its filler. Set only where the new socket's
 * value differs (SO_MARK needs a privilege the default value does not). */
static const int jr_revert_sockopts[] = {SO_RCVTIMEO, SO_SNDTIMEO, SO_LINGER, SO_RCVLOWAT,
                                         SO_PRIORITY, SO_KEEPALIVE, SO_MARK};

/* The old socket's file status (O_NONBLOCK, O_ASYNC with its owner and signal) and its
 * options (jr_revert_sockopts) onto the new socket, before any descriptor names it.
 * No memory is allocated: a vfork child runs this in its parent's. */
static void jr_revert_carry(int from, int to)
{
    for (size_t i = 0; i < sizeof jr_revert_sockopts / sizeof jr_revert_sockopts[0]; i++) {
        unsigned char was[64], is[64];
        socklen_t wlen = sizeof was, ilen = sizeof is;
        int name = jr_revert_sockopts[i];
        if (real_getsockopt(from, SOL_SOCKET, name, was, &wlen) == 0 &&
            (real_getsockopt(to, SOL_SOCKET, name, is, &ilen) != 0 || ilen != wlen ||
             memcmp(was, is, wlen) != 0))
            real_setsockopt(to, SOL_SOCKET, name, was, wlen);
    }
    struct f_owner_ex owner;
    if (fcntl(from, F_GETOWN_EX, &owner) == 0 && owner.pid != 0)
        fcntl(to, F_SETOWN_EX, &owner);
    int sig = fcntl(from, F_GETSIG);
    if (sig > 0)
        fcntl(to, F_SETSIG, sig);
    int fl = fcntl(from, F_GETFL);
    if (fl >= 0 && (fl & (O_NONBLOCK | O_ASYNC))) /* O_ASYNC after its owner */
        fcntl(to, F_SETFL, fl & (O_NONBLOCK | O_ASYNC));
}

/* Turn r's connection into a plain stream on every descriptor v's process names it by
 * (fd is one of them). keep: the memory is this process's own, so the shim forgets the
 * ring there, and the descriptors' epoll registrations are made again for the new
 * socket (before an exec they would go with the image anyway). A connection that is no
 * longer the service's (reverted by another process, the service gone) is left as it
 * is; one the service let go (released) gets rx's unread bytes and its EOF from here
 * (jr_revert_local). 0, or -1 with errno (nothing changed). */
static int jr_ring_revert(int fd, struct jr_ring *r, const struct jr_vnotes *v, int keep)
{
    int m = jr_ring_settle(fd, r, JR_VERDICT_WAIT_MS);
    if (m == JR_RING_STREAM)
        return 0; /* bytes on the socket are the stream's already */
    if (m != JR_RING_ON) {
        errno = EAGAIN; /* no verdict from the service in JR_VERDICT_WAIT_MS */
        return -1;
    }
    uint32_t magic = JR_LOAD(&r->view.shm->magic);
    if (magic != JR_CHAN_MAGIC && magic != JR_CHAN_RELEASED)
        return 0; /* reverted by another process (or a slot's later use) */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    if (magic == JR_CHAN_RELEASED) {
        jr_revert_local(r, sv[1]);
    } else if (jr_revert_send(fd, sv[1]) < 0) {
        int e = errno;
        real_close(sv[0]);
        real_close(sv[1]);
        errno = e;
        return e == EPIPE || e == ECONNRESET ? 0 : -1; /* the connection is gone */
    }
    real_close(sv[1]);
    /* The service's switch names the new socket (getpeername spells the connection). */
    if (magic == JR_CHAN_MAGIC && jr_chan_app_wait_reverted(r->view.shm, fd) < 0) {
        real_close(sv[0]);
        return 0; /* the service went before it switched: the connection with it */
    }
    /* Step 2: what the old socket's file said, and what was set on the socket. */
    jr_revert_carry(fd, sv[0]);
    ino_t was = keep ? jr_ino(fd) : 0, now = keep ? jr_ino(sv[0]) : 0;
    if (JR_LOAD(&r->view.shm->tx_eof))
        real_shutdown(sv[0], SHUT_WR);
    if (r->rd_shut)
        real_shutdown(sv[0], SHUT_RD);
    struct jr_epreg regs[16];
    int n_regs = keep ? jr_epoll_regs(r, v, regs, 16) : 0;
    for (int k = 0; k < JR_MAX_FD; k++) {
        if (jr_ring_named(k, v) != r)
            continue;
        int fdfl = fcntl(k, F_GETFD);
        if (fdfl < 0)
            continue; /* closed here (a vfork child's closes are not noted as dups) */
        if (keep)
            jr_ring_close(k);
        real_dup3(sv[0], k, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0);
        if (keep)
            jr_rekey_opts(k, was, now); /* getsockopt answers as before */
        if (!keep)
            jr_vdup_note(k, NULL); /* a stream now: a second exec (PATH search) skips it */
    }
    real_close(sv[0]);
    for (int i = 0; i < n_regs; i++) {
        struct epoll_event ev = {.events = regs[i].events, .data.u64 = regs[i].data};
        epoll_ctl(regs[i].epfd, EPOLL_CTL_ADD, regs[i].fd, &ev);
    }
    return 0;
}

/* Before an exec, a spawn or system(): revert every connection a descriptor without
 * close-on-exec names. 0, or -1 with errno (the caller fails with it: a new program
 * reading tokens as data would be worse). */
static int jr_revert_inherited(void)
{
    if (__atomic_load_n(&jr_slots, __ATOMIC_RELAXED) == NULL)
        return 0; /* no claim was ever made: no ring */
    struct jr_vnotes notes, *v = &notes;
    int keep = jr_vnotes_here(v);
    struct jr_ring *done[JR_RING_SLOTS]; /* reverted already, with all their names */
    unsigned n_done = 0;
    for (int fd = 0; fd < JR_MAX_FD; fd++) {
        struct jr_ring *r = jr_ring_named(fd, v);
        if (r == NULL)
            continue;
        int fdfl = fcntl(fd, F_GETFD);
        if (fdfl < 0 || (fdfl & FD_CLOEXEC))
            continue;
        int seen = 0;
        for (unsigned i = 0; i < n_done && !seen; i++)
            seen = done[i] == r;
        if (seen)
            continue; /* its other descriptors were reverted with the first */
        if (jr_ring_revert(fd, r, v, keep) < 0)
            return -1;
        if (n_done < sizeof done / sizeof *done)
            done[n_done++] = r; /* (kept in the tables too when keep: they forgot it) */
    }
    return 0;
}

/* The widest gap a close's note may bridge: a child closing descriptors one by one
 * skips the ones that were never rings. */
#define JR_VCLOSE_BRIDGE 4096

/* jr_ring_close's and jr_ring_dup's part in a vfork child: notes, not the tables.
 * When the child's newest note is a close whose range ends below fd, with no ring of
 * its view between, that note grows up to fd: a child that closes descriptors one at a
 * time upward (a loop up to getdtablesize) then costs one note, as a close_range does,
 * and cannot push its earlier dup2s out of the notes. (A loop downward still costs a
 * note each.) Only the child writes notes under its pid, so while the entry holds its
 * pid and the range's top it is still that note; the swap of that word grows it, or
 * fails once another child's note took the entry, never changing that one. */
static void jr_vfork_close(int fd)
{
    pid_t me = getpid();
    struct jr_vnotes v;
    jr_vnotes_of(me, &v);
    if (v.n > 0 && v.at[v.n - 1].r == NULL) {
        struct jr_vdup last = v.at[v.n - 1];
        if (last.lo <= fd && fd <= last.hi)
            return; /* already noted closed */
        int clear = fd > last.hi && fd - last.hi <= JR_VCLOSE_BRIDGE;
        for (int g = last.hi + 1; clear && g < fd; g++) /* the gap between */
            clear = jr_ring_named(g, &v) == NULL;
        if (clear) {
            unsigned end = __atomic_load_n(&jr_vdup_next, __ATOMIC_RELAXED);
            for (unsigned i = end; i-- > (end > JR_VDUPS ? end - JR_VDUPS : 0);) {
                struct jr_vdup *d = &jr_vdups[i % JR_VDUPS];
                uint64_t want = jr_vdup_key(me, last.hi);
                if (__atomic_load_n(&d->pid, __ATOMIC_ACQUIRE) != me)
                    continue;
                /* This child's newest surviving note: the one to grow, if it is still
                 * the note read above (another child may have taken its entry). */
                if (d->lo == last.lo && d->r == NULL &&
                    __atomic_compare_exchange_n(&d->pid_hi, &want, jr_vdup_key(me, fd), 0,
                                                __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                    return;
                break;
            }
        }
    }
    jr_vdup_note(fd, NULL);
}

/* close_range's in a vfork child: one note (descriptors past the table's end are no
 * rings). */
static void jr_vfork_close_range(unsigned int first, unsigned int last)
{
    if (first < JR_MAX_FD)
        jr_vdup_note_range((int)first, last < JR_MAX_FD ? (int)last : JR_MAX_FD - 1, NULL);
}

static void jr_vfork_dup(int from, int to)
{
    struct jr_vnotes v;
    jr_vnotes_of(getpid(), &v);
    jr_vdup_note(to, jr_ring_named(from, &v));
}

/* sendmsg with SCM_RIGHTS: each ring descriptor passed is reverted first. */
static int jr_revert_passed(const struct msghdr *msg)
{
    if (msg == NULL || msg->msg_controllen == 0 || jr_slots == NULL)
        return 0;
    for (struct cmsghdr *h = CMSG_FIRSTHDR((struct msghdr *)msg); h != NULL;
         h = CMSG_NXTHDR((struct msghdr *)msg, h)) {
        size_t count = jr_cmsg_nfds(h);
        for (size_t i = 0; i < count; i++) {
            int fd = jr_cmsg_fd(h, i);
            struct jr_ring *r = jr_ring_of(fd); /* (a claim's own sendmsg passes none) */
            if (r == NULL)
                continue;
            struct jr_vnotes notes;
            int keep = jr_vnotes_here(&notes);
            if (jr_ring_revert(fd, r, &notes, keep) < 0)
                return -1;
        }
    }
    return 0;
}

/* A ring descriptor this process goes on using in a way the shim cannot see (stdio, a
 * spawn's file action): a stream from now on. Not in a vfork child, which only execs.
 * 0, or -1 with errno. */
static int jr_revert_here(int fd)
{
    struct jr_ring *r = jr_ring_of(fd);
    if (r == NULL || jr_vfork_child())
        return 0;
    return jr_ring_revert(fd, r, &jr_no_notes, 1);
}

/* ------------------------------------------------------------ the intercepted calls */

extern char **environ;
static int (*real_execve)(const char *, char *const[], char *const[]);
static int (*real_execvpe)(const char *, char *const[], char *const[]);
static int (*real_fexecve)(int, char *const[], char *const[]);
static int (*real_execveat)(int, const char *, char *const[], char *const[], int);
static int (*real_posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                               const posix_spawnattr_t *, char *const[], char *const[]);
static int (*real_posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                                const posix_spawnattr_t *, char *const[], char *const[]);
static int (*real_system)(const char *);
static FILE *(*real_popen)(const char *, const char *);

int execve(const char *path, char *const argv[], char *const envp[])
{
    RESOLVE(execve);
    if (jr_revert_inherited() < 0)
        return -1;
    return real_execve(path, argv, envp);
}

int execvpe(const char *file, char *const argv[], char *const envp[])
{
    RESOLVE(execvpe);
    if (jr_revert_inherited() < 0)
        return -1;
    return real_execvpe(file, argv, envp);
}

int execv(const char *path, char *const argv[])
{
    return execve(path, argv, environ);
}

int execvp(const char *file, char *const argv[])
{
    return execvpe(file, argv, environ);
}

int fexecve(int fd, char *const argv[], char *const envp[])
{
    RESOLVE(fexecve);
    if (jr_revert_inherited() < 0)
        return -1;
    return real_fexecve(fd, argv, envp);
}

int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
    RESOLVE(execveat);
    if (real_execveat == NULL) {
        errno = ENOSYS;
        return -1;
    }
    if (jr_revert_inherited() < 0)
        return -1;
    return real_execveat(dirfd, path, argv, envp, flags);
}

/* execl, execlp, execle: their arguments into an array (glibc's own call execve inside
 * the library, where the shim cannot see them). */
#define JR_EXECL_ARGV(first, ap, argv)                                                     \
    size_t n_args = 1;                                                                      \
    va_start(ap, first);                                                                    \
    while (va_arg(ap, char *) != NULL)                                                      \
        n_args++;                                                                           \
    va_end(ap);                                                                             \
    char *argv[n_args + 1];                                                                 \
    argv[0] = (char *)(first);                                                              \
    va_start(ap, first);                                                                    \
    for (size_t i = 1; i <= n_args; i++)                                                    \
        argv[i] = va_arg(ap, char *); /* the last is the NULL */

int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    JR_EXECL_ARGV(arg, ap, argv);
    va_end(ap);
    return execve(path, argv, environ);
}

int execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    JR_EXECL_ARGV(arg, ap, argv);
    va_end(ap);
    return execvpe(file, argv, environ);
}

int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    JR_EXECL_ARGV(arg, ap, argv);
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, argv, envp);
}

/* A file action that dups a ring descriptor into a spawned child: the child reads
 * it, so it is a stream from now on (close-on-exec or not). */
static int (*real_posix_spawn_file_actions_adddup2)(posix_spawn_file_actions_t *, int, int);

int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *actions, int fd, int to)
{
    RESOLVE(posix_spawn_file_actions_adddup2);
    if (jr_revert_here(fd) < 0)
        return errno;
    return real_posix_spawn_file_actions_adddup2(actions, fd, to);
}

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *actions,
                const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    RESOLVE(posix_spawn);
    if (jr_revert_inherited() < 0)
        return errno;
    return real_posix_spawn(pid, path, actions, attr, argv, envp);
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *actions,
                 const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    RESOLVE(posix_spawnp);
    if (jr_revert_inherited() < 0)
        return errno;
    return real_posix_spawnp(pid, file, actions, attr, argv, envp);
}

int system(const char *command)
{
    RESOLVE(system);
    if (command != NULL && jr_revert_inherited() < 0)
        return -1;
    return real_system(command);
}

FILE *popen(const char *command, const char *type)
{
    RESOLVE(popen);
    if (jr_revert_inherited() < 0)
        return NULL;
    return real_popen(command, type);
}

/* fdopen: stdio reads and writes with glibc's own internal calls, which the shim
 * cannot see, so a ring descriptor becomes a plain stream first. */
static FILE *(*real_fdopen)(int, const char *);

FILE *fdopen(int fd, const char *mode)
{
    RESOLVE(fdopen);
    if (jr_revert_here(fd) < 0)
        return NULL;
    return real_fdopen(fd, mode);
}
