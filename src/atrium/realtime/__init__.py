"""Realtime events for ``WS /ws``: what other rooms publish (``ports``: the event, its audience, the
publisher port; ``publish``: one function per event kind), and what delivers them (``hub``: the
sockets of this process per organisation, presence, limits; ``outbox``: one socket's bounded queue and
writer). Events travel through the PubSub port, so a socket on one replica hears what another did."""
