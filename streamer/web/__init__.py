"""The web side: `server` (the live page, review, the JSON API, MJPEG, `/metrics`, `/healthz`), `review` (events
grouped into review items), `pages/` (the HTML). Sign-in and sessions are `streamer.auth`, which the Label
Studio backend shares.

May import anything below it (the pipeline's driver, the outputs, recording); only the command line imports it.
"""
