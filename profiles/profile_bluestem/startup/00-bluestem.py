"""bluestem IPython startup: one session built from the inventory in $BLUESTEM_CONFIG
(default: profiles/sim.yml next to this profile), its names put in the namespace:
``RE``, ``session``, ``catalog``, every device by name and the bluestem plans.

``bluestem shell`` builds the session before IPython starts (and refuses to start
without one); a plain ``ipython --profile-dir=...`` builds it here and, if it cannot,
starts degraded (``session = None``) with a banner saying so.
"""

if "session" not in globals():
    from bluestem.session.interactive import session_namespace as _session_namespace

    globals().update(_session_namespace(degraded=True))
