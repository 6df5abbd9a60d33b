"""A real RTSP server for tests: Debian's GStreamer RTSP server, run with Debian's /usr/bin/python3.

    /usr/bin/python3 tests/rtsp/server.py PORT MOUNT=PIPELINE [MOUNT=PIPELINE ...] [--user USER:PASS]

Prints READY once listening on 127.0.0.1:PORT; quits on SIGTERM. Pipelines are gst-launch syntax ending in an
RTP payloader named pay0. The project's own venv never imports gi.
"""

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    Gst.init(None)
    port, *specs = sys.argv[1:]
    user = None
    if "--user" in specs:
        i = specs.index("--user")
        user = specs[i + 1]
        del specs[i : i + 2]
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    mounts = server.get_mount_points()
    for spec in specs:
        mount, launch = spec.split("=", 1)
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(f"( {launch} )")
        factory.set_shared(True)
        if user:
            name, password = user.split(":", 1)
            auth = GstRtspServer.RTSPAuth()
            token = GstRtspServer.RTSPToken()
            token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, name)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(name, password), token)
            server.set_auth(auth)
            permissions = GstRtspServer.RTSPPermissions()
            permissions.add_role_from_structure(
                Gst.Structure.new_from_string(f"{name}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")
            )
            factory.set_permissions(permissions)
        mounts.add_factory(mount, factory)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print("FAILED to attach", flush=True)
        sys.exit(1)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    print("READY", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
