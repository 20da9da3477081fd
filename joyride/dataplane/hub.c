/* The application's side of the shared-memory channels when the application is the
 * service's own process (embedded mode; joyride/aio/rings.py): one arena of channels,
 * the process's bell (chan.h, struct jr_bell) and reads and writes that never block.
 * Included by the build after chanapp.c.
 *
 * One thread (the event loop's) calls these; the data plane's thread reaches the hub
 * only through the shared channel words and the bell, by chan.h's rules. */

#include <sys/eventfd.h>
#include <sys/stat.h>

/* A slot's socket steps' context: app_io_drain and app_io_fill read the first member
 * (chanapp.c), hub_io_bell the door. */
struct hub_io_ctx {
    int sock;             /* the connection's socket (-1: free) */
    struct jr_door *door;
};

struct dp_hub {
    struct jr_arena_app arena;
    struct jr_bell *bell;  /* service -> application: rx owes a token */
    struct jr_door door;   /* application -> service: look at the channels */
    struct hub_io_ctx *io; /* per slot */
    uint32_t *claim;      /* per slot: the claim number of its last claim */
    struct jr_chan_app *view;
    uint8_t *state;       /* per slot: HUB_FREE, HUB_CLAIMED, HUB_RING, HUB_CLOSING */
    uint32_t *free_slots; /* a stack of HUB_FREE slots: the last freed (warm) first */
    uint32_t n_free;
    uint32_t *closing;    /* HUB_CLOSING slots, oldest first (a ring of `slots`) */
    uint32_t closing_head, n_closing;
    uint32_t next_claim;
    uint32_t lost_seen;   /* the bell's lost count the loop has answered */
};

enum { HUB_FREE, HUB_CLAIMED, HUB_RING, HUB_CLOSING };

void dp_hub_free(struct dp_hub *h)
{
    if (h == NULL)
        return;
    jr_arena_app_destroy(&h->arena);
    if (h->bell != NULL && h->bell->efd >= 0)
        close(h->bell->efd);
    free(h->bell);
    if (h->door.efd >= 0)
        close(h->door.efd);
    free(h->io);
    free(h->claim);
    free(h->view);
    free(h->state);
    free(h->free_slots);
    free(h->closing);
    free(h);
}

struct dp_hub *dp_hub_new(uint32_t slots, uint32_t cap)
{
    uint32_t bell_cap = 1;
    while (bell_cap < 2 * slots) /* a token and a verdict per slot fit, so lost is rare */
        bell_cap <<= 1;
    struct dp_hub *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->arena.fd = -1;
    h->door.efd = -1;
    h->bell = calloc(1, sizeof *h->bell + (size_t)bell_cap * sizeof(uint32_t));
    if (h->bell != NULL)
        h->bell->efd = -1; /* dp_hub_free closes it: not descriptor 0 on a failure */
    h->io = malloc(slots * sizeof *h->io);
    h->claim = calloc(slots, sizeof *h->claim);
    h->view = calloc(slots, sizeof *h->view);
    h->state = calloc(slots, sizeof *h->state);
    h->free_slots = malloc(slots * sizeof *h->free_slots);
    h->closing = malloc(slots * sizeof *h->closing);
    if (h->bell == NULL || h->io == NULL || h->claim == NULL || h->view == NULL ||
        h->state == NULL || h->free_slots == NULL || h->closing == NULL)
        goto fail;
    h->bell->cap = bell_cap;
    h->bell->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    h->door.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->bell->efd < 0 || h->door.efd < 0 ||
        jr_arena_app_create(&h->arena, slots, cap, cap) < 0)
        goto fail;
    struct stat st;
    if (fstat(h->arena.fd, &st) != 0)
        goto fail;
    h->bell->arena_dev = (uint64_t)st.st_dev;
    h->bell->arena_ino = (uint64_t)st.st_ino;
    for (uint32_t i = 0; i < slots; i++) {
        h->io[i] = (struct hub_io_ctx){.sock = -1, .door = &h->door};
        h->free_slots[h->n_free++] = slots - 1 - i; /* slot 0 is handed out first */
    }
    return h;
fail:
    dp_hub_free(h);
    return NULL;
}

int dp_hub_efd(const struct dp_hub *h)
{
    return h->bell->efd;
}

uint32_t dp_hub_slots(const struct dp_hub *h)
{
    return h->arena.slots;
}

int dp_set_bell(struct dp *dp, struct dp_hub *h)
{
    return dp_set_door(dp, h ? h->bell : NULL, h ? &h->door : NULL);
}

static int hub_io_bell(void *ctx)
{
    jr_door_ring(((struct hub_io_ctx *)ctx)->door);
    return 0;
}

/* The hub's socket steps (struct jr_chan_io): the filler goes to the connection's
 * socket as in the shim, the doorbell to the process's door; tokens never come (the
 * bell has them). */
static struct jr_chan_io hub_io(struct dp_hub *h, uint32_t slot)
{
    return (struct jr_chan_io){app_io_drain, hub_io_bell, app_io_fill, app_io_wait,
                               &h->io[slot], NULL, NULL, NULL, NULL};
}

/* Slots the service has released since their connections closed go back on the free
 * stack, looked at oldest first (jr_chan_app_slot_done); one not done yet, or whose
 * claim was never answered (chan_claim.h: the service may answer late), goes to the
 * back of the line. */
enum { HUB_RECLAIM_LOOKS = 4 }; /* per claim: a bounded look, the connection's cost */

static void hub_reclaim(struct dp_hub *h, uint32_t looks)
{
    while (looks-- > 0 && h->n_closing > 0) {
        uint32_t slot = h->closing[h->closing_head];
        h->closing_head = (h->closing_head + 1) % h->arena.slots;
        h->n_closing--;
        if (jr_chan_app_slot_done(&h->arena, slot, h->claim[slot])) {
            h->state[slot] = HUB_FREE;
            h->free_slots[h->n_free++] = slot;
        } else { /* not yet (or never): to the back, so it holds up no other */
            h->closing[(h->closing_head + h->n_closing++) % h->arena.slots] = slot;
        }
    }
}

/* A slot for a new claim: the most recently freed (its pages are warm, so the arena's
 * resident memory follows the connections open at once, not all that ever were), or
 * h->arena.slots if none is free. */
static uint32_t hub_slot(struct dp_hub *h)
{
    hub_reclaim(h, h->n_free == 0 ? h->n_closing : HUB_RECLAIM_LOOKS);
    return h->n_free ? h->free_slots[--h->n_free] : h->arena.slots;
}

int64_t dp_hub_claim(struct dp_hub *h, int sock)
{
    uint32_t slot = hub_slot(h);
    uint32_t id = ++h->next_claim ? h->next_claim : ++h->next_claim; /* never 0 */
    if (slot == h->arena.slots) { /* none free: a claim made to be refused (stream mode) */
        int rc = jr_chan_app_claim(sock, &h->arena, slot, id, JR_CLAIM_BELL);
        return rc < 0 ? rc : -ENOSPC;
    }
    int rc = jr_chan_app_claim(sock, &h->arena, slot, id, JR_CLAIM_BELL);
    if (rc < 0) {
        h->free_slots[h->n_free++] = slot;
        return rc;
    }
    h->io[slot].sock = sock;
    h->claim[slot] = id;
    h->state[slot] = HUB_CLAIMED;
    return slot;
}

int dp_hub_verdict(struct dp_hub *h, uint32_t slot)
{
    if (slot >= h->arena.slots || h->state[slot] == HUB_FREE || h->state[slot] == HUB_CLOSING)
        return -EINVAL;
    if (h->state[slot] == HUB_RING)
        return 1;
    int v = jr_chan_app_verdict(&h->arena, slot, h->claim[slot], &h->view[slot]);
    if (v == 1) {
        h->state[slot] = HUB_RING;
        /* The kernel's minimum, as the shim: a little filler makes the socket
         * unwritable while tx is full (chan.h's writable rule). With the default a fill
         * takes hundreds of sends, and a data plane draining them as they come can keep
         * the writer filling for as long as it drains. */
        int one = 1;
        setsockopt(h->io[slot].sock, SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
    }
    return v;
}

static struct jr_chan_app *hub_ring(struct dp_hub *h, uint32_t slot)
{
    return slot < h->arena.slots && h->state[slot] == HUB_RING ? &h->view[slot] : NULL;
}

int64_t dp_hub_read(struct dp_hub *h, uint32_t slot, uint8_t *buf, uint32_t n)
{
    struct jr_chan_app *a = hub_ring(h, slot);
    if (a == NULL)
        return -EINVAL;
    struct jr_chan_io io = hub_io(h, slot);
    return jr_chan_read(a, &io, buf, n, 0);
}

int64_t dp_hub_write(struct dp_hub *h, uint32_t slot, const uint8_t *buf, uint32_t n)
{
    struct jr_chan_app *a = hub_ring(h, slot);
    if (a == NULL)
        return -EINVAL;
    struct jr_chan_io io = hub_io(h, slot);
    return jr_chan_write(a, &io, buf, n, 0);
}

int dp_hub_shutdown(struct dp_hub *h, uint32_t slot)
{
    struct jr_chan_app *a = hub_ring(h, slot);
    if (a == NULL)
        return -EINVAL;
    struct jr_chan_io io = hub_io(h, slot);
    jr_chan_shutdown_write(a, &io);
    return 0;
}

void dp_hub_done(struct dp_hub *h, uint32_t slot)
{
    if (slot >= h->arena.slots || h->state[slot] == HUB_FREE || h->state[slot] == HUB_CLOSING)
        return;
    h->io[slot].sock = -1; /* the caller closes the socket: that ends the service's side */
    h->state[slot] = HUB_CLOSING;
    h->closing[(h->closing_head + h->n_closing++) % h->arena.slots] = slot;
}

uint32_t dp_hub_take(struct dp_hub *h, uint32_t *out, uint32_t n)
{
    return jr_bell_take(h->bell, out, n);
}

int dp_hub_arm(struct dp_hub *h)
{
    return jr_bell_arm(h->bell, h->lost_seen);
}

int dp_hub_lost(struct dp_hub *h)
{
    uint32_t lost = JR_LOAD(&h->bell->lost);
    if (lost == h->lost_seen)
        return 0;
    h->lost_seen = lost;
    return 1;
}

