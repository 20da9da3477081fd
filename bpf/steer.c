/* Joyride XDP steering program (restricted C, compiled at load time by BCC).
 *
 * For every received frame: parse Ethernet (at most one 802.1Q/802.1ad tag), IPv4 (with
 * options) and TCP or UDP, or, with JR_CFG_IPV6 set, IPv6 (a few extension headers
 * walked: steer_ipv6) and TCP, every read bounds-checked against data_end. When the
 * destination (local) port is a key of the per-protocol ports map, redirect the frame
 * into the AF_XDP socket registered for this rx queue in the XSKMAP; when no socket is
 * registered, bpf_redirect_map() returns the fallback action XDP_PASS and the kernel
 * gets the frame (fail-open: a dead service leaves no black hole). Every other frame,
 * including malformed ones, is passed to the kernel untouched: the kernel owns the
 * drop decision for those and counts them in its own MIBs.
 *
 * Every outcome is counted by reason in a per-CPU array; the user-space side
 * (joyride/steer) reads the counter names from the enum below, which is therefore the
 * single definition of the counter layout.
 *
 * Compile-time parameters (passed by joyride/steer as -D flags):
 *   JR_MAX_QUEUES  size of the XSKMAP (rx queues that can host a socket)
 *   JR_MAX_ADDRS   size of the local_addrs and local_addrs6 maps (the interface's
 *                  addresses of each family)
 *
 * A steered port alone does not make a frame Joyride's: with JR_CFG_MATCH_ADDR set, its
 * destination must also be one of the interface's own addresses (local_addrs, kept in
 * step with the kernel by user space). Traffic routed through this host, or sent to an
 * address the stack does not serve, stays the kernel's even on a steered port.
 *
 * Nor is a TCP segment of a connection the kernel has: before steering, the kernel's
 * socket table is asked (bpf_skc_lookup_tcp) about the 4-tuple. A connection the kernel
 * holds (established, TIME-WAIT, or a request socket mid-handshake) keeps its frames,
 * so attaching to a port with live kernel connections breaks none of them. A SYN goes
 * to Joyride when a Joyride application listens on its port for the SYN's family
 * (JR_PORT_SERVING for IPv4, JR_PORT_SERVING6 for IPv6, set by the engine's owner);
 * otherwise to the kernel's listener if it has one: a kernel listener on [::] beside a
 * Joyride IPv4-only one keeps its IPv6 clients rather than their SYNs meeting a RST
 * from a service with no IPv6 listener. A non-SYN segment that finds only a listener is Joyride's (its own
 * connections on that port), unless it completes a SYN-cookie handshake of that
 * listener. A kernel TIME-WAIT entry yields its 4-tuple to a new Joyride connection on
 * a served or ephemeral port (a late retransmission of the old connection then meets
 * Joyride's RST, which is harmless). UDP is not looked up: a steered UDP port is
 * Joyride's alone.
 */
#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#ifndef JR_MAX_QUEUES
#define JR_MAX_QUEUES 64
#endif

#ifndef JR_MAX_ADDRS
#define JR_MAX_ADDRS 256
#endif

/* Counter indices. joyride/steer parses this enum by name: keep one name per line,
 * lower-cased on the Python side ("JR_C_STEERED_TCP" -> "steered_tcp"). */
enum jr_counter {
	JR_C_STEERED_TCP,       /* redirected into an AF_XDP socket */
	JR_C_STEERED_UDP,
	JR_C_REDIRECT_MISS,     /* port steered, but no socket on this rx queue: passed */
	JR_C_PASS_NOT_IPV4,     /* ARP, LLDP, IPv6 while JR_CFG_IPV6 is off, ...: the kernel's */
	JR_C_PASS_VLAN,         /* tagged with another VLAN than the steered one, or QinQ */
	JR_C_PASS_FRAGMENT,     /* IPv4 fragment: the kernel reassembles */
	JR_C_PASS_OTHER_L4,     /* ICMP, IGMP, ...: not TCP or UDP */
	JR_C_PASS_PORT_TCP,     /* TCP to a port Joyride does not own */
	JR_C_PASS_PORT_UDP,
	JR_C_PASS_ADDR,         /* steered port, other destination (routed, foreign): passed */
	JR_C_PASS_KERNEL_SOCKET, /* steered port, but a connection or listener the kernel has */
	JR_C_ERR_ETH_TRUNC,     /* shorter than an Ethernet header */
	JR_C_ERR_VLAN_TRUNC,    /* VLAN ethertype but no room for the tag */
	JR_C_ERR_IP_TRUNC,      /* shorter than a minimal IPv4 header */
	JR_C_ERR_IP_VERSION,    /* ethertype IPv4 but version field != 4 */
	JR_C_ERR_IP_IHL,        /* IHL < 5, or the options run past the frame */
	JR_C_ERR_IP_TOTLEN,     /* total length < header length, or beyond the frame */
	JR_C_ERR_TCP_TRUNC,     /* TCP header (or its options) outside the IP payload */
	JR_C_ERR_UDP_TRUNC,     /* UDP header outside the IP payload, or bad UDP length */
	JR_C_PASS_IPV6_EXT,     /* IPv6: a routing header with segments left, or a chain of
				 * extension headers longer than JR_IP6_EXT_MAX: the kernel's */
	JR_C_ERR_IP6_TRUNC,     /* IPv6: header or extension header past the frame or the
				 * payload length, or a jumbogram (payload length 0) */
	JR_C_NR                 /* number of counters; not a counter */
};

/* Configuration slots (an array map, written by user space). */
enum jr_config {
	JR_CFG_VLAN,            /* VLAN ID whose frames are steered; 0 = untagged frames */
	JR_CFG_MATCH_ADDR,      /* nonzero: steer only frames to an address in local_addrs */
	JR_CFG_IPV6,            /* nonzero: IPv6 TCP is steered too (issue 18); else passed */
	JR_CFG_NR
};

/* Ports map values: why the port is steered (user space shows it; any nonzero steers). */
#define JR_PORT_LISTEN    1
#define JR_PORT_EPHEMERAL 2
#define JR_PORT_SERVING   4 /* flag beside LISTEN: a Joyride application listens here */
#define JR_PORT_KERNEL_CONNS 8 /* flag: the kernel may have connections on the port */
#define JR_PORT_SERVING6  16 /* flag: a Joyride application listens here for IPv6 */

BPF_XSKMAP(xsks, JR_MAX_QUEUES);
BPF_ARRAY(tcp_ports, u8, 65536);
BPF_ARRAY(udp_ports, u8, 65536);
BPF_ARRAY(config, u32, JR_CFG_NR);
/* Keys: IPv4 addresses as they appear in the header (network order, read natively). */
BPF_HASH(local_addrs, u32, u8, JR_MAX_ADDRS);
/* The same for IPv6: the header's 16 bytes. */
struct jr_in6 {
	u32 w[4];
};
BPF_HASH(local_addrs6, struct jr_in6, u8, JR_MAX_ADDRS);
BPF_PERCPU_ARRAY(counters, u64, JR_C_NR);

/* IEEE 802.1Q tag after the MAC addresses: TCI, then the encapsulated ethertype. */
struct jr_vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

#define JR_VLAN_VID_MASK 0x0fff
#define JR_IP_MF         0x2000 /* RFC 791 section 3.1: More Fragments flag */
#define JR_IP_OFFSET     0x1fff /* RFC 791 section 3.1: Fragment Offset, 8-byte units */
#define JR_IP6_EXT_MAX   4      /* extension headers walked before TCP; more: the kernel's */

static __always_inline int count(u32 reason, int action)
{
	u64 *slot = counters.lookup(&reason);

	if (slot)
		*slot += 1; /* per-CPU slot: no atomic needed */
	return action;
}

static __always_inline int is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

static __always_inline int steer(struct xdp_md *ctx, u32 steered_reason)
{
	/* The key is the queue the frame arrived on: each queue has its own socket
	 * (AF_XDP binds a socket to one queue). Fallback XDP_PASS when the slot is empty,
	 * which is exactly the state after the service dies (its sockets' entries are
	 * removed by the kernel when the sockets close). */
	int action = xsks.redirect_map(ctx->rx_queue_index, XDP_PASS);

	if (action == XDP_REDIRECT)
		return count(steered_reason, action);
	return count(JR_C_REDIRECT_MISS, action);
}

/* Does the kernel own this segment's connection (see the header comment)? tuple and
 * tuple_len: the 4-tuple for the socket lookup (IPv4 or IPv6); iph and iph_len: the IP
 * header, for the SYN-cookie check. */
static __always_inline int kernel_owns(struct xdp_md *ctx, struct bpf_sock_tuple *tuple,
				       u32 tuple_len, void *iph, u32 iph_len,
				       struct tcphdr *th, u8 port_flags)
{
	struct bpf_sock *sk;
	int owns;

	/* The device's own namespace (BPF_F_CURRENT_NETNS); the reference is released
	 * on the one path below. */
	sk = bpf_skc_lookup_tcp(ctx, tuple, tuple_len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	if (sk->state == BPF_TCP_LISTEN) {
		if (th->syn && !th->ack)
			owns = !(port_flags & JR_PORT_SERVING);
		else
			/* The last ACK of a SYN-cookie handshake has no request socket to
			 * find: its cookie names the listener's (0: a valid cookie). */
			owns = !(port_flags & JR_PORT_SERVING) && th->ack && !th->syn &&
			       !th->rst &&
			       bpf_tcp_check_syncookie(sk, iph, iph_len, th, sizeof(*th)) == 0;
	} else if (sk->state == BPF_TCP_TIME_WAIT) {
		/* A 4-tuple the kernel's closed connection still holds: a new connection
		 * on it is Joyride's where Joyride serves or connects from the port. */
		owns = !(port_flags & (JR_PORT_SERVING | JR_PORT_EPHEMERAL));
	} else {
		owns = 1; /* its connection: established or mid-handshake */
	}
	bpf_sk_release(sk);
	return owns;
}

/* The kernel-socket lookup is made only where kernel connections can appear: where
 * Joyride neither serves nor connects from the port, or while user space has seen some
 * left (about 2 us of CPU per request, measured). */
static __always_inline int may_be_kernels(u8 port_flags)
{
	return !(port_flags & (JR_PORT_SERVING | JR_PORT_EPHEMERAL)) ||
	       (port_flags & JR_PORT_KERNEL_CONNS);
}

/* A TCP header at th inside [th, end) (end: the IP payload's): 0 when it and the
 * options it announces fit (RFC 9293 section 3.1: Data Offset in 32-bit words, at
 * least 5). */
static __always_inline int tcp_fits(struct tcphdr *th, void *end, void *data_end)
{
	if ((void *)(th + 1) > data_end || (void *)(th + 1) > end)
		return -1;
	u32 doff = th->doff * 4;

	if (doff < sizeof(*th) || (void *)th + doff > end)
		return -1;
	return 0;
}

/* Is the frame addressed to this host (when address matching is on)? */
static __always_inline int local_dst(struct iphdr *ip)
{
	u32 key = JR_CFG_MATCH_ADDR;
	u32 *match = config.lookup(&key);

	if (!match || !*match)
		return 1;
	u32 daddr = ip->daddr;

	return local_addrs.lookup(&daddr) != NULL;
}

/* Is the IPv6 frame addressed to this host (when address matching is on)? */
static __always_inline int local_dst6(struct ipv6hdr *ip6)
{
	u32 key = JR_CFG_MATCH_ADDR;
	u32 *match = config.lookup(&key);

	if (!match || !*match)
		return 1;
	struct jr_in6 daddr = {};

	__builtin_memcpy(&daddr, &ip6->daddr, sizeof(daddr));
	return local_addrs6.lookup(&daddr) != NULL;
}

/* A TCP segment whose headers fit, of either family (ip4 or ip6 its IP header, the
 * other NULL): Joyride's when its port is steered, its destination is this host's and
 * no kernel socket holds its connection (see the header comment). */
static __always_inline int steer_tcp(struct xdp_md *ctx, struct tcphdr *th,
				     struct iphdr *ip4, struct ipv6hdr *ip6)
{
	u32 key = bpf_ntohs(th->dest);
	u8 *owned = tcp_ports.lookup(&key);

	if (!owned || !*owned)
		return count(JR_C_PASS_PORT_TCP, XDP_PASS);
	if (ip6 ? !local_dst6(ip6) : !local_dst(ip4))
		return count(JR_C_PASS_ADDR, XDP_PASS);
	/* SERVING below means "for this frame's family": IPv6's flag stands in for it. */
	u8 flags = *owned;

	if (ip6)
		flags = (flags & ~JR_PORT_SERVING) |
			((flags & JR_PORT_SERVING6) ? JR_PORT_SERVING : 0);
	if (may_be_kernels(flags)) {
		struct bpf_sock_tuple tuple = {};
		int owns;

		if (ip6) {
			__builtin_memcpy(tuple.ipv6.saddr, &ip6->saddr, 16);
			__builtin_memcpy(tuple.ipv6.daddr, &ip6->daddr, 16);
			tuple.ipv6.sport = th->source;
			tuple.ipv6.dport = th->dest;
			owns = kernel_owns(ctx, &tuple, sizeof(tuple.ipv6), ip6, sizeof(*ip6), th,
					   flags);
		} else {
			tuple.ipv4.saddr = ip4->saddr;
			tuple.ipv4.daddr = ip4->daddr;
			tuple.ipv4.sport = th->source;
			tuple.ipv4.dport = th->dest;
			owns = kernel_owns(ctx, &tuple, sizeof(tuple.ipv4), ip4, sizeof(*ip4), th,
					   flags);
		}
		if (owns)
			return count(JR_C_PASS_KERNEL_SOCKET, XDP_PASS);
	}
	return steer(ctx, JR_C_STEERED_TCP);
}

/* IPv6 (RFC 8200), with JR_CFG_IPV6 on: the fixed header, then at most JR_IP6_EXT_MAX
 * extension headers walked to TCP (section 4: hop-by-hop, destination options, and a
 * routing header with no segments left, which the RFC says to ignore). A fragment, a
 * routing header still to be followed, a longer chain or any other upper layer
 * (ICMPv6, neighbour discovery included, and UDP) is the kernel's. */
static __always_inline int steer_ipv6(struct xdp_md *ctx, void *cursor, void *data_end)
{
	struct ipv6hdr *ip6 = cursor;

	if ((void *)(ip6 + 1) > data_end)
		return count(JR_C_ERR_IP6_TRUNC, XDP_PASS);
	if (ip6->version != 6)
		return count(JR_C_ERR_IP_VERSION, XDP_PASS);
	u32 plen = bpf_ntohs(ip6->payload_len);
	void *end = (void *)(ip6 + 1) + plen;

	/* A payload length of 0 is a jumbogram (RFC 2675): no link here carries one. */
	if (plen == 0 || end > data_end)
		return count(JR_C_ERR_IP6_TRUNC, XDP_PASS);
	u8 next = ip6->nexthdr;
	void *l4 = ip6 + 1;

#pragma unroll
	for (int i = 0; i < JR_IP6_EXT_MAX; i++) {
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_DSTOPTS &&
		    next != IPPROTO_ROUTING)
			break;
		struct ipv6_opt_hdr *ext = l4;

		if ((void *)(ext + 1) > data_end || (void *)(ext + 1) > end)
			return count(JR_C_ERR_IP6_TRUNC, XDP_PASS);
		if (next == IPPROTO_ROUTING) {
			/* Type and Segments Left follow Next Header and Hdr Ext Len. */
			u8 *segments_left = (u8 *)l4 + 3;

			if ((void *)(segments_left + 1) > data_end)
				return count(JR_C_ERR_IP6_TRUNC, XDP_PASS);
			if (*segments_left)
				return count(JR_C_PASS_IPV6_EXT, XDP_PASS);
		}
		next = ext->nexthdr;
		l4 += (ext->hdrlen + 1) * 8; /* Hdr Ext Len: 8-octet units past the first 8 */
		if (l4 > end)
			return count(JR_C_ERR_IP6_TRUNC, XDP_PASS);
	}
	if (next == IPPROTO_FRAGMENT)
		return count(JR_C_PASS_FRAGMENT, XDP_PASS);
	if (next == IPPROTO_HOPOPTS || next == IPPROTO_DSTOPTS || next == IPPROTO_ROUTING)
		return count(JR_C_PASS_IPV6_EXT, XDP_PASS);
	if (next != IPPROTO_TCP)
		return count(JR_C_PASS_OTHER_L4, XDP_PASS);

	struct tcphdr *th = l4;

	if (tcp_fits(th, end, data_end))
		return count(JR_C_ERR_TCP_TRUNC, XDP_PASS);
	return steer_tcp(ctx, th, NULL, ip6);
}

int joyride_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *cursor;
	__be16 proto;
	u32 vid = 0;
	u32 key;

	if ((void *)(eth + 1) > data_end)
		return count(JR_C_ERR_ETH_TRUNC, XDP_PASS);
	cursor = eth + 1;
	proto = eth->h_proto;

	if (is_vlan(proto)) {
		struct jr_vlan_hdr *vh = cursor;

		if ((void *)(vh + 1) > data_end)
			return count(JR_C_ERR_VLAN_TRUNC, XDP_PASS);
		/* IEEE 802.1Q-2018 section 9.6: VID 0 means "priority tag only", which the
		 * kernel, like any bridge, treats as untagged. */
		vid = bpf_ntohs(vh->tci) & JR_VLAN_VID_MASK;
		proto = vh->encap_proto;
		cursor = vh + 1;
		/* One tag only: a stacked (QinQ) frame is never ours. */
		if (is_vlan(proto))
			return count(JR_C_PASS_VLAN, XDP_PASS);
	}

	if (proto == bpf_htons(ETH_P_IPV6)) {
		key = JR_CFG_IPV6;
		u32 *v6 = config.lookup(&key);

		if (!v6 || !*v6)
			return count(JR_C_PASS_NOT_IPV4, XDP_PASS);
	} else if (proto != bpf_htons(ETH_P_IP)) {
		return count(JR_C_PASS_NOT_IPV4, XDP_PASS);
	}

	key = JR_CFG_VLAN;
	u32 *want_vid = config.lookup(&key);
	if (vid != (want_vid ? *want_vid : 0))
		return count(JR_C_PASS_VLAN, XDP_PASS);
	if (proto == bpf_htons(ETH_P_IPV6))
		return steer_ipv6(ctx, cursor, data_end);

	struct iphdr *ip = cursor;

	if ((void *)(ip + 1) > data_end)
		return count(JR_C_ERR_IP_TRUNC, XDP_PASS);
	/* RFC 791 section 3.1: version 4, IHL in 32-bit words, at least 5. */
	if (ip->version != 4)
		return count(JR_C_ERR_IP_VERSION, XDP_PASS);
	u32 ihl = ip->ihl * 4;

	if (ihl < sizeof(*ip) || cursor + ihl > data_end)
		return count(JR_C_ERR_IP_IHL, XDP_PASS);
	/* Total Length covers header and payload; the frame may be longer (Ethernet pads to
	 * 60 bytes) but never shorter. */
	u32 tot_len = bpf_ntohs(ip->tot_len);

	if (tot_len < ihl || cursor + tot_len > data_end)
		return count(JR_C_ERR_IP_TOTLEN, XDP_PASS);
	/* RFC 791 section 3.2 / RFC 815: any fragment, the first included, needs the
	 * kernel's reassembly before anyone can read the transport header reliably. */
	if (ip->frag_off & bpf_htons(JR_IP_MF | JR_IP_OFFSET))
		return count(JR_C_PASS_FRAGMENT, XDP_PASS);

	void *l4 = cursor + ihl;
	u32 l4_len = tot_len - ihl;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if (tcp_fits(th, cursor + tot_len, data_end))
			return count(JR_C_ERR_TCP_TRUNC, XDP_PASS);
		return steer_tcp(ctx, th, ip, NULL);
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end || l4_len < sizeof(*uh))
			return count(JR_C_ERR_UDP_TRUNC, XDP_PASS);
		/* RFC 768: Length covers header and data, so 8 <= len <= IP payload. */
		u32 ulen = bpf_ntohs(uh->len);

		if (ulen < sizeof(*uh) || ulen > l4_len)
			return count(JR_C_ERR_UDP_TRUNC, XDP_PASS);
		key = bpf_ntohs(uh->dest);
		u8 *owned = udp_ports.lookup(&key);

		if (!owned || !*owned)
			return count(JR_C_PASS_PORT_UDP, XDP_PASS);
		if (!local_dst(ip))
			return count(JR_C_PASS_ADDR, XDP_PASS);
		return steer(ctx, JR_C_STEERED_UDP);
	}
	return count(JR_C_PASS_OTHER_L4, XDP_PASS);
}
