"""The web side's routers, one per area: `live`, `recordings` (review and recordings), `events` (and search),
`find`, `health` (metrics and health) and `login` (sign-in, the dependency every other router takes). An endpoint
is one decorated function in its area's router; an area is one router and one line in `server.ROUTERS`.

May import `streamer.web.site`, `streamer.web.files` and what lies below the web side; never `server`.
"""
