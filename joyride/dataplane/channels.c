/* The data plane's shared-memory channels (issue 17; docs/channels.md): the arenas it
 * has mapped and the channels it has laid out in them, whichever side runs each
 * connection's TCP. A flow in C or a pump in Python names its channel by id (index + 1;
 * 0: stream mode, a plain unix socket) and both move its bytes with the same chan.h
 * steps (dataplane.c's dp_chan_* entry points). Included by the build before
 * dataplane.c.
 *
 * One table serves every plane of the service (dp_share_channels: the workers, one
 * thread each), so an application's arena is mapped once and its connections may land
 * on any worker, and move between them, keeping their channel and its id.
 *   - What is the table's (arenas, their busy slots, the free ids, the door each arena
 *     has) changes only under `lock`: a claim, a release, a trim, a door taken or
 *     dropped, and the look at a door's arms. These come with a connection's start and
 *     end, not with its bytes.
 *   - A channel's own state (struct jr_chan_svc) is its flow's: the plane that runs the
 *     flow, or Python while every plane is parked, moves its bytes without the lock. A
 *     flow moves between planes only while both are parked (workers.c's hand-over).
 *   - An arena's bell is pushed by whichever plane runs the channel, under the arena's
 *     wake lock (chan.h, struct jr_arena_wake). Its door is watched by the plane that
 *     took it; a channel arms in door mode only there (chan_door_mode), elsewhere on
 *     its socket. */

#include <pthread.h>

#include "chan_claim.h"

enum { CHAN_ARENAS = 64 }; /* applications with channels at once (idle ones are evicted) */
enum { CHAN_PY_DOOR = 32 }; /* pumps asleep on a door at once (dp_chan_wait_door) */

struct dp_chan {
    struct jr_chan_svc svc;
    uint8_t used;
};

struct dp_chans {
    pthread_mutex_t lock; /* the table's: see the header comment */
    struct jr_arenas arenas;
    struct dp_chan *slots;
    uint32_t *free_ids; /* ids (index + 1) not in use */
    uint32_t n_free, max;
    uint32_t refs;      /* the planes that use it (changed while they are all parked) */
    /* Channels whose Python pump sleeps on their arena's door for rx room while its
     * writer is blocked (dp_chan_wait_door): a ring of that door wakes Python once one
     * of them has room (py_door_look). A rare state, so a short list; when it is full
     * the pump arms on its socket, as before. Under `lock`. */
    uint32_t py_door[CHAN_PY_DOOR];
    uint32_t n_py_door;
};

static void chans_lock(struct dp_chans *c)
{
    pthread_mutex_lock(&c->lock);
}

static void chans_unlock(struct dp_chans *c)
{
    pthread_mutex_unlock(&c->lock);
}

static void chans_free(struct dp_chans *c);

/* A table for max channels, used by one plane; NULL: no memory. */
static struct dp_chans *chans_new(uint32_t max)
{
    struct dp_chans *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->max = max;
    c->refs = 1;
    pthread_mutex_init(&c->lock, NULL);
    c->slots = calloc(max ? max : 1, sizeof *c->slots);
    c->free_ids = calloc(max ? max : 1, sizeof *c->free_ids);
    if (jr_arenas_init(&c->arenas, CHAN_ARENAS) < 0 || c->slots == NULL ||
        c->free_ids == NULL) {
        chans_free(c);
        return NULL;
    }
    for (uint32_t i = 0; i < max; i++)
        c->free_ids[c->n_free++] = max - i; /* id 1 is handed out first */
    return c;
}

static void chans_free(struct dp_chans *c)
{
    if (c->arenas.a != NULL)
        jr_arenas_free(&c->arenas);
    free(c->slots);
    free(c->free_ids);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* A plane lets go of its table: the last one frees it. */
static void chans_put(struct dp_chans *c)
{
    if (c != NULL && --c->refs == 0)
        chans_free(c);
}

/* Whether no channel lives in the table and no arena is mapped: a plane's table may
 * then give way to a shared one. */
static int chans_unused(const struct dp_chans *c)
{
    return c->n_free == c->max && c->arenas.mapped == 0;
}

/* The service's view of channel id, or NULL (0, out of range, released). */
static struct jr_chan_svc *chan_svc(struct dp_chans *c, uint32_t id)
{
    if (id == 0 || id > c->max || !c->slots[id - 1].used)
        return NULL;
    return &c->slots[id - 1].svc;
}

/* The application's first bytes on a connection whose listener claims ring mode
 * (buf/len, with the descriptor fd that came with them, or -1; the caller closes it).
 * A claim (chan_claim.h: exactly one message with an arena's descriptor) is checked
 * and answered: the channel's id (> 0), or -errno with the bytes consumed (a refused
 * claim: stream mode). -ENOMSG: not a claim, the bytes are the application's payload.
 * claimable: nothing has been delivered to the application yet. bell, door: the
 * process's own application's bell and door when the claim comes from it (embedded
 * mode), else NULL. */
static int64_t chans_first_bytes(struct dp_chans *c, const uint8_t *buf, uint32_t len, int fd,
                                 int claimable, struct jr_bell *bell, struct jr_door *door)
{
    if (fd < 0 || len != sizeof(struct jr_chan_claim))
        return -ENOMSG; /* only a claim comes with a descriptor, and alone */
    uint32_t magic;
    memcpy(&magic, buf, sizeof magic);
    if (magic != JR_CLAIM_MAGIC)
        return -ENOMSG;
    chans_lock(c);
    if (c->n_free == 0)
        claimable = 0; /* no room: answered, stream mode */
    struct jr_chan_svc svc;
    int64_t rc = jr_chan_svc_claim(&c->arenas, buf, len, fd, claimable, bell, &svc);
    if (rc == 0) {
        if (svc.bell != NULL)
            svc.door = door;
        uint32_t id = c->free_ids[--c->n_free];
        c->slots[id - 1] = (struct dp_chan){.svc = svc, .used = 1};
        rc = id;
    }
    chans_unlock(c);
    return rc;
}

static void chans_release(struct dp_chans *c, uint32_t id)
{
    struct jr_chan_svc *s = chan_svc(c, id);
    if (s == NULL)
        return;
    chans_lock(c);
    jr_chan_svc_release(&c->arenas, s);
    c->slots[id - 1].used = 0;
    c->free_ids[c->n_free++] = id;
    chans_unlock(c);
}

/* After the verdict on a claim from the process's own application (bell_for): ring its
 * bell with the claimed slot, whatever the verdict, so its event loop learns it without
 * waiting (chan_claim.h, JR_CLAIM_BELL). Bytes that are no bell claim ring nothing. */
static void chans_verdict_bell(struct jr_bell *bell, const uint8_t *buf, uint32_t len)
{
    struct jr_chan_claim cl;
    if (len != sizeof cl)
        return;
    memcpy(&cl, buf, sizeof cl);
    uint64_t slot = jr_claim_slot(&cl);
    if (cl.magic == JR_CLAIM_MAGIC && (cl.flags & JR_CLAIM_BELL) && slot < UINT32_MAX)
        jr_bell_ring(bell, (uint32_t)slot);
}
