/* Ring primitives for AF_XDP, after libxdp's xsk.h.
 *
 * Each ring has one producer and one consumer, in different address spaces. The
 * producer writes descriptors, then publishes them with a release store of its index;
 * the consumer reads the index with an acquire load before it reads descriptors, and
 * returns slots with a release store of its own index after it has read them. Those
 * two pairings are the only ordering needed (Documentation/networking/af_xdp.rst,
 * "Rings"); the cached copies keep the shared cache line out of the common case.
 */
#ifndef JOYRIDE_XSK_RING_H
#define JOYRIDE_XSK_RING_H

#include <stdint.h>
#include <linux/if_xdp.h>

static inline uint32_t ring_load_acquire(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void ring_store_release(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* --- producer side (fill, tx) ------------------------------------------------------ */

/* Free slots, refreshing the cached consumer only when the cache says too few. */
static inline uint32_t prod_nb_free(struct xsk_ring *r, uint32_t nb)
{
    uint32_t free_entries = r->cached_cons - r->cached_prod;
    if (free_entries >= nb)
        return free_entries;
    /* cached_cons is kept `size` ahead so that the subtraction above gives free slots. */
    r->cached_cons = ring_load_acquire(r->consumer) + r->size;
    return r->cached_cons - r->cached_prod;
}

static inline uint32_t prod_reserve(struct xsk_ring *r, uint32_t nb, uint32_t *idx)
{
    uint32_t avail = prod_nb_free(r, nb);
    if (avail < nb)
        nb = avail;
    *idx = r->cached_prod;
    r->cached_prod += nb;
    return nb;
}

static inline void prod_submit(struct xsk_ring *r)
{
    /* Descriptors written before this store are visible to the kernel after it. */
    ring_store_release(r->producer, r->cached_prod);
}

static inline int prod_needs_wakeup(const struct xsk_ring *r)
{
    return (__atomic_load_n(r->flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP) != 0;
}

/* --- consumer side (rx, completion) ------------------------------------------------ */

static inline uint32_t cons_nb_avail(struct xsk_ring *r, uint32_t nb)
{
    uint32_t entries = r->cached_prod - r->cached_cons;
    if (entries == 0) {
        r->cached_prod = ring_load_acquire(r->producer);
        entries = r->cached_prod - r->cached_cons;
    }
    return entries > nb ? nb : entries;
}

static inline uint32_t cons_peek(struct xsk_ring *r, uint32_t nb, uint32_t *idx)
{
    uint32_t entries = cons_nb_avail(r, nb);
    *idx = r->cached_cons;
    r->cached_cons += entries;
    return entries;
}

static inline void cons_release(struct xsk_ring *r)
{
    /* Our reads of the released slots happen before the kernel may overwrite them. */
    ring_store_release(r->consumer, r->cached_cons);
}

static inline struct xdp_desc *ring_desc(struct xsk_ring *r, uint32_t idx)
{
    return &((struct xdp_desc *)r->ring)[idx & r->mask];
}

static inline uint64_t *ring_addr(struct xsk_ring *r, uint32_t idx)
{
    return &((uint64_t *)r->ring)[idx & r->mask];
}

#endif
