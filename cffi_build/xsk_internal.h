/* What the translation units of xsk._xsk share (xsk.c, xsk_tx_thread.c), beyond the
 * API of xsk.h: each is defined once, in the file named beside it, and hidden from the
 * module's exported symbols. */
#ifndef JOYRIDE_XSK_INTERNAL_H
#define JOYRIDE_XSK_INTERNAL_H

#include <stdint.h>

#include "xsk.h"
#include "xsk_ring.h"

#define XSK_HIDDEN __attribute__((visibility("hidden")))

/* Whether the kernel wants a sendto() to transmit (always in copy mode; a driver that
 * polls the tx ring itself clears the flag). */
static inline int tx_wakeup_wanted(struct xsk_sock *s)
{
    return !s->need_wakeup || prod_needs_wakeup(&s->tx);
}

/* xsk.c: wake the kernel until it has consumed the tx ring up to `prod`. */
XSK_HIDDEN int xsk_kick_rounds(struct xsk_sock *s, uint32_t prod, uint64_t *kicks,
                               uint64_t *errors);

/* xsk_tx_thread.c: xsk_kick while a transmit thread runs. */
XSK_HIDDEN int xsk_tx_thread_kick(struct xsk_sock *s);

#endif
