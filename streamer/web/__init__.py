"""The web side, on FastAPI and uvicorn: `server` (the app and the thread that serves it), `api/` (the routers:
live, review and recordings, events and search, find, metrics and health, sign-in), `site` (what the routers
share: the run, the live view, the guard), `live` (the live view, an output), `files` (Range responses, clips
kept), `review` (events grouped into review items), `pages/` (the HTML). Sign-in's guard and sessions are
`streamer.auth`, which the Label Studio backend shares. The API is described at `/openapi.json` (`/docs`).

May import anything below it (the pipeline's driver, the outputs, recording); only the command line imports it.
"""
