"""Claiming an interface for Joyride: one routine under both front ends.

The network service (``joyride.service``) and embedded mode (``joyride.embed``) take an
interface the same way (``interface.claim``): the state directory's lock, cleanup after
a dead predecessor, the steering program, the state file, the reserved ephemeral range,
the port maps and one AF_XDP socket per rx queue. Here live that routine and what it
stands on:

* ``statedir``: the state directory (``/run/joyride/net<inode>/<ifname>/``), its lock
  and ``state.json``;
* ``cleanup``: undoing what a dead owner left behind;
* ``queues``: how many rx queues an interface has active;
* ``interface``: the claim itself, undone backwards by the caller's ``ExitStack``.

Importing the package or ``statedir`` loads nothing beyond the standard library (an
application's client, ``joyride.service.appclient``, finds services through it).
"""
