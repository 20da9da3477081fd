/* The application sessions' wire format (joyride/service/protocol.py is the authority:
 * REQUEST "<4sHHH16sH108s", REPLY "<4sHHi16sH16sH", little-endian, packed). Shared by
 * the shim, which asks (preload/joyride_preload.c), and the data plane, which answers
 * non-blocking connects itself (joyride/dataplane/sessions.c). Addresses are 16 bytes
 * with the family beside them (an IPv4 address in the first 4). */
#ifndef JR_PROTOCOL_H
#define JR_PROTOCOL_H

#include <stdint.h>

#define JR_MAGIC "JRD2"
#define JR_OP_LISTEN 1
#define JR_OP_CONNECT 2
#define JR_OP_SETOPT 3
#define JR_OP_REFUSED 4
#define JR_OP_GETINFO 5
#define JR_FLAG_NONBLOCK 1      /* OP_CONNECT: reply at once, the handshake behind it */
#define JR_FLAG_REUSEPORT 2     /* OP_LISTEN: the socket has SO_REUSEPORT set */
#define JR_FLAG_CHANNELS 4      /* OP_LISTEN, OP_CONNECT: the application will claim */
#define JR_REPLY_CHANNELS 0x100 /* in a reply's op: the service grants the claim */
#define JR_NOT_ACCELERATED (-1)
#define JR_NOT_ADMITTED (-3)    /* the service's --group leaves the caller out */

struct jr_request {
    char magic[4];
    uint16_t op;
    uint16_t flags;
    uint16_t family;
    uint8_t ip[16];
    uint16_t port;
    char name[108];
} __attribute__((packed));

struct jr_reply {
    char magic[4];
    uint16_t op;
    uint16_t family;
    int32_t status;
    uint8_t local_ip[16];
    uint16_t local_port;
    uint8_t remote_ip[16];
    uint16_t remote_port;
} __attribute__((packed));

_Static_assert(sizeof(struct jr_request) == 136, "protocol.REQUEST's layout");
_Static_assert(sizeof(struct jr_reply) == 48, "protocol.REPLY's layout");

#endif
