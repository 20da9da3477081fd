/* The application's side of a shared-memory channel (chan_claim.h, chan.h), as the
 * preload shim will run it, for tests of the service's side (dataplane.h, dp_app_*):
 * one arena of one slot, its claim, and reads and writes that never block. Included by
 * the build after channels.c. */

struct dp_app_chan {
    int sock; /* first: the socket steps' context is an int * (hub.c's too) */
    struct jr_arena_app arena;
    struct jr_chan_app view;
    uint32_t id;
    uint32_t slot;
    int borrowed; /* the arena is another channel's (dp_app_claim_sibling) */
    int mode; /* -EAGAIN: no verdict yet; 1: ring; 0: stream */
    uint64_t bells; /* doorbells on the connection's socket */
    uint64_t doors; /* writes to the arena's door (only a ring that found it armed) */
};

static int app_io_drain(void *ctx)
{
    char buf[256];
    ssize_t r = recv(*(int *)ctx, buf, sizeof buf, MSG_DONTWAIT);
    return r < 0 ? -errno : (int)r;
}

static int app_io_bell(void *ctx)
{
    struct dp_app_chan *a = ctx;
    char b = 'B';
    a->bells++;
    if (send(a->sock, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1 || errno == EAGAIN)
        return 0;
    return -errno;
}

static int app_io_door(void *ctx)
{
    struct dp_app_chan *a = ctx;
    int rc = jr_arena_app_ring_door(&a->arena);
    if (rc > 0)
        a->doors++;
    return rc;
}

static int app_io_fill(void *ctx)
{
    return jr_chan_fill_burst(sendto, *(int *)ctx);
}

static int app_io_wait(void *ctx, short what)
{
    (void)ctx;
    (void)what;
    return -EAGAIN; /* never called: every call here is non-blocking */
}

static struct jr_chan_io app_io_of(struct dp_app_chan *a)
{
    return (struct jr_chan_io){app_io_drain, app_io_bell, app_io_fill, app_io_wait, a, NULL,
                               a->arena.door >= 0 ? app_io_door : NULL, NULL, NULL};
}

struct dp_app_chan *dp_app_claim(int sock, uint32_t rx_cap, uint32_t tx_cap, uint32_t id)
{
    return dp_app_claim_door(sock, rx_cap, tx_cap, id, 0);
}

struct dp_app_chan *dp_app_claim_door(int sock, uint32_t rx_cap, uint32_t tx_cap, uint32_t id,
                                      int door)
{
    struct dp_app_chan *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    *a = (struct dp_app_chan){.sock = sock, .id = id, .mode = -EAGAIN};
    if (jr_arena_app_create(&a->arena, door ? 2 : 1, rx_cap, tx_cap) < 0 ||
        (door && jr_arena_app_door(&a->arena) < 0) ||
        jr_chan_app_claim(sock, &a->arena, 0, id, 0) < 0) {
        dp_app_free(a);
        return NULL;
    }
    return a;
}

struct dp_app_chan *dp_app_claim_sibling(struct dp_app_chan *first, int sock, uint32_t id)
{
    struct dp_app_chan *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    *a = (struct dp_app_chan){.sock = sock, .arena = first->arena, .id = id, .slot = 1,
                              .borrowed = 1, .mode = -EAGAIN};
    if (a->arena.slots < 2 || jr_chan_app_claim(sock, &a->arena, 1, id, 0) < 0) {
        free(a);
        return NULL;
    }
    return a;
}

int dp_app_door_fd(const struct dp_app_chan *a, int service_end)
{
    return service_end ? a->arena.door_peer : a->arena.door;
}

int dp_app_verdict(struct dp_app_chan *a, int timeout_ms)
{
    if (a->mode == -EAGAIN)
        a->mode = timeout_ms > 0 ? jr_chan_app_wait_verdict(&a->arena, a->slot, a->id, &a->view,
                                                            timeout_ms)
                                 : jr_chan_app_verdict(&a->arena, a->slot, a->id, &a->view);
    return a->mode;
}

int64_t dp_app_read(struct dp_app_chan *a, uint8_t *buf, uint32_t n)
{
    if (a->mode != 1)
        return -EINVAL;
    struct jr_chan_io io = app_io_of(a);
    return jr_chan_read(&a->view, &io, buf, n, 0);
}

int64_t dp_app_write(struct dp_app_chan *a, const uint8_t *buf, uint32_t n)
{
    if (a->mode != 1)
        return -EINVAL;
    struct jr_chan_io io = app_io_of(a);
    return jr_chan_write(&a->view, &io, buf, n, 0);
}

void dp_app_shutdown(struct dp_app_chan *a)
{
    struct jr_chan_io io = app_io_of(a);
    if (a->mode == 1)
        jr_chan_shutdown_write(&a->view, &io);
}

int dp_app_slot_done(struct dp_app_chan *a)
{
    return jr_chan_app_slot_done(&a->arena, a->slot, a->id);
}

void dp_app_poke_tx_tail(struct dp_app_chan *a, uint32_t tail)
{
    if (a->mode == 1)
        JR_STORE(&a->view.shm->tx.tail, tail);
}

/* A read that cancelled its arm and left bytes asks for a token (jr_chan_read); that
 * happens only in a race with the service, which tests make at will with this. */
void dp_app_retoken(struct dp_app_chan *a)
{
    struct jr_chan_io io = app_io_of(a);
    if (a->mode == 1)
        jr_chan_app_retoken(&a->view, &io);
}

void dp_app_rings(const struct dp_app_chan *a, uint64_t *bells, uint64_t *doors)
{
    *bells = a->bells;
    *doors = a->doors;
}

void dp_app_free(struct dp_app_chan *a)
{
    if (a == NULL)
        return;
    if (!a->borrowed) /* free a sibling first: it maps this arena */
        jr_arena_app_destroy(&a->arena);
    free(a);
}
